"""The canary suite on a real cluster (``make live``): secrets delivered, never shown.

A bisection of a Job that holds every kind of secret (canary_helpers.py) runs on the
project's control plane with debug logs as JSON. While it runs, every probe Job the
cluster holds is read back as ``kubectl get job -o yaml`` would: none holds a canary;
the probes' Secrets do, and are gone with their Jobs. The workload checks by hash that
it got every real value (env, URL credentials, argv, and an annotation through the
downward API), so the culprit found proves the delivery. Step mode's manifests are
applied as written with kubectl, and the probe they start gets the real values too.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from canary_helpers import (
    ANNOTATION,
    MARK,
    assert_no_canary,
    assert_state_dir,
    write_k8s_pair,
)
from conftest import CLI, ROOT, culprit_keys

KUBECONFIG = os.environ.get("CLUSTERBISECT_KUBECONFIG")
CONTEXT = os.environ.get("CLUSTERBISECT_CONTEXT", "kind-clusterbisect")
NAMESPACE = os.environ.get("CLUSTERBISECT_NAMESPACE", "clusterbisect")
LOUD = ("--log-format", "json", "--log-level", "debug")
MANAGED = "app.kubernetes.io/managed-by=clusterbisect"

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not KUBECONFIG, reason="set CLUSTERBISECT_KUBECONFIG to run on a cluster"),
]


def connection() -> Any:
    from clusterbisect.runners.kubernetes import connect

    return connect(str(Path(KUBECONFIG or "").expanduser()), CONTEXT, NAMESPACE)


def cli(*args: str, kube: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    """The CLI (against the cluster with ``kube``); what it prints holds no canary."""
    connect = ["--kubeconfig", str(Path(KUBECONFIG or "").expanduser()), "--context", CONTEXT]
    argv = [*CLI, *LOUD, *args, *((*connect, "-n", NAMESPACE) if kube else ())]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert_no_canary(done.stdout, done.stderr)
    return done


class Observer(threading.Thread):
    """Reads back every probe Job and Secret in the namespace while a bisection runs."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.conn = connection()
        self.jobs: dict[str, str] = {}  # name -> the Job as the API serves it
        self.secrets: dict[str, str] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        serialize = self.conn.api_client.sanitize_for_serialization
        while not self.stop.wait(0.3):
            for job in self.conn.batch.list_namespaced_job(NAMESPACE, label_selector=MANAGED).items:
                self.jobs[job.metadata.name] = json.dumps(serialize(job))
            listed = self.conn.core.list_namespaced_secret(NAMESPACE, label_selector=MANAGED)
            for secret in listed.items:
                self.secrets[secret.metadata.name] = json.dumps(serialize(secret))


def left_over(session_id: str, timeout_s: float = 90.0) -> dict[str, list[str]]:
    from clusterbisect.runners.kubernetes import render

    conn = connection()
    selector = render.session_selector(session_id)
    deadline = time.monotonic() + timeout_s
    while True:
        left = {
            "jobs": conn.batch.list_namespaced_job(NAMESPACE, label_selector=selector).items,
            "pods": conn.core.list_namespaced_pod(NAMESPACE, label_selector=selector).items,
            "secrets": conn.core.list_namespaced_secret(NAMESPACE, label_selector=selector).items,
        }
        if not any(left.values()) or time.monotonic() > deadline:
            return {k: [o.metadata.name for o in v] for k, v in left.items()}
        time.sleep(2)


def test_a_bisection_on_the_cluster_delivers_every_secret_and_shows_none(tmp_path: Path) -> None:
    good, bad = write_k8s_pair(tmp_path, annotation=True)
    state = tmp_path / "state"
    observer = Observer()
    observer.start()
    try:
        done = cli(
            "run", str(good), str(bad), "--backend", "kubernetes", "--fail-on", "401",
            "--parallel", "2", "--timeout", "300", "--state-dir", str(state), "--json",
        )  # fmt: skip
    finally:
        observer.stop.set()
        observer.join(timeout=30)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert culprit_keys(result) == [["containers[trainer].env.HF_TOKEN"]]
    (change,) = result["culprits"][0]["changes"]
    assert change["secret"]["changed"] is True
    # Every probe got the real values (a probe that did not would be unresolved).
    logs = sorted((state / "logs").glob("p*.log"))
    assert logs and all("received every real value" in p.read_text() for p in logs)
    # The Jobs the cluster held had no secret in them, but the annotation's value (no
    # manifest can refer to one: a controller reads it there); their Secrets held them.
    assert observer.jobs, "no probe Job was seen while the bisection ran"
    for shown in observer.jobs.values():
        job = json.loads(shown)
        annotations = job["spec"]["template"]["metadata"].pop("annotations")
        assert annotations == {"vault.example.com/password": ANNOTATION}
        assert_no_canary(json.dumps(job))
    assert observer.secrets and set(observer.secrets) <= set(observer.jobs)
    for name, shown in observer.secrets.items():
        secret = json.loads(shown)
        values = [base64.b64decode(v).decode() for v in secret["data"].values()]
        assert values and all(MARK in v for v in values)
        # Owned by its Job: the garbage collector deletes it with the Job.
        (owner,) = secret["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"]) == ("Job", name)
    # Nothing is left: Jobs, pods and Secrets go with their probes.
    assert left_over(result["session_id"]) == {"jobs": [], "pods": [], "secrets": []}
    assert_state_dir(state)


def kubeconfig_for_kubectl(tmp_path: Path) -> Path:
    """The cluster's kubeconfig with the tests' context current (kubectl's default)."""
    config = yaml.safe_load(Path(KUBECONFIG or "").expanduser().read_text())
    config["current-context"] = CONTEXT
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


def test_step_mode_manifests_are_applied_as_written(tmp_path: Path) -> None:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not on PATH"
    good, bad = write_k8s_pair(tmp_path, annotation=False)
    started = cli(
        "start", str(good), str(bad), "--backend", "kubernetes", "--fail-on", "401",
        "--state-dir", str(tmp_path / "step"), "--json",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr[-3000:]
    probe = json.loads(started.stdout)["next"]["probe"]
    assert probe["purpose"] == "baseline-good"
    use = probe["use"]
    assert probe["rendered_file"] in use and probe["private_file"] in use
    env = {**os.environ, "KUBECONFIG": str(kubeconfig_for_kubectl(tmp_path))}
    applied = subprocess.run(["sh", "-c", use], env=env, capture_output=True, text=True)
    assert applied.returncode == 0, applied.stderr
    assert_no_canary(applied.stdout, applied.stderr)
    conn = connection()
    name = yaml.safe_load(Path(probe["rendered_file"]).read_text())["metadata"]["name"]
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            job = conn.batch.read_namespaced_job(name, NAMESPACE)
            if job.status.succeeded or job.status.failed:
                break
            time.sleep(1)
        pods = conn.core.list_namespaced_pod(
            NAMESPACE, label_selector=f"batch.kubernetes.io/job-name={name}"
        ).items
        log = conn.core.read_namespaced_pod_log(pods[0].metadata.name, NAMESPACE)
        assert job.status.succeeded == 1, log
        assert "received every real value" in log
        shown = json.dumps(conn.api_client.sanitize_for_serialization(job))
        assert_no_canary(shown)
    finally:
        conn.batch.delete_namespaced_job(name, NAMESPACE, propagation_policy="Background")
        conn.core.delete_namespaced_secret(name, NAMESPACE)
    (tmp_path / "p001.out").write_text(log)
    marked = cli(
        "mark", "--state-dir", str(tmp_path / "step"), "--exit-code", "0",
        "--log", str(tmp_path / "p001.out"), "--json", kube=False,
    )  # fmt: skip
    assert json.loads(marked.stdout)["recorded"]["outcome"] == "pass"
    assert_state_dir(tmp_path / "step")
