"""The Kubernetes runner's lifecycle, against a scripted API at the client boundary.

Only ``kubernetes.client.BatchV1Api`` / ``CoreV1Api`` and ``kubernetes.watch.Watch``
are replaced, with ``create_autospec`` of the real classes (``autospec=True``): a call
with an argument the real client does not take (``tailLines`` for ``tail_lines``)
fails here as it would on a cluster. They answer with the client's own model objects
(V1Job, V1Pod, ...) and, for a streamed log, a real ``urllib3.HTTPResponse``, the way
a cluster would. Kubeconfig loading, rendering, watching, classification and cleanup
are the real code. tests/cluster/ runs the same lifecycle against the real control
plane.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_fake import (
    EXAMPLE,
    RUNNING,
    SESSION,
    T0,
    FakeCluster,
    Step,
    allow_access_reviews,
    api_exception,
    autospecced,
    complete_steps,
    container,
    failed_steps,
    make,
    pod_for,
    probes,
    terminated,
    waiting,
    write_kubeconfig,
)
from kubernetes import client

from clusterbisect.config import KubeConnection, KubernetesOptions
from clusterbisect.errors import BackendError, InputError, Interrupted
from clusterbisect.outcome import FailureSignature, Outcome
from clusterbisect.runners.base import Probe, RunnerContext
from clusterbisect.runners.kubernetes import (
    KubernetesRunner,
    KubernetesSettings,
    cleanup,
    connect,
    make_runner,
    render,
)
from clusterbisect.specs import load_spec
from clusterbisect.specs.live import is_live_ref, load_live_spec


@pytest.fixture
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return write_kubeconfig(tmp_path, monkeypatch)


# --- verdicts ------------------------------------------------------------------------


def test_complete_and_failed_probes_run_together(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    cluster = FakeCluster(
        mocker,
        {"p001": complete_steps(), "p002": failed_steps(1, "Error")},
        logs={
            "p001": "epoch 3 eval ndcg=0.71\n",
            "p002": "Traceback\n_pickle.UnpicklingError: Weights only load failed\n",
        },
    )
    runner = make(kubeconfig, tmp_path)
    good, bad = runner.run(probes(tmp_path, "p001", "p002"))

    assert (good.exit_code, good.reason, good.timed_out, good.infra_error) == (
        0,
        "Completed",
        False,
        None,
    )
    assert (bad.exit_code, bad.reason) == (1, "Error")
    assert "UnpicklingError" in bad.output
    signature = FailureSignature(fail_on="UnpicklingError")
    assert signature.classify(good) is Outcome.PASS and signature.classify(bad) is Outcome.FAIL
    assert (tmp_path / "logs" / "p002.log").read_text().endswith("Weights only load failed\n")
    # Every Job was deleted with its pods (Background), and nothing else is left.
    assert sorted(cluster.deleted) == sorted(cluster.created)
    for call in cluster.batch.delete_namespaced_job.call_args_list:
        assert call.kwargs["propagation_policy"] == "Background"
    # Created in the context's namespace, watched with a resourceVersion.
    assert {c.args[0] for c in cluster.batch.create_namespaced_job.call_args_list} == {"ns1"}
    watch_kwargs = cluster.watch.return_value.stream.call_args.kwargs
    assert watch_kwargs["resource_version"] and watch_kwargs[
        "label_selector"
    ] == render.session_selector(SESSION)
    assert runner.jobs.live == {}


def test_long_logs_keep_their_end_and_every_matching_line(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    noise = "".join(f"step {i} loss=0.{i % 97:02d}\n" for i in range(40000))  # ~0.8 MB
    text = noise + "NCCL WARN rank 3 slow\n" + noise + "RuntimeError: NCCL timeout\n"
    cluster = FakeCluster(mocker, {"p001": failed_steps(1, "Error")}, logs={"p001": text})
    runner = make(
        kubeconfig,
        tmp_path,
        signature=FailureSignature(fail_on="NCCL WARN"),
        max_log_bytes=100_000,
        log_head_bytes=10_000,
    )
    (result,) = runner.run(probes(tmp_path, "p001"))
    kwargs = cluster.core.read_namespaced_pod_log.call_args.kwargs
    # The whole log is streamed: limitBytes would keep the start of the window.
    assert kwargs["_preload_content"] is False and kwargs["container"] == "trainer"
    assert "limit_bytes" not in kwargs and "tail_lines" not in kwargs
    assert result.output.endswith("RuntimeError: NCCL timeout\n")
    assert len(result.output) < 101_000 and result.details["log_bytes"] == len(text)
    # The line in the middle was matched as it streamed past, and is kept.
    assert "NCCL WARN rank 3 slow" in result.output
    assert FailureSignature(fail_on="NCCL WARN").classify(result) is Outcome.FAIL
    assert FailureSignature(fail_on="NCCL timeout").classify(result) is Outcome.FAIL
    kept = (tmp_path / "logs" / "p001.log").read_text()
    assert kept.startswith("step 0 loss") and kept.endswith("RuntimeError: NCCL timeout\n")
    assert "NCCL WARN rank 3 slow" in kept and len(kept) < 112_000


def test_a_broken_log_stream_falls_back_to_the_last_lines(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    import urllib3

    cluster = FakeCluster(mocker, {"p001": failed_steps(1, "Error")}, logs={"p001": "a\nFATAL\n"})
    read_log = cluster.read_log

    def broken(name: str, namespace: str, **kwargs: Any) -> Any:
        if kwargs.get("_preload_content") is False:
            response = mocker.Mock(spec=urllib3.HTTPResponse)
            response.stream.side_effect = urllib3.exceptions.ProtocolError("Connection broken")
            return response
        return read_log(name, namespace, **kwargs)

    cluster.core.read_namespaced_pod_log.side_effect = broken
    (result,) = make(kubeconfig, tmp_path, log_tail_lines=500).run(probes(tmp_path, "p001"))
    assert result.output == "a\nFATAL\n"
    assert cluster.core.read_namespaced_pod_log.call_args.kwargs["tail_lines"] == 500


def test_old_cluster_conditions_are_understood(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    old_complete = [
        RUNNING,
        Step(
            [("Complete", "")],
            pod_for("Succeeded", [container("trainer", **terminated(0, "Completed"))]),
        ),
    ]
    FakeCluster(mocker, {"p001": old_complete, "p002": failed_steps(2, "Error", new_cluster=False)})
    good, bad = make(kubeconfig, tmp_path).run(probes(tmp_path, "p001", "p002"))
    assert good.exit_code == 0 and bad.exit_code == 2


def test_oomkilled_is_the_failure_when_the_signature_asks(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    FakeCluster(mocker, {"p001": failed_steps(137, "OOMKilled")})
    (result,) = make(kubeconfig, tmp_path).run(probes(tmp_path, "p001"))
    assert (result.exit_code, result.reason) == (137, "OOMKilled")
    assert FailureSignature(fail_reason="OOMKilled").classify(result) is Outcome.FAIL
    # A different signature sees it as a different failure, never as the failure.
    assert FailureSignature(fail_on="UnpicklingError").classify(result) is Outcome.UNRESOLVED


def test_deadline_exceeded_is_a_timeout(mocker: Any, kubeconfig: Path, tmp_path: Path) -> None:
    steps = [RUNNING, Step([("FailureTarget", "DeadlineExceeded")], RUNNING.pod)]
    FakeCluster(mocker, {"p001": steps})
    (result,) = make(kubeconfig, tmp_path).run(probes(tmp_path, "p001"))
    assert result.timed_out and result.reason == "DeadlineExceeded"
    assert FailureSignature().classify(result) is Outcome.UNRESOLVED
    assert FailureSignature(hang_is_failure=True).classify(result) is Outcome.FAIL


def test_main_container_exit_ends_a_probe_with_a_running_sidecar(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    sidecar = Step(
        pod=pod_for(
            "Running",
            [
                container("trainer", **terminated(3, "Error")),
                container("log-shipper", running=client.V1ContainerStateRunning(started_at=T0)),
            ],
        )
    )
    cluster = FakeCluster(mocker, {"p001": [RUNNING, sidecar]})
    (result,) = make(kubeconfig, tmp_path).run(probes(tmp_path, "p001"))
    assert result.exit_code == 3 and cluster.deleted == list(cluster.created)


# --- infrastructure errors --------------------------------------------------------


def test_image_pull_backoff_is_unresolved_after_the_grace(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    stuck = Step(
        pod=pod_for(
            "Pending",
            [
                container(
                    "trainer",
                    **waiting(
                        "ImagePullBackOff",
                        'Back-off pulling image "registry.example.com/ml/pytorch-train:2.6.0"',
                    ),
                )
            ],
        )
    )
    cluster = FakeCluster(mocker, {"p001": [stuck]})
    clock = [0.0]
    cluster.stream_hooks = {
        i: (lambda: clock.__setitem__(0, clock[0] + 10.0)) for i in range(1, 20)
    }
    (result,) = make(
        kubeconfig, tmp_path, clock=clock, image_pull_grace_s=25.0, pending_grace_s=300.0
    ).run(probes(tmp_path, "p001"))
    assert result.reason == "ImagePullBackOff" and "Back-off pulling image" in (
        result.infra_error or ""
    )
    assert FailureSignature().classify(result) is Outcome.UNRESOLVED
    assert 3 <= cluster.stream_calls <= 4  # not before the grace period, not much after
    assert cluster.deleted == list(cluster.created)


@pytest.mark.parametrize(
    "reason", ["ErrImagePull", "InvalidImageName", "CreateContainerConfigError"]
)
def test_other_stuck_containers_are_infra_errors(
    mocker: Any, kubeconfig: Path, tmp_path: Path, reason: str
) -> None:
    stuck = Step(
        pod=pod_for(
            "Pending",
            [container("trainer", **waiting(reason, 'secret "wandb-credentials" not found'))],
        )
    )
    FakeCluster(mocker, {"p001": [stuck]})
    (result,) = make(kubeconfig, tmp_path).run(probes(tmp_path, "p001"))
    assert result.reason == reason and result.infra_error and result.exit_code is None


def test_unschedulable_is_an_infra_error(mocker: Any, kubeconfig: Path, tmp_path: Path) -> None:
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    stuck = Step(
        pod=pod_for(
            "Pending",
            None,
            [
                client.V1PodCondition(
                    type="PodScheduled", status="False", reason="Unschedulable", message=message
                )
            ],
        )
    )
    FakeCluster(mocker, {"p001": [stuck]})
    (result,) = make(kubeconfig, tmp_path).run(probes(tmp_path, "p001"))
    assert result.reason == "Unschedulable" and message in (result.infra_error or "")
    assert FailureSignature().classify(result) is Outcome.UNRESOLVED


# --- the watch -------------------------------------------------------------------------


def test_410_gone_mid_watch_relists(mocker: Any, kubeconfig: Path, tmp_path: Path) -> None:
    cluster = FakeCluster(mocker, {"p001": [RUNNING, RUNNING, *complete_steps()[1:]]})

    def gone() -> None:
        raise api_exception(410, "Expired: too old resource version: 100 (250)")

    cluster.stream_hooks = {2: gone}
    (result,) = make(kubeconfig, tmp_path).run(probes(tmp_path, "p001"))
    assert result.exit_code == 0
    lists = [
        c for c in cluster.batch.list_namespaced_job.call_args_list if not c.kwargs.get("watch")
    ]
    assert len(lists) == 3  # leftovers of the session, the first list, and the re-list
    versions = [
        c.kwargs["resource_version"] for c in cluster.watch.return_value.stream.call_args_list
    ]
    assert versions[-1] != versions[0]  # resumed from the re-listed version


def test_watch_connection_errors_are_retried(mocker: Any, kubeconfig: Path, tmp_path: Path) -> None:
    import urllib3

    cluster = FakeCluster(mocker, {"p001": complete_steps()})

    def dropped() -> None:
        raise urllib3.exceptions.ProtocolError("Connection broken: IncompleteRead")

    cluster.stream_hooks = {1: dropped}
    (result,) = make(kubeconfig, tmp_path).run(probes(tmp_path, "p001"))
    assert result.exit_code == 0 and cluster.stream_calls >= 2


# --- API errors -------------------------------------------------------------------------


def test_403_names_the_missing_permission(mocker: Any, kubeconfig: Path, tmp_path: Path) -> None:
    cluster = FakeCluster(mocker, {"p001": complete_steps()})
    cluster.batch.create_namespaced_job.side_effect = api_exception(
        403,
        'jobs.batch is forbidden: User "system:serviceaccount:ns1:clusterbisect" cannot create '
        'resource "jobs" in API group "batch" in the namespace "ns1"',
    )
    with pytest.raises(BackendError) as caught:
        make(kubeconfig, tmp_path).run(probes(tmp_path, "p001"))
    message = caught.value.message
    assert "create jobs.batch in namespace 'ns1'" in message and "system:serviceaccount" in message
    assert caught.value.exit_code == 3


def test_429_and_5xx_are_retried(mocker: Any, kubeconfig: Path, tmp_path: Path) -> None:
    cluster = FakeCluster(mocker, {"p001": complete_steps()})
    create = cluster.create
    outcomes: list[Any] = [
        api_exception(429, "Too many requests", {"Retry-After": "1"}),
        api_exception(503, "unavailable"),
    ]

    def flaky_create(namespace: str, body: dict[str, Any], **kwargs: Any) -> client.V1Job:
        if outcomes:
            raise outcomes.pop(0)
        return create(namespace, body, **kwargs)

    cluster.batch.create_namespaced_job.side_effect = flaky_create
    sleeps: list[float] = []
    runner = make(kubeconfig, tmp_path)
    runner.sleep = sleeps.append
    (result,) = runner.run(probes(tmp_path, "p001"))
    assert result.exit_code == 0
    assert cluster.batch.create_namespaced_job.call_count == 3
    assert sleeps[0] == 1.0  # Retry-After is honoured


def test_retries_give_up_with_a_backend_error(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    cluster = FakeCluster(mocker, {"p001": complete_steps()})
    cluster.batch.create_namespaced_job.side_effect = api_exception(
        500, "etcdserver: request timed out"
    )
    with pytest.raises(BackendError, match="HTTP 500: etcdserver"):
        make(kubeconfig, tmp_path, retries=2).run(probes(tmp_path, "p001"))
    assert cluster.batch.create_namespaced_job.call_count == 3


# --- interruption and cleanup -------------------------------------------------------


def test_ctrl_c_deletes_every_probe_job_then_raises_interrupted(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    cluster = FakeCluster(mocker, {"p001": [RUNNING], "p002": [RUNNING]})

    def ctrl_c() -> None:
        raise KeyboardInterrupt

    cluster.stream_hooks = {1: ctrl_c}
    with pytest.raises(Interrupted) as caught:
        make(kubeconfig, tmp_path).run(probes(tmp_path, "p001", "p002"))
    assert caught.value.exit_code == 130
    assert len(cluster.created) == 2 and sorted(cluster.deleted) == sorted(cluster.created)
    for call in cluster.batch.delete_namespaced_job.call_args_list:
        assert call.kwargs == {"propagation_policy": "Background"}


def test_sigterm_cleans_up_like_ctrl_c(mocker: Any, kubeconfig: Path, tmp_path: Path) -> None:
    cluster = FakeCluster(mocker, {"p001": [RUNNING]})
    cluster.stream_hooks = {2: lambda: os.kill(os.getpid(), signal.SIGTERM)}
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted):
        make(kubeconfig, tmp_path).run(probes(tmp_path, "p001"))
    assert cluster.deleted == list(cluster.created)
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is restored


def test_an_error_mid_run_still_deletes_the_jobs(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    cluster = FakeCluster(mocker, {"p001": [RUNNING]})
    cluster.core.list_namespaced_pod.side_effect = api_exception(
        403, 'pods is forbidden: cannot list resource "pods"'
    )
    with pytest.raises(BackendError, match="list pods in namespace 'ns1'"):
        make(kubeconfig, tmp_path).run(probes(tmp_path, "p001"))
    assert cluster.deleted == list(cluster.created)


def test_cleanup_deletes_leftovers_by_label(mocker: Any, kubeconfig: Path) -> None:
    batch = autospecced(mocker, "kubernetes.client.BatchV1Api").return_value
    core = autospecced(mocker, "kubernetes.client.CoreV1Api").return_value
    jobs = [
        client.V1Job(
            metadata=client.V1ObjectMeta(name=f"cb-{SESSION}-p00{i}-ab12c", namespace="ns1")
        )
        for i in (1, 2)
    ]
    batch.list_namespaced_job.return_value = client.V1JobList(
        items=jobs, metadata=client.V1ListMeta()
    )
    owned = pod_for("Running")(jobs[0].metadata.name)
    orphan = pod_for("Running")("cb-gone")
    orphan.metadata.owner_references = None
    core.list_namespaced_pod.return_value = client.V1PodList(
        items=[owned, orphan], metadata=client.V1ListMeta()
    )
    core.list_namespaced_config_map.return_value = client.V1ConfigMapList(
        items=[
            client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name=f"cb-{SESSION}-probe-smoke-1a2b3c")
            )
        ],
        metadata=client.V1ListMeta(),
    )
    custom = mocker.patch("kubernetes.client.CustomObjectsApi", autospec=True).return_value
    custom.list_namespaced_custom_object.return_value = {
        "items": [{"metadata": {"name": f"cb-{SESSION}-p003-ab12c"}}]
    }
    options = KubernetesSettings(kubeconfig=str(kubeconfig), retry_base_s=0.0)
    report = cleanup(SESSION, options=options)

    selector = f"app.kubernetes.io/managed-by=clusterbisect,clusterbisect.io/session={SESSION}"
    assert batch.list_namespaced_job.call_args.kwargs["label_selector"] == selector
    assert report["deleted"]["jobs"] == [j.metadata.name for j in jobs]
    assert report["deleted"]["pods"] == [orphan.metadata.name]  # the owned one goes with its Job
    assert report["deleted"]["configmaps"] == [f"cb-{SESSION}-probe-smoke-1a2b3c"]
    assert report["deleted"]["rayjobs"] == [f"cb-{SESSION}-p003-ab12c"]
    assert custom.list_namespaced_custom_object.call_args.kwargs["label_selector"] == selector
    # Where the cluster has no RayJob CRD, there is nothing of that kind to clean.
    custom.list_namespaced_custom_object.side_effect = api_exception(404, "not found")
    assert cleanup(SESSION, options=options)["deleted"]["rayjobs"] == []
    for call in batch.delete_namespaced_job.call_args_list:
        assert call.kwargs["propagation_policy"] == "Background"
    everything = cleanup(None, options=options)
    assert everything["selector"] == "app.kubernetes.io/managed-by=clusterbisect"


def test_probe_configmap_is_created_once_and_deleted_on_close(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    cluster = FakeCluster(mocker, {"p001": complete_steps(), "p002": complete_steps()})
    probes_dir = tmp_path / "probes"
    probes_dir.mkdir()
    (probes_dir / "smoke.py").write_text("print('ok')\n")
    runner = make(kubeconfig, tmp_path, probe="smoke", probes_dir=str(probes_dir))
    runner.run(probes(tmp_path, "p001"))
    runner.run(probes(tmp_path, "p002"))
    assert cluster.core.create_namespaced_config_map.call_count == 1
    name = cluster.core.create_namespaced_config_map.call_args.args[1]["metadata"]["name"]
    volumes = [b["spec"]["template"]["spec"]["volumes"] for b in cluster.created.values()]
    assert all({"name": render.PROBE_VOLUME, "configMap": {"name": name}} in v for v in volumes)
    runner.close()
    assert cluster.core.delete_namespaced_config_map.call_args.args[:2] == (name, "ns1")


# --- dry runs -----------------------------------------------------------------------


def test_server_dry_run_sends_dry_run_all_and_reports_rejections(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    cluster = FakeCluster(mocker, {"p001": complete_steps(), "p002": complete_steps()})
    answers: list[Any] = [
        None,
        api_exception(403, 'jobs.batch "x" is forbidden: exceeded quota: gpu-quota'),
    ]

    def create(namespace: str, body: dict[str, Any], **kwargs: Any) -> Any:
        answer = answers.pop(0)
        if answer is not None:
            raise answer
        return client.V1Job(metadata=client.V1ObjectMeta(name=body["metadata"]["name"]))

    cluster.batch.create_namespaced_job.side_effect = create
    runner = make(kubeconfig, tmp_path, dry_run="server")
    plan = runner.dry_run(probes(tmp_path, "p001", "p002"))
    assert all(
        c.kwargs["dry_run"] == "All" for c in cluster.batch.create_namespaced_job.call_args_list
    )
    assert [p["accepted"] for p in plan["probes"]] == [True, False] and not plan["ok"]
    assert "exceeded quota" in plan["probes"][1]["error"]
    assert (tmp_path / "manifests" / "p002.yaml").is_file()
    cluster.watch.return_value.stream.assert_not_called()


# --- connection and live input --------------------------------------------------------


def test_connection_follows_kubectl_conventions(
    kubeconfig: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = connect(str(kubeconfig))
    assert (conn.context, conn.namespace, conn.host) == (
        "kind-clusterbisect",
        "ns1",
        "https://127.0.0.1:6443",
    )
    assert connect(str(kubeconfig), namespace="other").namespace == "other"
    prod = connect(str(kubeconfig), context="prod")
    assert (prod.namespace, prod.host) == ("default", "https://prod.example.com")
    with pytest.raises(InputError, match=r"no context 'nope'.*kind-clusterbisect, prod"):
        connect(str(kubeconfig), context="nope")
    with pytest.raises(InputError, match="kubeconfig file not found"):
        connect(str(tmp_path / "missing"))
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing'}{os.pathsep}{kubeconfig}")
    assert connect().namespace == "ns1"  # $KUBECONFIG lists files like kubectl's
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(BackendError, match="no Kubernetes configuration"):
        connect()


def test_make_runner_never_connects_for_a_client_dry_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    runner = make_runner(RunnerContext(dry_run="client"), KubernetesOptions())
    assert runner.mode == "client"
    runner.close()
    with pytest.raises(InputError, match="--dry-run"):
        make_runner(RunnerContext(dry_run="maybe"), KubernetesOptions())
    # The connection part of the options is what cleanup needs; tuning gets defaults.
    assert make_runner(RunnerContext(), KubeConnection(namespace="x")).options.retries == 5


def test_without_a_kubeconfig_run_fails_before_any_probe_and_cleanup_says_no_dry_run(
    cli: Any, tmp_path: Path
) -> None:
    """A run that launches connects when its runner is made: no "round 1" line first.
    `cleanup` has no dry run, so its error does not offer one."""
    env = {**os.environ, "HOME": str(tmp_path / "home"), "KUBECONFIG": ""}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    good, bad = str(EXAMPLE / "good.yaml"), str(EXAMPLE / "bad.yaml")
    proc = cli("run", good, bad, "--backend", "kubernetes", env=env, expect=3)
    assert "no Kubernetes configuration" in proc.stderr
    assert "round 1" not in proc.stderr and "in flight" not in proc.stderr
    assert "a client --dry-run needs no cluster" in proc.stderr
    proc = cli("cleanup", env=env, expect=3)
    assert "no Kubernetes configuration" in proc.stderr and "dry" not in proc.stderr
    # A client dry run still needs no cluster.
    cli("run", good, bad, "--backend", "kubernetes", "--dry-run", env=env, expect=0)


def test_live_input_is_fetched_and_normalised(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    batch = autospecced(mocker, "kubernetes.client.BatchV1Api").return_value
    manifest = yaml.safe_load((EXAMPLE / "good.yaml").read_text())
    job = client.ApiClient()._ApiClient__deserialize(manifest, "V1Job")  # what the API returns
    batch.read_namespaced_job.return_value = job
    conn = connect(str(kubeconfig))

    spec = load_live_spec("k8s://ml-training/job/bert-finetune-nightly-29926200", conn)
    assert batch.read_namespaced_job.call_args.args == (
        "bert-finetune-nightly-29926200",
        "ml-training",
    )
    assert (
        spec.kind == "Job" and spec.source == "k8s://ml-training/job/bert-finetune-nightly-29926200"
    )
    assert "status" not in spec.document and "uid" not in spec.document.get("metadata", {})
    assert spec.document == load_spec(str(EXAMPLE / "good.yaml")).document

    load_live_spec("jobs.batch/bert-finetune-nightly-29926200", conn)
    assert batch.read_namespaced_job.call_args.args[1] == "ns1"  # the context's namespace
    batch.read_namespaced_job.side_effect = api_exception(404, 'jobs.batch "nope" not found')
    with pytest.raises(InputError, match="not found in namespace 'ns1'"):
        load_live_spec("job/nope", conn)
    assert is_live_ref("job/nightly") and is_live_ref("k8s://ns/pytorchjob/x")
    assert not is_live_ref(str(EXAMPLE / "good.yaml")) and not is_live_ref("foo/bar")


def test_render_in_server_mode_fails_on_a_rejected_probe(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    cluster = FakeCluster(mocker, {"p001": complete_steps()})
    runner = make(kubeconfig, tmp_path, dry_run="server")
    (probe,) = probes(tmp_path, "p001")
    assert runner.render(probe)["kind"] == "Job"
    assert cluster.batch.create_namespaced_job.call_args.kwargs["dry_run"] == "All"
    cluster.batch.create_namespaced_job.side_effect = api_exception(
        422, 'Job.batch "x" is invalid: spec.template.spec.containers[0].image: Required value'
    )
    with pytest.raises(BackendError, match=r"server dry run rejected probe p001: .*Required value"):
        runner.render(probe)
    assert cluster.created == {}  # nothing was ever really created


def test_the_example_incident_is_bisected_through_the_cli(
    mocker: Any, kubeconfig: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Engine, runner and CLI together: the mocked cluster fails a probe exactly when
    the workload would (TORCH_FORCE_WEIGHTS_ONLY_LOAD=1 reaches the trainer)."""
    from clusterbisect.cli import main

    def workload(body: dict[str, Any]) -> tuple[list[Step], str]:
        trainer = body["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in trainer.get("env", [])}
        if env.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD") == "1":
            return failed_steps(1, "Error"), "_pickle.UnpicklingError: Weights only load failed.\n"
        return complete_steps(), "final eval ndcg@10=0.712\n"

    cluster = FakeCluster(mocker, {}, decide=workload)
    state = tmp_path / "state"
    code: Any = 0
    try:
        main(
            [
                "run",
                str(EXAMPLE / "good.yaml"),
                str(EXAMPLE / "bad.yaml"),
                "--backend",
                "kubernetes",
                "--kubeconfig",
                str(kubeconfig),
                "--fail-on",
                "Weights only load failed",
                "--parallel",
                "2",
                "--state-dir",
                str(state),
                "--json",
                "--quiet",
            ]
        )
    except SystemExit as stop:  # exit 1 or 3 would mean no culprit or an error
        code = stop.code
    assert code in (0, None)
    result = json.loads(capsys.readouterr().out)
    assert result["status"] == "found"
    assert [[c["key"] for c in k["changes"]] for k in result["culprits"]] == [
        ["containers[trainer].env.TORCH_FORCE_WEIGHTS_ONLY_LOAD"]
    ]
    assert result["probe_count"] == len(cluster.created) <= 16
    assert sorted(cluster.deleted) == sorted(cluster.created)  # nothing left behind
    # The job's checkpoint and cache PVCs were mounted read-only, and the report says so.
    notes = "\n".join(result["notes"])
    assert "volume checkpoints (PVC checkpoints-search-relevance): mounted read-only" in notes
    assert "--allow-shared-volumes" in notes
    for body in cluster.created.values():
        volumes = {v["name"]: v for v in body["spec"]["template"]["spec"]["volumes"]}
        assert volumes["checkpoints"]["persistentVolumeClaim"]["readOnly"] is True
        mounts = body["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        assert all(m["readOnly"] for m in mounts if m["name"] != "dshm")


# --- a probe's Secret -----------------------------------------------------------------

TOKEN = "hf_probe_token_1a2b3c4d5e6f"


def secret_probes(tmp_path: Path, *ids: str) -> list[Probe]:
    """Probes of the example whose trainer gets a secret env value and a --token flag."""
    spec = load_spec(str(EXAMPLE / "good.yaml"))
    trainer = spec.document["spec"]["template"]["spec"]["containers"][0]
    trainer["env"].append({"name": "HF_TOKEN", "value": TOKEN})
    trainer["args"] = ["--epochs", "3", f"--token={TOKEN}"]
    made = probes(tmp_path, *ids)
    for probe in made:
        probe.spec = spec
    return made


def secret_calls(cluster: FakeCluster, order: list[str]) -> dict[str, dict[str, Any]]:
    """Record Secret creations (bodies by name) and the order of the creations."""
    created: dict[str, dict[str, Any]] = {}

    def create_secret(namespace: str, body: dict[str, Any], **kwargs: Any) -> client.V1Secret:
        created[body["metadata"]["name"]] = body
        order.append("Secret")
        return client.V1Secret(metadata=client.V1ObjectMeta(name=body["metadata"]["name"]))

    create_job = cluster.batch.create_namespaced_job.side_effect

    def job_then_record(namespace: str, body: dict[str, Any], **kwargs: Any) -> client.V1Job:
        order.append("Job")
        return create_job(namespace, body, **kwargs)

    cluster.core.create_namespaced_secret.side_effect = create_secret
    cluster.batch.create_namespaced_job.side_effect = job_then_record
    return created


def test_a_probes_secret_is_made_before_its_job_owned_by_it_and_deleted_with_it(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    cluster = FakeCluster(mocker, {"p001": complete_steps()}, logs={"p001": f"got {TOKEN}\n"})
    order: list[str] = []
    secrets = secret_calls(cluster, order)
    (result,) = make(kubeconfig, tmp_path).run(secret_probes(tmp_path, "p001"))
    assert result.exit_code == 0 and order == ["Secret", "Job"]
    (job_name, job), (secret_name, secret) = *cluster.created.items(), *secrets.items()
    assert secret_name == job_name
    # The Job sent to the cluster holds no secret; its Secret holds both values.
    assert TOKEN not in json.dumps(job)
    assert sorted(secret["stringData"].values()) == sorted([TOKEN, f"--token={TOKEN}"])
    trainer = job["spec"]["template"]["spec"]["containers"][0]
    assert trainer["args"] == ["--epochs", "3", "$(CLUSTERBISECT_SECRET_0)"]
    # The Job owns it (garbage-collected with it), and it is deleted with the probe.
    (patch,) = cluster.core.patch_namespaced_secret.call_args_list
    assert patch.args[:2] == (secret_name, "ns1")
    assert patch.args[2]["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": job_name, "uid": "u-" + job_name}
    ]
    (deleted,) = cluster.core.delete_namespaced_secret.call_args_list
    assert deleted.args[:2] == (secret_name, "ns1")
    # The raw log holds what the workload printed: it is readable by its owner only.
    assert (tmp_path / "logs" / "p001.log").stat().st_mode & 0o777 == 0o600


def test_ctrl_c_deletes_the_probes_secrets_with_their_jobs(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    cluster = FakeCluster(mocker, {"p001": [RUNNING], "p002": [RUNNING]})
    secrets = secret_calls(cluster, [])

    def ctrl_c() -> None:
        raise KeyboardInterrupt

    cluster.stream_hooks = {1: ctrl_c}
    with pytest.raises(Interrupted):
        make(kubeconfig, tmp_path).run(secret_probes(tmp_path, "p001", "p002"))
    deleted = [c.args[0] for c in cluster.core.delete_namespaced_secret.call_args_list]
    assert len(secrets) == 2 and sorted(deleted) == sorted(secrets)


def test_a_job_that_cannot_be_created_takes_its_secret_back(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    cluster = FakeCluster(mocker, {"p001": [RUNNING]})
    secrets = secret_calls(cluster, [])
    cluster.batch.create_namespaced_job.side_effect = api_exception(403, "jobs is forbidden")
    with pytest.raises(BackendError, match="forbidden"):
        make(kubeconfig, tmp_path).run(secret_probes(tmp_path, "p001"))
    deleted = [c.args[0] for c in cluster.core.delete_namespaced_secret.call_args_list]
    assert deleted == list(secrets) and len(deleted) == 1


# --- RayJob probes ---------------------------------------------------------------------


class FakeKubeRay:
    """A RayJob CRD behind an autospec'd CustomObjectsApi (a wrong argument fails), and
    KubeRay's statuses and submitter pods as a script per probe."""

    def __init__(self, mocker: Any, statuses: dict[str, list[dict[str, str]]], crd: bool = True):
        self.statuses = statuses
        self.created: dict[str, dict[str, Any]] = {}
        self.deleted: list[str] = []
        self.polls: dict[str, int] = {}
        self.custom = autospecced(mocker, "kubernetes.client.CustomObjectsApi").return_value
        self.core = autospecced(mocker, "kubernetes.client.CoreV1Api").return_value
        self.batch = autospecced(mocker, "kubernetes.client.BatchV1Api").return_value
        self.auth = allow_access_reviews(mocker)
        # What a resumed run would sweep first: here, nothing of the session is left.
        self.batch.list_namespaced_job.return_value = client.V1JobList(
            items=[], metadata=client.V1ListMeta()
        )
        self.core.list_namespaced_config_map.return_value = client.V1ConfigMapList(
            items=[], metadata=client.V1ListMeta()
        )
        self.custom.list_namespaced_custom_object.return_value = {"items": []}
        resources = [
            client.V1APIResource(
                name="rayjobs",
                kind="RayJob",
                namespaced=True,
                singular_name="rayjob",
                verbs=["create"],
            )
        ]
        if crd:
            self.custom.get_api_resources.return_value = client.V1APIResourceList(
                group_version="ray.io/v1", resources=resources
            )
        else:
            self.custom.get_api_resources.side_effect = api_exception(
                404, "the server could not find the requested resource"
            )
        self.custom.create_namespaced_custom_object.side_effect = self.create
        self.custom.get_namespaced_custom_object.side_effect = self.get
        self.custom.delete_namespaced_custom_object.side_effect = self.delete
        self.core.list_namespaced_pod.side_effect = self.pods
        self.core.read_namespaced_pod_log.side_effect = self.log

    def create(
        self, group: str, version: str, namespace: str, plural: str, body: Any, **kw: Any
    ) -> Any:
        assert (group, version, plural) == ("ray.io", "v1", "rayjobs")
        assert kw["field_validation"] == "Strict"
        if kw.get("dry_run") != "All":
            self.created[body["metadata"]["name"]] = body
        return body

    def probe(self, name: str) -> str:
        return str(self.created[name]["metadata"]["labels"][render.LABEL_PROBE])

    def get(
        self, group: str, version: str, namespace: str, plural: str, name: str, **kw: Any
    ) -> Any:
        script = self.statuses[self.probe(name)]
        tick = self.polls[name] = self.polls.get(name, -1) + 1
        return {**self.created[name], "status": script[min(tick, len(script) - 1)]}

    def delete(
        self, group: str, version: str, namespace: str, plural: str, name: str, **kw: Any
    ) -> Any:
        assert kw["propagation_policy"] == "Background"
        self.deleted.append(name)
        return {}

    def log(self, name: str, namespace: str, **kw: Any) -> Any:
        """The submitter's log, streamed as the real client streams it."""
        import io

        import urllib3

        assert kw["container"] == "ray-job-submitter" and kw["_preload_content"] is False
        text = f"log of {name}: Job 'raysubmit_1' failed\n".encode()
        return urllib3.HTTPResponse(body=io.BytesIO(text), preload_content=False, status=200)

    def pods(self, namespace: str, **kw: Any) -> client.V1PodList:
        selector = kw["label_selector"]
        if not selector.startswith("ray.io/originated-from-cr-name="):  # the sweep
            return client.V1PodList(items=[], metadata=client.V1ListMeta())
        name = selector.split("=", 1)[1]
        pod = client.V1Pod(
            metadata=client.V1ObjectMeta(name=f"{name}-submit", creation_timestamp=T0)
        )
        return client.V1PodList(items=[pod], metadata=client.V1ListMeta())


def rayjob_probes(tmp_path: Path, *ids: str) -> list[Probe]:
    spec = load_spec(str(Path(__file__).parent / "fixtures" / "k8s" / "rayjob.yaml"))
    return [
        Probe(
            probe_id=pid,
            session_id=SESSION,
            spec=spec,
            changes=[],
            log_path=tmp_path / "logs" / f"{pid}.log",
            timeout_s=600,
        )
        for pid in ids
    ]


def rayjob_runner(
    kubeconfig: Path, tmp_path: Path, probes: list[Probe], **options: Any
) -> KubernetesRunner:
    settings = {"kubeconfig": str(kubeconfig), "poll_s": 0.0, "retry_base_s": 0.0, **options}
    context = RunnerContext(session_id=SESSION, good=probes[0].spec)
    return KubernetesRunner(context, KubernetesSettings(**settings), sleep=lambda s: None)


RUNNING_RAY = {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING"}


def test_rayjob_probes_are_created_strictly_followed_and_deleted(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    kuberay = FakeKubeRay(
        mocker,
        {
            "p001": [RUNNING_RAY, {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}],
            "p002": [
                RUNNING_RAY,
                RUNNING_RAY,
                {"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "reason": "AppFailed"},
            ],
        },
    )
    batch = rayjob_probes(tmp_path, "p001", "p002")
    runner = rayjob_runner(kubeconfig, tmp_path, batch, namespace="ns1")
    results = runner.run(batch)
    assert [r.exit_code for r in results] == [0, 1]
    assert "Job 'raysubmit_1' failed" in results[1].output
    assert (tmp_path / "logs" / "p002.log").read_text() == results[1].output
    assert sorted(kuberay.deleted) == sorted(kuberay.created)  # each deleted when done
    body = next(iter(kuberay.created.values()))
    assert body["spec"]["shutdownAfterJobFinishes"] is True
    assert kuberay.core.list_namespaced_pod.call_args.kwargs["label_selector"].startswith(
        "ray.io/originated-from-cr-name="
    )
    assert results[1].details["rayjob"] in kuberay.created


def test_rayjob_probes_without_the_crd_name_the_ray_backend(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    kuberay = FakeKubeRay(mocker, {}, crd=False)
    batch = rayjob_probes(tmp_path, "p001")
    with pytest.raises(InputError, match=r"no RayJob CRD.*--backend ray") as caught:
        rayjob_runner(kubeconfig, tmp_path, batch).run(batch)
    assert caught.value.message.startswith(str(batch[0].spec.source))
    assert not kuberay.created
    server = rayjob_runner(kubeconfig, tmp_path, batch)
    server.mode = "server"
    with pytest.raises(InputError, match="--backend ray"):
        server.render(batch[0])


def test_ctrl_c_deletes_probe_rayjobs(mocker: Any, kubeconfig: Path, tmp_path: Path) -> None:
    kuberay = FakeKubeRay(mocker, {"p001": [RUNNING_RAY], "p002": [RUNNING_RAY]})
    calls = {"n": 0}

    def interrupt(seconds: float) -> None:
        calls["n"] += 1
        raise KeyboardInterrupt

    batch = rayjob_probes(tmp_path, "p001", "p002")
    runner = rayjob_runner(kubeconfig, tmp_path, batch)
    runner.sleep = interrupt
    with pytest.raises(Interrupted):
        runner.run(batch)
    assert len(kuberay.created) == 2 and sorted(kuberay.deleted) == sorted(kuberay.created)


def test_a_rayjob_past_our_deadline_is_a_timeout_and_deleted(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    kuberay = FakeKubeRay(mocker, {"p001": [{"jobDeploymentStatus": "Initializing"}]})
    now = [0.0]

    def later(seconds: float) -> None:
        now[0] += 400.0

    batch = rayjob_probes(tmp_path, "p001")
    context = RunnerContext(session_id=SESSION, good=batch[0].spec)
    runner = KubernetesRunner(
        context,
        KubernetesSettings(kubeconfig=str(kubeconfig), poll_s=0.0, retry_base_s=0.0),
        clock=lambda: now[0],
        sleep=later,
    )
    (result,) = runner.run(batch)
    assert result.timed_out and result.exit_code is None
    assert kuberay.deleted == list(kuberay.created)


# --- where probes go ---------------------------------------------------------------------


def test_probes_go_to_the_source_namespace_when_it_exists_and_is_allowed(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    """The example's Job is in ml-training; the kubeconfig context's namespace is ns1."""
    core = mocker.patch("kubernetes.client.CoreV1Api", autospec=True).return_value
    auth = allow_access_reviews(mocker)
    good = load_spec(str(EXAMPLE / "good.yaml"))

    def runner(**options: Any) -> KubernetesRunner:
        context = RunnerContext(session_id=SESSION, good=good)
        settings = KubernetesSettings(kubeconfig=str(kubeconfig), retry_base_s=0.0, **options)
        return KubernetesRunner(context, settings, sleep=lambda s: None)

    there = runner()
    assert there.namespace() == "ml-training"
    assert there.fidelity().target == "namespace 'ml-training' (the source's)"
    review = auth.create_self_subject_access_review.call_args.args[0]
    assert review["spec"]["resourceAttributes"] == {
        "namespace": "ml-training",
        "verb": "create",
        "group": "batch",
        "resource": "jobs",
    }

    auth.create_self_subject_access_review.return_value.status.allowed = False
    refused = runner()
    assert refused.namespace() == "ns1"
    assert refused.fidelity().target == (
        "namespace 'ns1' (the context's; no permission to create jobs in the source's "
        "namespace 'ml-training')"
    )

    core.read_namespace.side_effect = api_exception(404, 'namespaces "ml-training" not found')
    gone = runner()
    assert gone.namespace() == "ns1"
    assert "does not exist here" in gone.fidelity().target
    assert runner(namespace="probes").fidelity().target == "namespace 'probes' (-n)"
