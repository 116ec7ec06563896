"""The live sources' calls and faults, against autospecs of the official clients.

``create_autospec`` of ``BatchV1Api``/``CoreV1Api`` and ``JobSubmissionClient``: a call
with an argument the real client does not take fails here as it would against a
cluster. These tests inject faults (expired pages, server errors, missing
permission, an unreachable Ray); the behaviour on a real control plane is tested
live later (``make cluster``, issue 13).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any
from unittest.mock import create_autospec

import pytest
from conftest import failed_with, job, pod

kubernetes = pytest.importorskip("kubernetes")
from kubernetes.client import (  # noqa: E402
    ApiClient,
    ApisApi,
    BatchV1Api,
    CoreV1Api,
    CustomObjectsApi,
)
from kubernetes.client.exceptions import ApiException  # noqa: E402

from clusterbisect.config import KubeConnection, TriageSourceOptions  # noqa: E402
from clusterbisect.errors import BackendError  # noqa: E402
from clusterbisect.runners.kubernetes.client import Api, Connection  # noqa: E402
from clusterbisect.triage.jobs import build_fleet  # noqa: E402
from clusterbisect.triage.live import read_cluster  # noqa: E402


class Raw:
    """What the client returns with ``_preload_content=False``: the body in ``data``."""

    def __init__(self, items: list[dict[str, Any]], token: str | None = None) -> None:
        # List responses carry no kind on their items.
        stripped = [
            {k: v for k, v in item.items() if k not in ("kind", "apiVersion")} for item in items
        ]
        metadata = {"continue": token} if token else {}
        self.data = json.dumps({"kind": "List", "items": stripped, "metadata": metadata}).encode()


class Body:
    """A raw response holding any JSON document."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.data = json.dumps(document).encode()


def discovery(*group_versions: str) -> Body:
    """``/apis`` serving these ``group/version``s."""
    groups: dict[str, list[dict[str, str]]] = {}
    for item in group_versions:
        group, version = item.split("/")
        groups.setdefault(group, []).append({"groupVersion": item, "version": version})
    return Body(
        {"kind": "APIGroupList", "groups": [{"name": g, "versions": v} for g, v in groups.items()]}
    )


def cluster(*served: str) -> tuple[Connection, Any, Any]:
    batch = create_autospec(BatchV1Api, instance=True)
    core = create_autospec(CoreV1Api, instance=True)
    apis = create_autospec(ApisApi, instance=True)
    apis.get_api_versions.return_value = discovery(*served)
    conn = Connection(
        api_client=create_autospec(ApiClient, instance=True),
        namespace="ml",
        _apis={
            "BatchV1Api": batch,
            "CoreV1Api": core,
            "ApisApi": apis,
            "CustomObjectsApi": create_autospec(CustomObjectsApi, instance=True),
        },
    )
    return conn, batch, core


def read(conn: Connection, **select: Any) -> Any:
    return read_cluster(
        KubeConnection(), TriageSourceOptions(**select), conn=conn, api=no_sleep(conn)
    )


def no_sleep(conn: Connection) -> Api:
    return Api(conn, retries=2, sleep=lambda _s: None)


def test_jobs_and_failed_pods_are_read_page_by_page_with_logs() -> None:
    conn, batch, core = cluster()
    good = job("train-1", created="2026-11-20T10:00:00Z")
    bad = job("train-2", "failed", created="2026-11-20T11:00:00Z")
    old = job("train-0", created="2026-10-01T00:00:00Z")
    batch.list_namespaced_job.side_effect = [Raw([good, old], "page-2"), Raw([bad])]
    other = failed_with(job("not-selected", "failed"))
    core.list_namespaced_pod.side_effect = [Raw([failed_with(bad), other])]
    core.read_namespaced_pod_log.return_value = "step 9\nRuntimeError: NCCL error on rank 1\n"
    select = TriageSourceOptions(selector="team=ml", logs=50, page_size=2)
    cutoff = 1795132800.0  # 2026-11-20T00:00:00Z: train-0 is older
    inventory = read_cluster(
        KubeConnection(), select, created_after=cutoff, conn=conn, api=no_sleep(conn)
    )

    first, second = batch.list_namespaced_job.call_args_list
    assert first.args == ("ml",) and first.kwargs["_continue"] is None
    assert second.kwargs["_continue"] == "page-2"
    for call in (first, second):
        assert call.kwargs["limit"] == 2 and call.kwargs["label_selector"] == "team=ml"
        assert call.kwargs["_preload_content"] is False
    pods_call = core.list_namespaced_pod.call_args
    assert pods_call.kwargs["label_selector"] == "job-name"
    assert pods_call.kwargs["field_selector"] == "status.phase=Failed"
    core.read_namespaced_pod_log.assert_called_once_with(
        "train-2-x7k2p", "ml", container="trainer", tail_lines=50, limit_bytes=256 * 1024
    )
    assert [o["metadata"]["name"] for _, o in inventory.workloads] == ["train-1", "train-2"]
    assert inventory.too_old == 1  # train-0, counted for the message and left_out
    assert [o["kind"] for _, o in inventory.workloads] == ["Job", "Job"]
    assert [o["metadata"]["name"] for _, o in inventory.pods] == ["train-2-x7k2p"]
    fleet = build_fleet(inventory)
    (failed,) = [j for j in fleet.jobs if j.outcome == "failed"]
    assert failed.terminations[0].log_tail.endswith("NCCL error on rank 1\n")


def test_all_namespaces_lists_across_the_cluster() -> None:
    conn, batch, core = cluster()
    batch.list_job_for_all_namespaces.return_value = Raw([job("a")])
    core.list_pod_for_all_namespaces.return_value = Raw([pod(job("a"))])
    inventory = read(conn, all_namespaces=True)
    assert batch.list_job_for_all_namespaces.call_args.args == ()
    batch.list_namespaced_job.assert_not_called()
    assert len(inventory.workloads) == 1
    assert "all namespaces" in inventory.sources[0]


def pytorch_job(name: str, outcome: str) -> dict[str, Any]:
    """A PyTorchJob as the training operator leaves it (Succeeded or Failed)."""
    kind = "Succeeded" if outcome == "succeeded" else "Failed"
    worker = job(name)["spec"]["template"]
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": name, "namespace": "ml", "uid": f"uid-{name}"},
        "spec": {"pytorchReplicaSpecs": {"Master": {"replicas": 1, "template": worker}}},
        "status": {"conditions": [{"type": kind, "status": "True"}]},
    }


def test_kubeflow_jobs_and_rayjobs_are_read_where_their_crds_are_served() -> None:
    conn, batch, core = cluster("kubeflow.org/v1", "ray.io/v1", "apps/v1")
    custom = conn.api("CustomObjectsApi")
    batch.list_namespaced_job.return_value = Raw([])
    failed, ok = pytorch_job("ddp-1", "failed"), pytorch_job("ddp-2", "succeeded")

    def listing(group: str, version: str, namespace: str, plural: str, **kw: Any) -> Raw:
        assert (namespace, kw["limit"], kw["_preload_content"]) == ("ml", 500, False)
        if plural == "rayjobs":
            raise ApiException(status=403, reason="Forbidden")
        if plural != "pytorchjobs":  # the group is served, but this kind has no CRD
            raise ApiException(status=404, reason="NotFound")
        return Raw([failed, ok])

    custom.list_namespaced_custom_object.side_effect = listing
    master = pod(job("ddp-1"), exit_code=1, message="RuntimeError: NCCL error on rank 0")
    master["metadata"]["labels"] = {"training.kubeflow.org/job-name": "ddp-1"}
    core.list_namespaced_pod.side_effect = [Raw([]), Raw([master])]
    inventory = read(conn)

    plurals = [c.args[3] for c in custom.list_namespaced_custom_object.call_args_list]
    # Only the kinds of the served groups and versions (MPIJob is kubeflow.org/v2beta1).
    assert plurals == ["pytorchjobs", "tfjobs", "xgboostjobs", "paddlejobs", "jaxjobs", "rayjobs"]
    assert [c.kwargs["label_selector"] for c in core.list_namespaced_pod.call_args_list] == [
        "job-name",
        "training.kubeflow.org/job-name",
    ]
    assert [o["kind"] for _, o in inventory.workloads] == ["PyTorchJob", "PyTorchJob"]
    assert list(inventory.unread) == ["rayjobs.ray.io"]
    assert "missing permission to list rayjobs.ray.io" in inventory.unread["rayjobs.ray.io"]
    fleet = build_fleet(inventory)
    outcomes = {j.name: j.outcome for j in fleet.jobs}
    assert outcomes == {"ddp-1": "failed", "ddp-2": "succeeded"}
    (ddp,) = [j for j in fleet.jobs if j.outcome == "failed"]
    assert "NCCL error on rank 0" in (ddp.terminations[0].message or "")


def test_jobs_that_cannot_be_listed_are_a_backend_error_not_a_gap() -> None:
    conn, batch, _core = cluster()
    batch.list_namespaced_job.side_effect = ApiException(status=403, reason="Forbidden")
    with pytest.raises(BackendError, match=r"missing permission to list jobs\.batch"):
        read(conn)


def test_a_server_error_is_retried() -> None:
    conn, batch, core = cluster()
    batch.list_namespaced_job.side_effect = [ApiException(status=503, reason="busy"), Raw([])]
    core.list_namespaced_pod.return_value = Raw([])
    inventory = read(conn)
    assert batch.list_namespaced_job.call_count == 2 and len(inventory) == 0


def test_an_expired_page_token_is_a_clear_backend_error() -> None:
    conn, batch, _core = cluster()
    batch.list_namespaced_job.side_effect = [
        Raw([job("a")], "stale"),
        ApiException(status=410, reason="Expired"),
    ]
    with pytest.raises(BackendError, match="expired while it was read page by page"):
        read(conn)


def test_missing_permission_names_what_to_grant() -> None:
    conn, _batch, core = cluster()
    _batch.list_namespaced_job.return_value = Raw([job("a")])
    core.list_namespaced_pod.side_effect = ApiException(status=403, reason="Forbidden")
    with pytest.raises(BackendError, match="missing permission to list pods in namespace 'ml'"):
        read(conn)


def test_a_gone_log_is_skipped() -> None:
    conn, batch, core = cluster()
    bad = job("b", "failed")
    batch.list_namespaced_job.return_value = Raw([bad])
    core.list_namespaced_pod.return_value = Raw([failed_with(bad)])
    core.read_namespaced_pod_log.side_effect = ApiException(status=404, reason="NotFound")
    inventory = read(conn, logs=10)
    assert inventory.logs == {} and len(inventory.pods) == 1


def test_importing_triage_imports_neither_kubernetes_nor_ray() -> None:
    code = (
        "import sys, clusterbisect.triage, clusterbisect.triage.live, "
        "clusterbisect.triage.ray_source; "
        "print(sorted(m for m in ('kubernetes', 'ray') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- Ray -------------------------------------------------------------------------------


def ray_client(details: list[Any]) -> Any:
    from ray.job_submission import JobSubmissionClient

    client = create_autospec(JobSubmissionClient, instance=True)
    client.list_jobs.return_value = details
    client.get_job_logs.return_value = "\n".join(f"line {i}" for i in range(100))
    return client


def test_ray_jobs_are_read_from_the_jobs_api() -> None:
    pytest.importorskip("ray")
    from ray.dashboard.modules.job.pydantic_models import JobDetails

    from clusterbisect.triage.ray_source import read_ray

    details = [
        JobDetails(
            type="SUBMISSION",
            job_id="01",
            submission_id="raysubmit_a",
            status="FAILED",
            entrypoint="python train.py",
            message="exit code 1",
            driver_exit_code=1,
            runtime_env={"env_vars": {"A": "1"}},
        ),
        JobDetails(
            type="SUBMISSION",
            job_id="02",
            submission_id="raysubmit_b",
            status="SUCCEEDED",
            entrypoint="python train.py",
            driver_exit_code=0,
            runtime_env={"env_vars": {"A": "0"}},
        ),
    ]
    client = ray_client(details)
    inventory = read_ray("http://ray:8265", logs=3, client_factory=lambda _address: client)
    client.get_job_logs.assert_called_once_with("raysubmit_a")
    assert inventory.logs == {("", "raysubmit_a", ""): "line 97\nline 98\nline 99"}
    entries = [e for _, e in inventory.ray_jobs]
    assert [e["status"] for e in entries] == ["FAILED", "SUCCEEDED"]  # enums as plain text
    fleet = build_fleet(inventory)
    failed = next(j for j in fleet.jobs if j.outcome == "failed")
    assert failed.log_tail == "line 97\nline 98\nline 99"
    assert failed.spec is not None and failed.spec.document["runtime_env"]["env_vars"] == {"A": "1"}


def test_an_unreachable_ray_is_a_backend_error() -> None:
    pytest.importorskip("ray")
    from clusterbisect.triage.ray_source import read_ray

    client = ray_client([])
    client.list_jobs.side_effect = ConnectionError("refused")
    with pytest.raises(BackendError, match="cannot list the jobs of the Ray cluster at http://x"):
        read_ray("http://x", client_factory=lambda _address: client)
