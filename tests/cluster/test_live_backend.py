"""The Kubernetes backend on the real control plane (make cluster), item by item of
issue 14: long logs, an eviction, volumes, unknown fields, a lost create response,
every kind of stuck pod, admission labels, leftovers, claim templates and Pod inputs,
an API server restart, and the Job outcomes (deadline, OOM, both condition
sequences), then Ctrl-C, SIGTERM and SIGKILL followed by cleanup or resume.

Most tests drive the runner in process (``KubernetesRunner.run``) with short grace
periods and polls (its tuning, ``KubernetesSettings``), so the suite stays within a
couple of minutes; the interruptions go through the CLI as a user would. Tests wait
for states (a file a container writes, an object the API server shows), never for a
fixed time.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from livekit import (
    CONTEXT,
    KUBECONFIG,
    NAMESPACE,
    ROOT,
    Kube,
    cli,
    live,
    namespace,
    run_json,
    wait_for,
)

from clusterbisect.outcome import FailureSignature, Outcome, RunResult
from clusterbisect.runners.base import Probe, RunnerContext
from clusterbisect.runners.kubernetes import KubernetesRunner, KubernetesSettings, render
from clusterbisect.specs import load_spec

pytestmark = live

# Short graces and polls: each stuck cause is given up within seconds, not minutes.
FAST = {
    "poll_s": 1.0,
    "retry_base_s": 0.2,
    "retry_cap_s": 2.0,
    "pending_grace_s": 4.0,
    "image_pull_grace_s": 4.0,
    "mount_grace_s": 4.0,
    "deadline_slack_s": 60.0,
    "request_timeout_s": 20.0,
}
PYTHON = "python:3.12-slim"  # the test node runs it on the host's python3


@pytest.fixture(scope="module")
def kube() -> Kube:
    return Kube()


@pytest.fixture(scope="module")
def ns(kube: Kube) -> Iterator[str]:
    """A namespace of this module's own, without Pod Security enforcement (the shared
    one enforces ``baseline``, which refuses the hostPath volumes some tests need)."""
    with namespace(kube, "cb-backend") as name:
        yield name


def session_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def job_doc(script: str, name: str = "train", **pod: Any) -> dict[str, Any]:
    """A one-container Job (container ``main``) running ``python -c script`` on cpu-1."""
    containers = pod.pop("containers", None) or [
        {"name": "main", "image": PYTHON, "command": ["python", "-c", script]}
    ]
    extra = pod.pop("container", {})
    containers[0].update(extra)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"pool": "cpu"},
                    "terminationGracePeriodSeconds": 2,
                    "containers": containers,
                    **pod,
                }
            },
        },
    }


def mounted(name: str, source: dict[str, Any], path: str) -> dict[str, Any]:
    """``job_doc`` arguments for a volume ``name`` (``source``) mounted at ``path``."""
    return {
        "volumes": [{"name": name, **source}],
        "container": {"volumeMounts": [{"name": name, "mountPath": path}]},
    }


class Bench:
    """Runners and probes of one session in one namespace, with the test's tuning."""

    def __init__(self, tmp_path: Path, ns: str = NAMESPACE, **options: Any) -> None:
        self.tmp_path = tmp_path
        self.ns = ns
        self.session = session_id()
        self.options = {
            "kubeconfig": KUBECONFIG,
            "context": CONTEXT,
            "namespace": ns,
            **FAST,
            **options,
        }
        self.count = 0

    def runner(self, signature: FailureSignature | None = None, **options: Any) -> KubernetesRunner:
        context = RunnerContext(session_id=self.session, signature=signature)
        return KubernetesRunner(context, KubernetesSettings(**{**self.options, **options}))

    def probe(self, doc: dict[str, Any], timeout_s: float = 120) -> Probe:
        self.count += 1
        pid = f"p{self.count:03d}"
        path = self.tmp_path / f"{pid}-spec.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return Probe(
            probe_id=pid,
            session_id=self.session,
            spec=load_spec(str(path)),
            changes=[],
            log_path=self.tmp_path / "logs" / f"{pid}.log",
            timeout_s=timeout_s,
        )

    def run(
        self, docs: list[dict[str, Any]], signature: FailureSignature | None = None, **kw: Any
    ) -> list[RunResult]:
        runner = self.runner(signature, **kw)
        try:
            return runner.run([self.probe(doc) for doc in docs])
        finally:
            runner.close()

    def selector(self) -> str:
        return render.session_selector(self.session)


class Recorder:
    """Every probe Job of a session as the API server reports it (a watch in a thread):
    the names ever created and each Job's condition types in the order they came."""

    def __init__(self, kube: Kube, ns: str, selector: str) -> None:
        self.kube, self.ns, self.selector = kube, ns, selector
        self.jobs: dict[str, dict[str, Any]] = {}  # name -> the first object seen
        self.conditions: dict[str, list[str]] = {}
        self.deleted: set[str] = set()  # Jobs seen deleted (or being deleted)
        self.stopped = threading.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Recorder:
        self.thread.start()
        assert self.ready.wait(30), "the recorder's watch did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(10)

    def _run(self) -> None:
        from kubernetes import watch

        version = None
        while not self.stopped.is_set():
            with contextlib.suppress(Exception):
                if version is None:
                    listed = self.kube.batch.list_namespaced_job(
                        self.ns, label_selector=self.selector
                    )
                    for job in listed.items:
                        self._record(self.kube.client.sanitize_for_serialization(job))
                    version = listed.metadata.resource_version
                    self.ready.set()
                for event in watch.Watch().stream(
                    self.kube.batch.list_namespaced_job,
                    self.ns,
                    label_selector=self.selector,
                    resource_version=version,
                    timeout_seconds=1,
                ):
                    raw = event["raw_object"]
                    version = raw["metadata"]["resourceVersion"]
                    self._record(raw)
                    if event["type"] == "DELETED":
                        self.deleted.add(raw["metadata"]["name"])
                continue
            version = None  # an error (410, the API server away): list again
            time.sleep(0.5)

    def _record(self, raw: dict[str, Any]) -> None:
        name = raw["metadata"]["name"]
        self.jobs.setdefault(name, raw)
        if raw["metadata"].get("deletionTimestamp"):
            self.deleted.add(name)
        seen = self.conditions.setdefault(name, [])
        for cond in (raw.get("status") or {}).get("conditions") or []:
            if cond.get("status") == "True" and cond["type"] not in seen:
                seen.append(cond["type"])


def leftovers(kube: Kube, ns: str, selector: str) -> dict[str, list[str]]:
    """The probe Jobs, pods and ConfigMaps of ``selector`` that are not being deleted."""

    def alive(items: list[Any]) -> list[str]:
        return sorted(o.metadata.name for o in items if not o.metadata.deletion_timestamp)

    return {
        "jobs": alive(kube.batch.list_namespaced_job(ns, label_selector=selector).items),
        "pods": alive(kube.core.list_namespaced_pod(ns, label_selector=selector).items),
        "configmaps": alive(
            kube.core.list_namespaced_config_map(ns, label_selector=selector).items
        ),
    }


def nothing_left(kube: Kube, ns: str, selector: str, timeout_s: float = 60) -> None:
    empty: dict[str, list[str]] = {"jobs": [], "pods": [], "configmaps": []}
    wait_for(lambda: leftovers(kube, ns, selector) == empty, timeout_s, f"no objects of {selector}")


# --- 1. long logs keep their end ---------------------------------------------------------

NOISE = (
    "import sys\n"
    "for i in range({n}): sys.stdout.write('step %06d loss 0.123456789 ' % i + 'x' * 60 + '\\n')\n"
)


def test_a_long_log_keeps_its_end_and_a_match_in_its_middle(tmp_path: Path) -> None:
    """1.9 MB of log, then the error: the signature is matched on the last line. And an
    error in the middle of a log longer than what is kept is still seen."""
    at_end = (
        NOISE.format(n=22000) + "print('RuntimeError: FATAL at the end', flush=True)\nsys.exit(1)\n"
    )
    in_middle = (
        NOISE.format(n=3000)
        + "print('RuntimeError: FATAL in the middle', flush=True)\n"
        + NOISE.format(n=16000)
        + "sys.exit(1)\n"
    )
    signature = FailureSignature(fail_on="FATAL")
    bench = Bench(tmp_path)
    end, middle = bench.run([job_doc(at_end), job_doc(in_middle)], signature)
    assert end.infra_error is None and end.exit_code == 1, end
    assert int(str(end.details["log_bytes"])) > 1_900_000
    assert end.output.rstrip().endswith("RuntimeError: FATAL at the end")
    assert signature.classify(end) is Outcome.FAIL
    assert Path(str(end.log_path)).read_text().rstrip().endswith("FATAL at the end")
    assert signature.classify(middle) is Outcome.FAIL, middle.output[:400]
    assert "FATAL in the middle" in middle.output
    assert "FATAL in the middle" in Path(str(middle.log_path)).read_text()


# --- 2. an eviction is retried, not an error ---------------------------------------------


def test_an_evicted_probe_is_run_again_and_counts_once(tmp_path: Path, kube: Kube, ns: str) -> None:
    """The first pod is evicted through the Eviction API while it runs; the Job makes a
    replacement (its podFailurePolicy ignores disruptions) and the probe's one result is
    the replacement's."""
    gate = tmp_path / "gate"
    gate.mkdir()
    gate.chmod(0o777)
    # The first run stops only once the test says so (as a real trainer takes its time
    # to save and exit), so the runner sees the pod while it terminates.
    script = (
        "import os, signal, sys, time\n"
        "if os.path.exists('/gate/first'):\n"
        "    print('second run: FATAL', flush=True); sys.exit(3)\n"
        "def stop(*_):\n"
        "    while not os.path.exists('/gate/release'): time.sleep(0.1)\n"
        "    sys.exit(143)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "open('/gate/first', 'w').write(os.environ['HOSTNAME'])\n"
        "print('first run', flush=True)\n"
        "time.sleep(600)\n"
    )
    doc = job_doc(
        script,
        terminationGracePeriodSeconds=120,
        **mounted("gate", {"hostPath": {"path": str(gate), "type": "Directory"}}, "/gate"),
    )
    bench = Bench(tmp_path, ns)
    results: list[RunResult] = []
    # The Job controller makes the replacement once the evicted pod is gone, after its
    # back-off: the grace for "no pod" (120 s by default) must cover that gap.
    runner = bench.runner(
        FailureSignature(fail_on="FATAL"), allow_shared_volumes=True, pending_grace_s=60.0
    )
    thread = threading.Thread(target=lambda: results.extend(runner.run([bench.probe(doc)])))
    thread.start()
    try:
        first = wait_for(lambda: (gate / "first").read_text(), 120, "the first pod to run")
        kube.core.create_namespaced_pod_eviction(
            first,
            ns,
            {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": first}},
        )
        wait_for(
            lambda: any(t.disruptions for t in list(runner.jobs.live.values())),
            120,
            "the runner to see the pod disrupted",
        )
        (gate / "release").touch()
        thread.join(180)
    finally:
        if thread.is_alive():
            runner.close()
            thread.join(30)
    [result] = results
    assert result.infra_error is None and result.exit_code == 3, result
    assert "second run: FATAL" in result.output
    assert result.details["disruptions"] == {first: "EvictionByEvictionAPI"}
    assert result.details["pod"] != first
    nothing_left(kube, ns, bench.selector())


# --- 6. stuck pods end with their reason -------------------------------------------------


def test_every_kind_of_stuck_pod_is_unresolved_with_its_reason(tmp_path: Path, kube: Kube) -> None:
    """Nine probes that cannot run, in one batch, each given up after its (short)
    grace with the reason the cluster gives."""
    ok = "print('never runs')"
    cases: dict[str, tuple[dict[str, Any], str, str]] = {
        "bad image": (
            job_doc(ok, container={"image": "registry.example.com/does-not-exist:1"}),
            "ImagePullBackOff|ErrImagePull",
            "does-not-exist",
        ),
        "missing Secret env": (
            job_doc(
                ok,
                container={
                    "env": [
                        {
                            "name": "TOKEN",
                            "valueFrom": {"secretKeyRef": {"name": "no-such-secret", "key": "k"}},
                        }
                    ]
                },
            ),
            "CreateContainerConfigError",
            "no-such-secret",
        ),
        "missing volume": (
            job_doc(
                ok,
                **mounted("cfg", {"configMap": {"name": "no-such-configmap"}}, "/cfg"),
            ),
            "FailedMount",
            "no-such-configmap",
        ),
        "unbound PVC": (
            job_doc(
                ok,
                **mounted("data", {"persistentVolumeClaim": {"claimName": "cb-unbound"}}, "/data"),
            ),
            "Unschedulable",
            "PersistentVolumeClaim",
        ),
        "no such node": (
            job_doc(ok, nodeSelector={"pool": "does-not-exist"}),
            "Unschedulable",
            "node(s) didn't match",
        ),
        "quota": (job_doc(ok, priorityClassName="batch-low"), "ExceededQuota", "exceeded quota"),
        "no ServiceAccount": (
            job_doc(ok, serviceAccountName="no-such-sa"),
            "ServiceAccountMissing",
            "no-such-sa",
        ),
        "Pod Security": (
            job_doc(ok, volumes=[{"name": "host", "hostPath": {"path": "/tmp"}}]),
            "PodSecurity",
            "hostPath volumes",
        ),
        "scheduling gate": (
            job_doc(ok, schedulingGates=[{"name": "example.com/hold"}]),
            "SchedulingGated",
            "",
        ),
    }
    with namespace(kube, "cb-stuck") as ns:
        kube.core.patch_namespace(
            ns, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "baseline"}}}
        )
        kube.core.create_namespaced_persistent_volume_claim(
            ns,
            {
                "metadata": {"name": "cb-unbound"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "cb-no-provisioner",
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        )
        # No pod of priority class batch-low may start here (the other probes have none).
        kube.core.create_namespaced_resource_quota(
            ns,
            {
                "metadata": {"name": "no-batch-low"},
                "spec": {
                    "hard": {"pods": "0"},
                    "scopeSelector": {
                        "matchExpressions": [
                            {
                                "scopeName": "PriorityClass",
                                "operator": "In",
                                "values": ["batch-low"],
                            }
                        ]
                    },
                },
            },
        )
        bench = Bench(tmp_path, ns)
        results = dict(zip(cases, bench.run([doc for doc, _, _ in cases.values()]), strict=True))
        nothing_left(kube, ns, bench.selector())
    wrong = {}
    for case, (_, reasons, words) in cases.items():
        result = results[case]
        ok_reason = result.reason in reasons.split("|") and result.infra_error
        if not ok_reason or words not in (result.infra_error or ""):
            wrong[case] = (result.reason, result.infra_error)
    assert not wrong, wrong


# --- 5. a create whose answer is lost leaves exactly one Job -----------------------------


def local_cluster() -> dict[str, Any] | None:
    """The admin kubeconfig of the project's own cluster (make cluster) when the live
    suite runs on it: the kubeconfig parsed, with its pki folder; None elsewhere."""
    if not KUBECONFIG:
        return None
    doc = yaml.safe_load(Path(KUBECONFIG).read_text())
    state = Path(KUBECONFIG).resolve().parent / "state.json"
    if not state.is_file():
        return None
    ca = Path(doc["clusters"][0]["cluster"]["certificate-authority"])
    return {"doc": doc, "pki": ca.parent, "state": state}


needs_local = pytest.mark.skipif(
    local_cluster() is None, reason="needs the project's own cluster (make cluster)"
)


@needs_local
def test_a_create_whose_answer_is_lost_leaves_exactly_one_job(
    tmp_path: Path, kube: Kube, ns: str
) -> None:
    """A proxy in front of the API server forwards the probe Job's create and drops the
    answer: the runner retries, meets its own Job (409), adopts it, and only that Job
    ever exists."""
    from dropproxy import DropProxy

    local = local_cluster()
    assert local is not None
    server = local["doc"]["clusters"][0]["cluster"]["server"]
    upstream = int(server.rsplit(":", 1)[1])

    def lose(method: str, path: str) -> bool:
        return method == "POST" and "/jobs" in path and "dryRun" not in path

    with DropProxy(upstream, local["pki"], lose) as proxy:
        doc = local["doc"]
        doc["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
        config = tmp_path / "proxied.kubeconfig"
        config.write_text(yaml.safe_dump(doc))
        bench = Bench(tmp_path, ns, kubeconfig=str(config))
        with Recorder(kube, ns, bench.selector()) as recorder:
            [result] = bench.run([job_doc("print('done')")])
            nothing_left(kube, ns, bench.selector())
    assert len(proxy.dropped) == 1 and "/jobs" in proxy.dropped[0], proxy.dropped
    assert result.exit_code == 0 and result.infra_error is None, result
    assert result.details.get("adopted") is True
    assert set(recorder.jobs) == {result.details["job"]}


# --- 10. an API server restart in the middle of a probe ----------------------------------


@needs_local
def test_a_probe_survives_an_api_server_restart_with_its_verdict(
    tmp_path: Path, kube: Kube, ns: str
) -> None:
    """kube-apiserver is stopped and started again while the probe runs; the runner
    rides out the outage (its watch and calls retry with back-off) and the probe's
    verdict is the one the workload gives: the failure."""
    gate = tmp_path / "gate"
    gate.mkdir()
    gate.chmod(0o777)
    script = (
        "import os, sys, time\n"
        "open('/gate/started', 'w').close()\n"
        "while not os.path.exists('/gate/go'): time.sleep(0.1)\n"
        "print('RuntimeError: FATAL after the restart', flush=True)\n"
        "sys.exit(1)\n"
    )
    doc = job_doc(
        script,
        **mounted("gate", {"hostPath": {"path": str(gate), "type": "Directory"}}, "/gate"),
    )
    signature = FailureSignature(fail_on="FATAL")
    bench = Bench(tmp_path, ns)
    runner = bench.runner(signature, allow_shared_volumes=True)
    results: list[RunResult] = []
    thread = threading.Thread(target=lambda: results.extend(runner.run([bench.probe(doc)])))
    thread.start()
    try:
        wait_for(lambda: (gate / "started").exists(), 120, "the probe to start")
        restart = subprocess.run(
            [
                sys.executable,
                str(ROOT / "tests" / "cluster" / "cluster.py"),
                "restart",
                "--kill",  # a crash: no 20 s of graceful shutdown
                "kube-apiserver",
            ],
            capture_output=True,
            text=True,
            timeout=240,
            env={**os.environ, "CLUSTER_DIR": str(local_cluster()["state"].parent)},  # type: ignore[index]
        )
        assert restart.returncode == 0, restart.stdout + restart.stderr
        (gate / "go").touch()
        thread.join(240)
    finally:
        (gate / "go").touch()
        if thread.is_alive():
            runner.close()
            thread.join(30)
    [result] = results
    assert result.infra_error is None and result.exit_code == 1, result
    assert signature.classify(result) is Outcome.FAIL
    assert "FATAL after the restart" in result.output
    nothing_left(kube, ns, bench.selector())


# --- 3. persistent volumes: read-only in probes unless asked -----------------------------


@contextlib.contextmanager
def hostpath_claim(kube: Kube, ns: str, claim: str, where: Path) -> Iterator[str]:
    """A PersistentVolume on ``where`` (a host directory) bound to the claim ``claim``."""
    pv = f"cb-{claim}-{uuid.uuid4().hex[:6]}"
    kube.core.create_persistent_volume(
        {
            "metadata": {"name": pv},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": "cb-manual",
                "hostPath": {"path": str(where), "type": "Directory"},
                "claimRef": {"namespace": ns, "name": claim},
            },
        }
    )
    try:
        kube.core.create_namespaced_persistent_volume_claim(
            ns,
            {
                "metadata": {"name": claim},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "cb-manual",
                    "volumeName": pv,
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            },
        )
        wait_for(
            lambda: (
                kube.core.read_namespaced_persistent_volume_claim(claim, ns).status.phase == "Bound"
            ),
            60,
            f"claim {claim} to be bound",
        )
        yield claim
    finally:
        with contextlib.suppress(Exception):
            kube.core.delete_namespaced_persistent_volume_claim(claim, ns)
        with contextlib.suppress(Exception):
            kube.core.delete_persistent_volume(pv)


def test_a_jobs_checkpoint_volume_is_read_only_in_probes_unless_asked(
    tmp_path: Path, kube: Kube, ns: str
) -> None:
    """The job's checkpoint PVC: a probe cannot write to it by default; with
    --scratch-volumes it writes to an empty directory instead; only with
    --allow-shared-volumes does the write reach the real checkpoints."""
    data = tmp_path / "checkpoints"
    data.mkdir()
    data.chmod(0o777)
    (data / "ckpt.pt").write_text("the real checkpoint")
    script = (
        "import os\n"
        "print('before:', sorted(os.listdir('/ckpt')), flush=True)\n"
        "try:\n"
        "    open('/ckpt/ckpt.pt', 'w').write('overwritten by a probe')\n"
        "    print('wrote', flush=True)\n"
        "except OSError as err:\n"
        "    print('refused:', err.strerror, flush=True)\n"
    )
    with hostpath_claim(kube, ns, "checkpoints", data) as claim:
        doc = job_doc(
            script,
            **mounted("ckpt", {"persistentVolumeClaim": {"claimName": claim}}, "/ckpt"),
        )
        bench = Bench(tmp_path, ns)
        seen = {}
        options: dict[str, Any]
        for mode, options in (
            ("read-only", {}),
            ("scratch", {"scratch_volumes": True}),
            ("shared", {"allow_shared_volumes": True}),
        ):
            runner = bench.runner(None, **options)
            try:
                [result] = runner.run([bench.probe(doc)])
            finally:
                runner.close()
            assert result.exit_code == 0, (mode, result)
            seen[mode] = (result.output.strip(), (data / "ckpt.pt").read_text(), runner.notes())
    output, content, notes = seen["read-only"]
    assert output == "before: ['ckpt.pt']\nrefused: Read-only file system", output
    assert content == "the real checkpoint"
    assert any("ckpt (PVC checkpoints)" in note for note in notes), notes
    assert any("--allow-shared-volumes" in note for note in notes), notes
    output, content, notes = seen["scratch"]
    assert output == "before: []\nwrote" and content == "the real checkpoint", output
    assert any("ckpt (PVC checkpoints)" in note for note in notes), notes
    output, content, notes = seen["shared"]
    assert output == "before: ['ckpt.pt']\nwrote" and notes == []
    assert content == "overwritten by a probe"


# --- 4. an unknown field is bad input --------------------------------------------------


def test_an_unknown_field_is_bad_input_naming_the_field_and_the_object(
    tmp_path: Path, kube: Kube
) -> None:
    good = job_doc("print('ok')")
    bad = job_doc("print('ok')", container={"envv": [{"name": "X", "value": "1"}]})
    paths = []
    for side, doc in (("good", good), ("bad", bad)):
        path = tmp_path / f"{side}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        paths.append(str(path))
    state = tmp_path / "state"
    for dry_run in ([], ["--dry-run", "server"]):
        argv = cli("run", *paths, "--backend", "kubernetes", "-n", NAMESPACE, *dry_run)
        done = subprocess.run(
            [*argv, "--state-dir", str(state), "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        text = done.stdout + done.stderr
        assert done.returncode == 2, text
        assert "Traceback" not in text
        expected = "containers[main].envv: unknown field in the pod template of Job train"
        assert expected in text, text
    # Refused before a session began, so before any probe was created.
    assert not (state / "session.json").exists()


# --- 7. labels admission needs reach the probe Jobs --------------------------------------


def test_admission_labels_and_the_priority_class_reach_the_probe_job(
    tmp_path: Path, kube: Kube, ns: str
) -> None:
    doc = job_doc("print('admitted')", priorityClassName="batch-low")
    doc["metadata"]["labels"] = {
        "kueue.x-k8s.io/queue-name": "team-a",
        "team": "search",
        "app": "ranker",
    }
    bench = Bench(tmp_path, ns, admission_labels=["team"])
    with Recorder(kube, ns, bench.selector()) as recorder:
        [result] = bench.run([doc])
    assert result.exit_code == 0, result
    [job] = recorder.jobs.values()
    labels = job["metadata"]["labels"]
    assert labels["kueue.x-k8s.io/queue-name"] == "team-a" and labels["team"] == "search"
    assert "app" not in labels
    assert job["spec"]["template"]["spec"]["priorityClassName"] == "batch-low"


# --- 9. StatefulSet claim templates, and a Pod's Service labels and priority -------------


def test_claim_templates_and_pod_inputs_render_probes_the_cluster_runs(
    tmp_path: Path, kube: Kube, ns: str
) -> None:
    """A StatefulSet's volumeClaimTemplates become an ephemeral volume of the probe's
    own (bound here to a PersistentVolume of a test class); a Pod input's labels (which
    a Service may select) stay off the probe, and its computed priority is dropped (the
    API server would refuse it next to the class's)."""
    store = tmp_path / "claims"
    store.mkdir()
    store.chmod(0o777)
    klass = f"cb-claims-{uuid.uuid4().hex[:6]}"
    pv = f"{klass}-pv"
    kube.core.create_persistent_volume(
        {
            "metadata": {"name": pv},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain",
                "storageClassName": klass,
                "hostPath": {"path": str(store), "type": "Directory"},
            },
        }
    )
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "ranker"},
        "spec": {
            "serviceName": "ranker",
            "replicas": 2,
            "selector": {"matchLabels": {"app": "ranker"}},
            "template": {
                "metadata": {"labels": {"app": "ranker"}},
                "spec": {
                    "nodeSelector": {"pool": "cpu"},
                    "containers": [
                        {
                            "name": "main",
                            "image": PYTHON,
                            "command": [
                                "python",
                                "-c",
                                "open('/data/written', 'w').write('by a probe'); print('ok')",
                            ],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        }
                    ],
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "storageClassName": klass,
                        "resources": {"requests": {"storage": "1Gi"}},
                    },
                }
            ],
        },
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web-0", "labels": {"app": "web", "team": "search"}},
        "spec": {
            "restartPolicy": "Never",
            "nodeSelector": {"pool": "cpu"},
            "priorityClassName": "batch-low",
            "priority": 5,
            "containers": [
                {"name": "main", "image": PYTHON, "command": ["python", "-c", "print('ok')"]}
            ],
        },
    }
    try:
        bench = Bench(tmp_path, ns)
        with Recorder(kube, ns, bench.selector()) as recorder:
            claimed, plain = bench.run([statefulset, pod])
    finally:
        with contextlib.suppress(Exception):
            kube.core.delete_persistent_volume(pv)
    assert claimed.exit_code == 0 and claimed.output.strip() == "ok", claimed
    assert (store / "written").read_text() == "by a probe"
    assert plain.exit_code == 0 and plain.output.strip() == "ok", plain
    templates = {
        job["metadata"]["labels"][render.LABEL_PROBE]: job["spec"]["template"]
        for job in recorder.jobs.values()
    }
    volume = templates["p001"]["spec"]["volumes"][0]
    assert volume["name"] == "data" and "ephemeral" in volume
    assert "app" not in templates["p002"]["metadata"]["labels"]
    assert "priority" not in templates["p002"]["spec"]
    assert templates["p002"]["spec"]["priorityClassName"] == "batch-low"


# --- the Job's own outcomes: deadline, OOM, both condition sequences ---------------------


def test_deadline_oom_and_both_condition_sequences(tmp_path: Path, kube: Kube, ns: str) -> None:
    bench = Bench(tmp_path, ns)
    docs = {
        "deadline": job_doc("import time\nprint('working', flush=True)\ntime.sleep(600)"),
        "oom": job_doc(
            "print('allocating', flush=True)\nx = bytearray(512 << 20)\nprint(len(x))",
            container={"resources": {"limits": {"memory": "64Mi"}}},
        ),
        "failed": job_doc("import sys\nprint('RuntimeError: FATAL')\nsys.exit(1)"),
        "succeeded": job_doc("print('fine')"),
    }
    probes = [
        bench.probe(doc, timeout_s=4 if name == "deadline" else 120) for name, doc in docs.items()
    ]
    runner = bench.runner()
    with Recorder(kube, ns, bench.selector()) as recorder:
        try:
            results = dict(zip(docs, runner.run(probes), strict=True))
        finally:
            runner.close()
    deadline = results["deadline"]
    assert deadline.timed_out and deadline.reason == "DeadlineExceeded", deadline
    assert "working" in Path(str(deadline.log_path)).read_text()
    assert FailureSignature().classify(deadline) is Outcome.UNRESOLVED
    assert FailureSignature(hang_is_failure=True).classify(deadline) is Outcome.FAIL
    oom = results["oom"]
    assert oom.exit_code == 137 and oom.reason == "OOMKilled", oom
    assert FailureSignature(fail_reason="OOMKilled").classify(oom) is Outcome.FAIL
    assert (
        FailureSignature(fail_reason="OOMKilled").classify(results["failed"]) is Outcome.UNRESOLVED
    )
    assert results["failed"].exit_code == 1 and results["succeeded"].exit_code == 0
    by_probe = {
        job["metadata"]["labels"][render.LABEL_PROBE]: recorder.conditions[name]
        for name, job in recorder.jobs.items()
    }
    failed = by_probe[probes[2].probe_id]
    succeeded = by_probe[probes[3].probe_id]
    assert failed.index("FailureTarget") < failed.index("Failed"), failed
    assert succeeded.index("SuccessCriteriaMet") < succeeded.index("Complete"), succeeded
    nothing_left(kube, ns, bench.selector())


# --- 8 and the interruptions: Ctrl-C, SIGTERM, SIGKILL, then cleanup or resume -----------

GATED = (
    "import os, sys\n"
    "print('B is', os.environ['B'], flush=True)\n"
    "if os.environ['B'] == '2': print('RuntimeError: FATAL', flush=True); sys.exit(1)\n"
)


def gated_pair(tmp_path: Path, name: str) -> tuple[list[str], Path]:
    """A good and a bad Job (two changes: B, the culprit, and C) whose pods wait in an
    init container until ``<gate>/go`` exists; the paths and the gate."""
    gate = tmp_path / f"gate-{name}"
    gate.mkdir()
    gate.chmod(0o777)
    wait = "import os, time\nwhile not os.path.exists('/gate/go'): time.sleep(0.1)\n"
    paths = []
    for side, values in (("good", ("1", "1")), ("bad", ("2", "2"))):
        doc = job_doc(
            GATED,
            volumes=[{"name": "gate", "hostPath": {"path": str(gate), "type": "Directory"}}],
            initContainers=[
                {
                    "name": "gate",
                    "image": PYTHON,
                    "command": ["python", "-c", wait],
                    "volumeMounts": [{"name": "gate", "mountPath": "/gate"}],
                }
            ],
            container={
                "env": [{"name": "B", "value": values[0]}, {"name": "C", "value": values[1]}]
            },
        )
        path = tmp_path / f"{name}-{side}.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        paths.append(str(path))
    return paths, gate


def interrupted_run(
    kube: Kube, ns: str, paths: list[str], state: Path, sig: int, *extra: str
) -> tuple[str, int]:
    """``clusterbisect run`` until its probe Jobs exist (their pods wait at the gate),
    then ``sig``; the session id and the exit code."""
    argv = cli(
        "run",
        *paths,
        "--backend",
        "kubernetes",
        "-n",
        ns,
        "--fail-on",
        "FATAL",
        "--parallel",
        "2",
        "--allow-shared-volumes",  # the gate is a hostPath the test writes to
        "--state-dir",
        str(state),
        "--json",
        *extra,
    )
    process = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )

    def running() -> None:
        if process.poll() is not None:
            _, err = process.communicate()
            pytest.fail(f"the run ended (exit {process.returncode}) before its probes: {err}")

    def begun() -> str:
        running()
        return str(json.loads((state / "session.json").read_text())["session_id"])

    def jobs_made() -> list[str]:
        running()
        return leftovers(kube, ns, selector)["jobs"]

    try:
        session = wait_for(begun, 120, "the session to begin")
        selector = render.session_selector(session)
        wait_for(jobs_made, 120, "its probe Jobs")
        process.send_signal(sig)
        process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
    return session, process.returncode


def in_process_cli(*args: str) -> tuple[int, str, str]:
    """The CLI's ``main`` in this process (no interpreter to start, the client already
    imported): exit code, stdout, stderr."""
    import io

    from clusterbisect.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([*cli(*args)[1:]])
        except SystemExit as done:
            code = int(done.code or 0)
    return code, out.getvalue(), err.getvalue()


def interrupted_then_cleanup(tmp_path: Path, kube: Kube, ns: str, sig: int) -> None:
    """With --probe (so a ConfigMap too): Ctrl-C and SIGTERM delete what the run made
    (exit 130); SIGKILL leaves it, `cleanup` without --session refuses to delete other
    sessions' objects unasked, and `cleanup --session` deletes them."""
    paths, _ = gated_pair(tmp_path, signal.Signals(sig).name)
    state = tmp_path / f"state-{signal.Signals(sig).name}"
    session, code = interrupted_run(
        kube, ns, paths, state, sig, "--probe", "import_check", "--args", "json"
    )
    selector = render.session_selector(session)
    if sig == signal.SIGKILL:
        assert code == -signal.SIGKILL
        left = leftovers(kube, ns, selector)
        assert left["jobs"] and left["configmaps"], left
        code, out, err = in_process_cli("cleanup", "-n", ns, "--json")
        assert code == 2 and session in out + err, (out, err)
        assert leftovers(kube, ns, selector)["jobs"] == left["jobs"]  # nothing deleted
    else:
        assert code == 130
    code, out, err = in_process_cli("cleanup", "--session", session, "-n", ns, "--json")
    assert code == 0, (out, err)
    nothing_left(kube, ns, selector)


def killed_then_resumed(tmp_path: Path, kube: Kube, ns: str) -> None:
    """SIGKILL leaves the probe Jobs; `resume` deletes them before it goes on, and
    finds the culprit."""
    paths, gate = gated_pair(tmp_path, "resumed")
    state = tmp_path / "state-resumed"
    session, code = interrupted_run(kube, ns, paths, state, signal.SIGKILL)
    assert code == -signal.SIGKILL
    selector = render.session_selector(session)
    left = leftovers(kube, ns, selector)["jobs"]
    assert left
    (gate / "go").touch()
    with Recorder(kube, ns, selector) as recorder:
        code, result, err = run_json(cli("resume", str(state), "--json", kube=False), timeout=600)
    assert code == 0 and result["status"] == "found", (result, err[-3000:])
    keys = [[c["key"] for c in culprit["changes"]] for culprit in result["culprits"]]
    assert keys == [["containers[main].env.B"]]
    # The killed run's Jobs were deleted before the resumed run went on.
    assert set(left) <= recorder.deleted, (left, recorder.deleted)
    nothing_left(kube, ns, selector)


@pytest.mark.parametrize(
    "then",
    ["SIGINT", "SIGTERM", "SIGKILL", "resume"],
    ids=[
        "ctrl-c-then-cleanup",
        "sigterm-then-cleanup",
        "sigkill-then-cleanup",
        "sigkill-then-resume",
    ],
)
def test_ctrl_c_sigterm_and_sigkill_then_cleanup_or_resume_leave_nothing(
    then: str, tmp_path: Path, kube: Kube, ns: str
) -> None:
    """Ctrl-C, SIGTERM and SIGKILL then `cleanup`, and SIGKILL then `resume`: each
    leaves 0 probe Jobs, pods and ConfigMaps."""
    if then == "resume":
        killed_then_resumed(tmp_path, kube, ns)
    else:
        interrupted_then_cleanup(tmp_path, kube, ns, signal.Signals[then])
