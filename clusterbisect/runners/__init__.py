"""Backends that run probes. Ray and Kubernetes modules are imported only when chosen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from clusterbisect.errors import InputError
from clusterbisect.runners.base import Runner

BACKENDS = ("local", "ray", "kubernetes")


def make_runner(
    backend: str,
    *,
    state_dir: Path,
    parallel: int = 1,
    container: str | None = None,
    clean_env: bool = False,
    timeout_s: float | None = None,
    options: dict[str, Any] | None = None,
) -> Runner:
    """Build the runner for ``backend``; ``options`` are the backend's own settings."""
    options = dict(options or {})
    if backend == "local":
        from clusterbisect.runners.local import LocalOptions, LocalRunner

        return LocalRunner(LocalOptions(container=container, clean_env=clean_env))
    if backend == "ray":
        from clusterbisect.runners.ray import RayOptions
        from clusterbisect.runners.ray import make_runner as make_ray_runner

        return make_ray_runner(
            RayOptions(
                parallel=parallel,
                timeout=timeout_s,
                state_dir=state_dir,
                container=container,
                **options,
            )
        )
    if backend == "kubernetes":
        from clusterbisect.runners.kubernetes import KubernetesOptions
        from clusterbisect.runners.kubernetes import make_runner as make_k8s_runner

        return make_k8s_runner(
            KubernetesOptions(state_dir=state_dir, container=container, **options)
        )
    raise InputError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
