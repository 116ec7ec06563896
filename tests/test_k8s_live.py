"""The training-upgrade incident on a real cluster, end to end.

Skipped unless CLUSTERBISECT_KUBECONFIG names a kubeconfig. `make test` (`make live`)
runs it on the project's own control plane (`make cluster`, docs/cluster.md), where it
must not be skipped. On kind, prepare the cluster as manifests/README.md describes (kind
cluster, namespace, RBAC, the example's objects, the two images loaded with
`kind load docker-image`), then:

    CLUSTERBISECT_KUBECONFIG=~/.kube/config .venv/bin/pytest -m live tests/test_k8s_live.py

Optional: CLUSTERBISECT_CONTEXT (default: kind-clusterbisect) and
CLUSTERBISECT_NAMESPACE (default: clusterbisect).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CLI, ROOT

EXAMPLE = ROOT / "examples" / "training-upgrade"
KUBECONFIG = os.environ.get("CLUSTERBISECT_KUBECONFIG")
CONTEXT = os.environ.get("CLUSTERBISECT_CONTEXT", "kind-clusterbisect")
NAMESPACE = os.environ.get("CLUSTERBISECT_NAMESPACE", "clusterbisect")
CULPRIT = "containers[trainer].env.TORCH_FORCE_WEIGHTS_ONLY_LOAD"

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(
        not KUBECONFIG, reason="set CLUSTERBISECT_KUBECONFIG to run against a cluster"
    ),
]


def kind_copies(tmp_path: Path) -> tuple[Path, Path]:
    """The example's Jobs, sized for kind (manifests/kind_example.py)."""
    sys.path.insert(0, str(ROOT / "manifests"))
    try:
        from kind_example import kind_sized
    finally:
        sys.path.pop(0)
    paths = []
    for name in ("good", "bad"):
        job = kind_sized(yaml.safe_load((EXAMPLE / f"{name}.yaml").read_text()))
        path = tmp_path / f"{name}-kind.yaml"
        path.write_text(yaml.safe_dump(job, sort_keys=False))
        paths.append(path)
    return paths[0], paths[1]


def cli(*args: str) -> list[str]:
    return [
        *CLI,
        *args,
        "--kubeconfig",
        str(Path(KUBECONFIG or "").expanduser()),
        "--context",
        CONTEXT,
        "-n",
        NAMESPACE,
    ]


def session_objects(session_id: str) -> dict[str, list[str]]:
    from clusterbisect.runners.kubernetes import connect, render

    conn = connect(str(Path(KUBECONFIG or "").expanduser()), CONTEXT, NAMESPACE)
    selector = render.session_selector(session_id)
    jobs = conn.batch.list_namespaced_job(NAMESPACE, label_selector=selector).items
    pods = conn.core.list_namespaced_pod(NAMESPACE, label_selector=selector).items
    return {
        "jobs": [j.metadata.name for j in jobs if not j.metadata.deletion_timestamp],
        "pods": [p.metadata.name for p in pods if not p.metadata.deletion_timestamp],
    }


def wait_until_gone(session_id: str, timeout_s: float = 90.0) -> dict[str, list[str]]:
    deadline = time.monotonic() + timeout_s
    left = session_objects(session_id)
    while (left["jobs"] or left["pods"]) and time.monotonic() < deadline:
        time.sleep(2)
        left = session_objects(session_id)
    return left


def run_json(command: list[str], timeout: float) -> tuple[int, dict[str, Any]]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    try:
        return done.returncode, json.loads(done.stdout)
    except json.JSONDecodeError:
        raise AssertionError(
            f"no JSON on stdout (exit {done.returncode}): {done.stderr[-2000:]}"
        ) from None


def test_server_dry_run_is_accepted(tmp_path: Path) -> None:
    good, bad = kind_copies(tmp_path)
    code, plan = run_json(
        cli(
            "run",
            str(good),
            str(bad),
            "--backend",
            "kubernetes",
            "--dry-run",
            "server",
            "--state-dir",
            str(tmp_path / "state"),
            "--json",
        ),
        timeout=120,
    )
    assert code == 0, plan
    assert plan["status"] == "dry_run" and len(plan["plan"]) >= 3
    assert session_objects(plan["session_id"]) == {"jobs": [], "pods": []}  # nothing persisted


def test_the_example_incident_is_bisected_on_the_cluster(tmp_path: Path) -> None:
    good, bad = kind_copies(tmp_path)
    code, result = run_json(
        cli(
            "run",
            str(good),
            str(bad),
            "--backend",
            "kubernetes",
            "--fail-on",
            "Weights only load failed",
            "--parallel",
            "2",
            "--timeout",
            "300",
            "--state-dir",
            str(tmp_path / "state"),
            "--json",
        ),
        timeout=1800,
    )
    assert code == 0, result
    assert result["status"] == "found"
    keys = [[c["key"] for c in culprit["changes"]] for culprit in result["culprits"]]
    assert keys == [[CULPRIT]]
    session_id = json.loads((tmp_path / "state" / "session.json").read_text())["session_id"]
    assert wait_until_gone(session_id) == {"jobs": [], "pods": []}
    logs = list((tmp_path / "state" / "logs").glob("p*.log"))
    assert any("Weights only load failed" in p.read_text() for p in logs)


def test_ctrl_c_leaves_nothing_behind(tmp_path: Path) -> None:
    good, bad = kind_copies(tmp_path)
    state = tmp_path / "state"
    process = subprocess.Popen(
        cli(
            "run",
            str(good),
            str(bad),
            "--backend",
            "kubernetes",
            "--parallel",
            "2",
            "--fail-on",
            "Weights only load failed",
            # Probes that are still running when Ctrl-C comes (on a fast cluster the
            # example's probes can all finish before the signal lands).
            "--command",
            "python -c 'import time; time.sleep(600)'",
            "--state-dir",
            str(state),
            "--json",
        ),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        session_id = None
        while time.monotonic() < deadline:
            if session_id is None and (state / "session.json").is_file():
                session_id = json.loads((state / "session.json").read_text())["session_id"]
            if session_id and session_objects(session_id)["jobs"]:
                break
            time.sleep(0.5)
        assert session_id, "the run never created its session"
        process.send_signal(signal.SIGINT)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130
    assert wait_until_gone(session_id) == {"jobs": [], "pods": []}


@pytest.mark.skipif(
    CONTEXT != "clusterbisect-local",
    reason="the pods reach the test's index on loopback: the test node shares the host's "
    "network (make cluster)",
)
def test_a_pip_freeze_pair_is_bisected_with_an_install_step(tmp_path: Path) -> None:
    """Each probe pod installs its pins (an init container, from a local index served
    over HTTP) before the workload runs; the culprit pin is found."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    sys.path.insert(0, str(ROOT / "tests"))
    from wheels import build_index, freeze_pair

    wheels = build_index(tmp_path / "wheels")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(wheels))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        index = f"http://127.0.0.1:{server.server_address[1]}/"
        good, bad = freeze_pair(tmp_path, index)
        for path in (good, bad):
            path.write_text("--trusted-host 127.0.0.1\n" + path.read_text())
        workload = "import checkpoint_io; print(checkpoint_io.load())"
        command = cli(
            "run", str(good), str(bad), "--backend", "kubernetes",
            "--pip-image", "python:3.11-slim", "--fail-on", "Weights only load failed",
            "--parallel", "2", "--timeout", "300", "--state-dir", str(tmp_path / "state"),
            "--json",
        )  # fmt: skip
        code, result = run_json([*command, "--", "python", "-c", workload], timeout=1800)
    finally:
        server.shutdown()
        server.server_close()
    assert code == 0, result
    keys = [[c["key"] for c in culprit["changes"]] for culprit in result["culprits"]]
    assert keys == [["pip.checkpoint-io"]]
    assert all(p["infra_error"] is None for p in result["probes"])
    assert wait_until_gone(result["session_id"]) == {"jobs": [], "pods": []}
