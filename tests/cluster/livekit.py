"""Helpers of the live tests: the cluster's clients, namespaces, waiting, the CLI."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
KUBECONFIG = os.environ.get("CLUSTERBISECT_KUBECONFIG")
CONTEXT = os.environ.get("CLUSTERBISECT_CONTEXT", "clusterbisect-local")
NAMESPACE = os.environ.get("CLUSTERBISECT_NAMESPACE", "clusterbisect")
EXAMPLE = ROOT / "examples" / "training-upgrade"
CULPRIT = "containers[trainer].env.TORCH_FORCE_WEIGHTS_ONLY_LOAD"
# The clusterbisect entry point of the interpreter running the tests.
CLUSTERBISECT = str(Path(sys.executable).parent / "clusterbisect")

live = [
    pytest.mark.live,
    pytest.mark.skipif(not KUBECONFIG, reason="set CLUSTERBISECT_KUBECONFIG (make cluster)"),
]

T = TypeVar("T")


class Kube:
    """The admin's API clients (Any: bodies are plain dicts)."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = CONTEXT) -> None:
        import kubernetes

        self.client = kubernetes.config.new_client_from_config(
            config_file=kubeconfig or KUBECONFIG, context=context
        )
        self.core: Any = kubernetes.client.CoreV1Api(self.client)
        self.batch: Any = kubernetes.client.BatchV1Api(self.client)
        self.apps: Any = kubernetes.client.AppsV1Api(self.client)
        self.custom: Any = kubernetes.client.CustomObjectsApi(self.client)
        self.auth: Any = kubernetes.client.AuthenticationV1Api(self.client)

    def raw(self, call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """The JSON the API server sent, as a dict (camelCase)."""
        return dict(json.loads(call(*args, _preload_content=False, **kwargs).data))

    def pod(self, namespace: str, name: str) -> dict[str, Any]:
        return self.raw(self.core.read_namespaced_pod, name, namespace)


def wait_for(check: Callable[[], T | None], timeout_s: float, what: str, every_s: float = 0.5) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            last = check()
            if last:
                return last
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})")


@contextlib.contextmanager
def namespace(kube: Kube, prefix: str) -> Iterator[str]:
    """A fresh namespace (deleted afterwards) with the default ServiceAccount in it."""
    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    kube.core.create_namespace(
        {"metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "clusterbisect-live"}}}
    )
    try:
        wait_for(
            lambda: kube.core.read_namespaced_service_account("default", name),
            60,
            f"the default ServiceAccount of {name}",
        )
        yield name
    finally:
        with contextlib.suppress(Exception):
            kube.core.delete_namespace(name)


def container_status(pod: dict[str, Any], name: str) -> dict[str, Any]:
    status = pod.get("status") or {}
    for item in (status.get("containerStatuses") or []) + (
        status.get("initContainerStatuses") or []
    ):
        if item["name"] == name:
            return dict(item)
    return {}


def state_of(pod: dict[str, Any], container: str) -> tuple[str, dict[str, Any]]:
    """("waiting"|"running"|"terminated"|"", details) of a container."""
    state = container_status(pod, container).get("state") or {}
    for kind in ("terminated", "running", "waiting"):
        if state.get(kind):
            return kind, state[kind]
    return "", {}


def run_pod(kube: Kube, ns: str, spec: dict[str, Any], name: str | None = None) -> dict[str, Any]:
    """Create a Pod with ``spec``; returns the created object (as a dict)."""
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name or f"p-{uuid.uuid4().hex[:6]}"},
        "spec": {"restartPolicy": "Never", "nodeSelector": {"pool": "cpu"}, **spec},
    }
    return kube.raw(kube.core.create_namespaced_pod, ns, body, field_validation="Strict")


def wait_terminated(
    kube: Kube, ns: str, pod: str, container: str, timeout_s: float = 120
) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        kind, details = state_of(kube.pod(ns, pod), container)
        return details if kind == "terminated" else None

    return wait_for(done, timeout_s, f"{ns}/{pod} {container} to terminate")


def cli(*args: str, kube: bool = True, kubeconfig: str | None = None) -> list[str]:
    """``clusterbisect ARGS`` with the cluster's connection flags."""
    argv = [CLUSTERBISECT, *args]
    if kube:
        argv += ["--kubeconfig", kubeconfig or str(KUBECONFIG), "--context", CONTEXT]
    return argv


def run_json(
    argv: list[str], timeout: float = 600, stdin: str | None = None
) -> tuple[int, dict[str, Any], str]:
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT, input=stdin
    )
    try:
        return done.returncode, json.loads(done.stdout), done.stderr
    except json.JSONDecodeError:
        raise AssertionError(
            f"{argv[1:3]}: no JSON on stdout (exit {done.returncode}): {done.stderr[-3000:]}"
        ) from None


def kind_sized_example(tmp_path: Path) -> tuple[Path, Path]:
    """The training-upgrade Jobs scaled down as for kind (manifests/kind_example.py)."""
    sys.path.insert(0, str(ROOT / "manifests"))
    try:
        from kind_example import kind_sized
    finally:
        sys.path.pop(0)
    paths = []
    for name in ("good", "bad"):
        job = kind_sized(yaml.safe_load((EXAMPLE / f"{name}.yaml").read_text()))
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(job, sort_keys=False))
        paths.append(path)
    return paths[0], paths[1]


def session_leftovers(kube: Kube, ns: str, session_id: str) -> dict[str, list[str]]:
    selector = f"clusterbisect.io/session={session_id}"
    jobs = kube.batch.list_namespaced_job(ns, label_selector=selector).items
    pods = kube.core.list_namespaced_pod(ns, label_selector=selector).items
    return {
        "jobs": [j.metadata.name for j in jobs if not j.metadata.deletion_timestamp],
        "pods": [p.metadata.name for p in pods if not p.metadata.deletion_timestamp],
    }
