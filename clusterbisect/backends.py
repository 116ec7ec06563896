"""The backend registry: each backend's name, options, runner factory and capabilities.

This is the one list of backends. The CLI's ``--backend`` choices, the tools' schemas,
the session's stored options and the runner that is built all come from it. A
backend's code is imported only when its runner is made (``make_runner``) or its
leftovers are cleaned (``cleanup``), so importing this module imports neither Ray nor
the Kubernetes client.

To add a backend: write its options class (``config.py``) and its runner (a package
under ``runners/`` whose factory takes a ``RunnerContext`` and those options), then
add one :class:`Backend` entry below. See docs/architecture.md.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clusterbisect.config import (
    BackendOptions,
    KubeConnection,
    KubernetesOptions,
    LocalOptions,
    RayConnection,
    RayOptions,
)
from clusterbisect.errors import InputError

if TYPE_CHECKING:  # the runner contract; not imported at run time (start-up stays light)
    from clusterbisect.runners.base import Runner, RunnerContext


@dataclass(frozen=True)
class Capabilities:
    """What the rest of the tool may rely on, instead of testing a backend's name."""

    # Probes run the workload given after `--`; without it there is nothing to run.
    needs_command: bool = False
    # A probe is a process on this machine: its rendering is an ``env`` and an ``argv``
    # that a person or an agent can run as is (step mode shows it as a shell line).
    local_process: bool = False
    # Probe objects can outlive a run on the backend (a cluster): ``cleanup`` applies.
    leaves_objects: bool = False


@dataclass(frozen=True)
class Backend:
    """One backend: its options class and where its code lives (``module:attribute``)."""

    name: str
    summary: str
    options: type[BackendOptions]
    factory: str  # (RunnerContext, options) -> Runner
    capabilities: Capabilities
    # (session_id, options=..., private_dir=..., dry_run=...) -> report: what probes left
    # behind, on the cluster and (private_dir, a session's) on this machine; ``resume``
    # calls it too. With dry_run it lists what it would delete (and the sessions it
    # belongs to) under "found" and "sessions", without deleting.
    cleanup: str | None = None
    cleanup_options: type[BackendOptions] | None = None  # what cleanup needs (a connection)

    def load(self, target: str) -> Callable[..., Any]:
        module, _, attribute = target.partition(":")
        loaded: Callable[..., Any] = getattr(importlib.import_module(module), attribute)
        return loaded


BACKENDS: dict[str, Backend] = {
    backend.name: backend
    for backend in (
        Backend(
            "local",
            "a subprocess on this machine (only environment variables are testable)",
            LocalOptions,
            "clusterbisect.runners.local:make_runner",
            Capabilities(needs_command=True, local_process=True),
        ),
        Backend(
            "ray",
            "Ray jobs, on an existing cluster or a local Ray started for the session",
            RayOptions,
            "clusterbisect.runners.ray:make_runner",
            Capabilities(leaves_objects=True),
            cleanup="clusterbisect.runners.ray:cleanup",
            cleanup_options=RayConnection,
        ),
        Backend(
            "kubernetes",
            "Kubernetes Jobs in one namespace",
            KubernetesOptions,
            "clusterbisect.runners.kubernetes:make_runner",
            Capabilities(leaves_objects=True),
            cleanup="clusterbisect.runners.kubernetes:cleanup",
            cleanup_options=KubeConnection,
        ),
    )
}


# `cleanup` without --backend (and no session to take it from): the backend that had
# leftovers first, so `cleanup --session ID` keeps its meaning.
CLEANUP_DEFAULT = "kubernetes"


def get(name: str) -> Backend:
    """The backend called ``name``; an unknown name is bad input."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise InputError(
            f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}", field="backend"
        ) from None


def option_classes() -> tuple[type[BackendOptions], ...]:
    """Every backend's options class, in registry order (their fields never clash)."""
    return tuple(backend.options for backend in BACKENDS.values())


def with_cleanup() -> list[Backend]:
    """The backends whose probes can outlive a run, so ``cleanup`` applies to them."""
    return [b for b in BACKENDS.values() if b.cleanup and b.cleanup_options]


def cleanup(
    name: str,
    session_id: str | None,
    options: BackendOptions,
    private_dir: Path | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Delete what backend ``name`` left behind (one session's objects, or all);
    ``private_dir`` is the session's own directory of that backend, when known. With
    ``dry_run``, only list it."""
    backend = get(name)
    if backend.cleanup is None:
        raise InputError(f"the {name} backend leaves nothing to clean up", field="backend")
    hook = backend.load(backend.cleanup)
    report: dict[str, Any] = hook(
        session_id, options=options, private_dir=private_dir, dry_run=dry_run
    )
    return report


def make_runner(name: str, context: RunnerContext, options: BackendOptions | None = None) -> Runner:
    """The runner of backend ``name`` for ``context``, with its ``options``."""
    backend = get(name)
    factory = backend.load(backend.factory)
    runner: Runner = factory(context, options if options is not None else backend.options())
    return runner


# `clusterbisect exec` runs a step-mode probe as a process on this machine, whatever the
# session's backend: the local backend's runner does exactly that.
EXEC_BACKEND = "local"


def exec_runner(context: RunnerContext, options: BackendOptions | None = None) -> Runner:
    """The runner ``exec`` uses: a process on this machine with the probe's environment
    (the session's own options when its backend is that one)."""
    backend = get(EXEC_BACKEND)
    own = options if isinstance(options, backend.options) else None
    return make_runner(EXEC_BACKEND, context, own)
