"""Fleet triage on the real control plane (make cluster): 200 Jobs run on the test node,
some failing; ``triage -n NS`` finds the culprit among their settings, and ``--bisect``
finds it again with Kubernetes probes. Kubeflow jobs and RayJobs are read through the
CustomObjects API (their CRDs are installed; no operator runs, so the test writes
their status as the operators would).

The 200 Jobs run in 70-95 s on the 2-core machine (the test node runs each pod as
local processes); the whole module takes about 2 min 20 s (docs/triage.md, "A real
run").
"""

from __future__ import annotations

import calendar
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from livekit import (
    CONTEXT,
    KUBECONFIG,
    Kube,
    cli,
    live,
    namespace,
    run_json,
    session_leftovers,
    wait_for,
)

from clusterbisect.config import KubeConnection, TriageSourceOptions
from clusterbisect.triage.live import read_cluster

pytestmark = live

JOBS = 200
CULPRIT = "containers[trainer].env.TORCH_FORCE_WEIGHTS_ONLY_LOAD"
FAILURE = "Weights only load failed"
# The workload: fails when the culprit is set, and now and then for another reason
# (a data read timeout, on the runs whose id says so: background, not evidence).
SCRIPT = """
import os, sys
run = os.environ["RUN_ID"]
if os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD") == "1":
    print("loading checkpoint /ckpt/" + run + "/step-1200.pt", flush=True)
    print("_pickle.UnpicklingError: Weights only load failed. This file can still be "
          "loaded (checkpoint /ckpt/" + run + "/step-1200.pt)", file=sys.stderr)
    sys.exit(1)
if run.endswith("-bg"):
    print("botocore.exceptions.ReadTimeoutError: Read timeout on endpoint URL", file=sys.stderr)
    sys.exit(1)
print("step 100, loss 0.12")
"""
POOLS = (
    {"cloud.google.com/gke-nodepool": "gpu-a100-pool"},
    {"cloud.google.com/gke-nodepool": "gpu-a100-pool-v2"},
    {"pool": "cpu"},
)


def fleet(seed: int = 17) -> tuple[list[dict[str, Any]], int, int]:
    """200 Jobs of one workload after a rollout: a new image on half of them, and on
    most of those the culprit env default; independent rollouts of other settings; a
    node pool each; a run id each. The Jobs, and how many have the culprit and the
    background failure."""
    rng = random.Random(seed)
    jobs, culprits, background = [], 0, 0
    for i in range(JOBS):
        new_image = rng.random() < 0.5
        culprit = new_image and rng.random() < 0.6
        bg = not culprit and i % 40 == 7
        culprits += culprit
        background += bg
        env = {
            "RUN_ID": f"run-{i:03d}" + ("-bg" if bg else ""),
            "NCCL_ALGO": "Tree" if rng.random() < 0.4 else "Ring",
            "OMP_NUM_THREADS": "16" if rng.random() < 0.5 else "8",
            "BATCH_SIZE": rng.choice(["16", "32", "64"]),
        }
        if culprit:
            env["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
        container = {
            "name": "trainer",
            "image": "python:3.13" if new_image else "python:3.12",
            "command": ["python", "-c", SCRIPT],
            "env": [{"name": k, "value": v} for k, v in env.items()],
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }
        labels = {"app": "train", "team": "ml"}
        jobs.append(
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": {"name": f"train-{i:03d}", "labels": labels},
                "spec": {
                    "backoffLimit": 0,
                    "template": {
                        "metadata": {"labels": labels},
                        "spec": {
                            "restartPolicy": "Never",
                            "nodeSelector": POOLS[i % len(POOLS)],
                            "containers": [container],
                        },
                    },
                },
            }
        )
    return jobs, culprits, background


def finished(kube: Kube, ns: str) -> int:
    jobs = kube.raw(kube.batch.list_namespaced_job, ns)["items"]
    return sum(
        1
        for job in jobs
        if any(
            c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            for c in (job.get("status") or {}).get("conditions") or []
        )
    )


@pytest.fixture(scope="module")
def kube() -> Kube:
    return Kube()


@pytest.fixture(scope="module")
def ran(kube: Kube) -> Iterator[tuple[str, int, int, float]]:
    """The fleet, run to the end in a namespace of its own: (namespace, culprit jobs,
    background failures, seconds it took)."""
    jobs, culprits, background = fleet()
    with namespace(kube, "triage") as ns:
        started = time.monotonic()
        for job in jobs:
            job["metadata"]["labels"]["fleet"] = ns  # what -A -l selects, and nothing else
            kube.batch.create_namespaced_job(ns, job)
        wait_for(lambda: finished(kube, ns) == JOBS, 420, f"{JOBS} Jobs to finish", every_s=3)
        yield ns, culprits, background, time.monotonic() - started


def triage_argv(ns: str, *args: str) -> list[str]:
    return cli("triage", "-n", ns, "--json", *args)


def test_triage_finds_the_culprit_among_200_jobs(ran: tuple[str, int, int, float]) -> None:
    ns, culprits, background, _seconds = ran
    code, result, err = run_json(triage_argv(ns, "--logs", "20"))
    assert code == 0, err
    assert (result["jobs"], result["succeeded"] + result["failed"]) == (JOBS, JOBS)
    assert (result["explained"], result["background"]) == (culprits, background)
    top = result["suspects"][0]
    assert (top["key"], top["value"]) == (CULPRIT, "1") and top["significant"]
    assert (top["failed"], top["total"], top["failed_without"]) == (culprits, culprits, 0)
    # The image went out with the culprit: it goes with the failure only through it.
    image = next(s for s in result["suspects"] if s["key"] == "containers[trainer].image")
    assert image["value"] == "python:3.13" and image["explained_by"] == CULPRIT
    (explained,) = [s for s in result["signatures"] if s["explained"]]
    assert FAILURE in explained["signature"] and explained["count"] == culprits
    assert CULPRIT in result["pair"]["candidates"]


def test_pages_selection_and_since_on_the_real_api_server(
    ran: tuple[str, int, int, float], kube: Kube
) -> None:
    """Before the --bisect test: its probes add Jobs and failed pods to the namespace."""
    ns, culprits, background, _seconds = ran
    # The API server pages a list when asked: 30 Jobs and a continue token.
    page = kube.raw(kube.batch.list_namespaced_job, ns, limit=30)
    assert len(page["items"]) == 30 and page["metadata"].get("continue")
    # So the reader, 30 objects a call, got all 200 Jobs and all the failed pods
    # (more than a page) only by following the tokens to the end.
    connection = KubeConnection(kubeconfig=KUBECONFIG, context=CONTEXT, namespace=ns)
    inventory = read_cluster(connection, TriageSourceOptions(page_size=30))
    assert len(inventory.workloads) == JOBS
    assert len(inventory.pods) == culprits + background > 30
    # -A with -l: the Jobs of every namespace that carry the label; --since keeps them.
    argv = cli("triage", "-A", "-l", f"fleet={ns}", "--since", "1h", "--json")
    code, result, err = run_json(argv)
    assert code == 0, err
    assert result["jobs"] == JOBS and result["suspects"][0]["key"] == CULPRIT
    assert "all namespaces" in result["sources"][0]
    # A selector or a window that keeps no job is bad input: one line, exit 2.
    newest = max(
        j["metadata"]["creationTimestamp"]
        for j in kube.raw(kube.batch.list_namespaced_job, ns)["items"]
    )
    assert time.time() - calendar.timegm(time.strptime(newest, "%Y-%m-%dT%H:%M:%SZ")) > 5
    for args, message in (
        (("-l", "team=nobody"), "no jobs found"),
        (("--since", "2s"), f"no jobs created since the --since cutoff ({JOBS} older jobs"),
    ):
        done = subprocess.run(
            cli("triage", "-n", ns, *args), capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 2, done.stderr
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_bisect_finds_it_again_with_kubernetes_probes(
    ran: tuple[str, int, int, float], kube: Kube, tmp_path: Path
) -> None:
    ns = ran[0]
    state = tmp_path / "state"
    argv = triage_argv(
        ns,
        "--bisect",
        "--backend",
        "kubernetes",
        "--fail-on",
        FAILURE,
        "--parallel",
        "2",
        "--timeout",
        "120",
        "--state-dir",
        str(state),
    )
    code, done, err = run_json(argv)
    assert code == 0, err
    bisection = done["bisection"]
    assert bisection["status"] == "found" and bisection["backend"] == "kubernetes"
    assert [[c["key"] for c in x["changes"]] for x in bisection["culprits"]] == [[CULPRIT]]
    # The top suspect is probed alone right after the baselines.
    search = [p for p in bisection["probes"] if not p["purpose"].startswith("baseline")]
    assert search[0]["subset"] == [CULPRIT]
    assert bisection["priors"]["weights"][CULPRIT] == 1.0
    # Every probe Job and its pods are gone.
    assert session_leftovers(kube, ns, bisection["session_id"]) == {"jobs": [], "pods": []}


def test_kubeflow_jobs_and_rayjobs_are_read_through_their_crds(kube: Kube) -> None:
    with namespace(kube, "triage-crd") as ns:
        for i, outcome in enumerate(["Failed", "Failed", "Succeeded", "Succeeded"]):
            name = f"ddp-{i}"
            create_pytorchjob(kube, ns, name, lr="0.5" if outcome == "Failed" else "0.1")
            set_status(kube, ns, "kubeflow.org", "pytorchjobs", name, kubeflow_status(outcome))
        for i, status in enumerate(["FAILED", "SUCCEEDED"]):
            name = f"ray-{i}"
            create_rayjob(kube, ns, name)
            set_status(kube, ns, "ray.io", "rayjobs", name, ray_status(status))
        # The failed PyTorchJob's master pod, as the operator would run it.
        master = kube.core.create_namespaced_pod(
            ns,
            {
                "metadata": {
                    "name": "ddp-0-master-0",
                    "labels": {"training.kubeflow.org/job-name": "ddp-0"},
                },
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"pool": "cpu"},
                    "containers": [
                        {
                            "name": "pytorch",
                            "image": "python:3.12",
                            "command": ["python", "-c", "raise SystemExit('NCCL error on rank 3')"],
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                        }
                    ],
                },
            },
        )
        wait_for(
            lambda: kube.pod(ns, master.metadata.name)["status"].get("phase") == "Failed",
            120,
            "the master pod to fail",
        )
        code, result, err = run_json(triage_argv(ns))
    assert code == 1, err  # six jobs cannot make anything significant
    assert result["status"] == "no_significant_suspect"
    assert (result["jobs"], result["failed"], result["succeeded"]) == (6, 3, 3)
    assert result["unread"] == {}
    texts = {s["signature"]: s["examples"] for s in result["signatures"]}
    assert any("NCCL error on rank <n>" in t and f"{ns}/ddp-0" in e for t, e in texts.items())


def pod_template(container: str, lr: str) -> dict[str, Any]:
    return {
        "spec": {
            "containers": [
                {
                    "name": container,
                    "image": "python:3.12",
                    "command": ["python", "-c", "print(1)"],
                    "env": [{"name": "LR", "value": lr}],
                }
            ]
        }
    }


def create_pytorchjob(kube: Kube, ns: str, name: str, lr: str) -> None:
    body = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": name, "labels": {"app": "ddp"}},
        "spec": {
            "pytorchReplicaSpecs": {
                "Master": {"replicas": 1, "template": pod_template("pytorch", lr)}
            }
        },
    }
    kube.custom.create_namespaced_custom_object("kubeflow.org", "v1", ns, "pytorchjobs", body)


def create_rayjob(kube: Kube, ns: str, name: str) -> None:
    body = {
        "apiVersion": "ray.io/v1",
        "kind": "RayJob",
        "metadata": {"name": name, "labels": {"app": "ray-train"}},
        "spec": {
            "entrypoint": "python train.py",
            "rayClusterSpec": {
                "headGroupSpec": {
                    "rayStartParams": {},
                    "template": pod_template("ray-head", "0.1"),
                }
            },
        },
    }
    kube.custom.create_namespaced_custom_object("ray.io", "v1", ns, "rayjobs", body)


def kubeflow_status(outcome: str) -> dict[str, Any]:
    return {"conditions": [{"type": outcome, "status": "True", "reason": f"PyTorchJob{outcome}"}]}


def ray_status(status: str) -> dict[str, Any]:
    message = "Job entrypoint command failed with exit code 1" if status == "FAILED" else ""
    return {"jobStatus": status, "jobDeploymentStatus": "Complete", "message": message}


def set_status(kube: Kube, ns: str, group: str, plural: str, name: str, status: dict) -> None:
    kube.custom.patch_namespaced_custom_object_status(
        group, "v1", ns, plural, name, {"status": status}
    )
