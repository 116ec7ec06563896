"""The Kubernetes runner where a cluster misbehaves: evictions, lost create responses,
pods stuck for every reason, a watch that keeps expiring, an API server that goes
away, unknown fields, leftovers of a killed run, and `cleanup` in a shared namespace.

Against the autospecced client of k8s_fake.py; tests/cluster/test_live_backend.py
shows each of these on the real control plane.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import urllib3
import yaml
from k8s_fake import (
    EXAMPLE,
    RUNNING,
    SESSION,
    T0,
    FakeCluster,
    Step,
    api_exception,
    complete_steps,
    container,
    make,
    pod_for,
    probes,
    terminated,
    waiting,
    write_kubeconfig,
)
from kubernetes import client

from clusterbisect.diff import diff
from clusterbisect.errors import BackendError, InputError
from clusterbisect.outcome import FailureSignature, Outcome
from clusterbisect.runners.base import RunnerContext
from clusterbisect.runners.kubernetes import KubernetesRunner, KubernetesSettings, render
from clusterbisect.runners.kubernetes.client import Api, Connection
from clusterbisect.specs import load_spec, parse_spec


@pytest.fixture
def kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return write_kubeconfig(tmp_path, monkeypatch)


def ticking(cluster: FakeCluster, clock: list[float], step_s: float = 10.0) -> None:
    """Each watch advances the clock by ``step_s``."""
    cluster.stream_hooks = {
        i: (lambda: clock.__setitem__(0, clock[0] + step_s)) for i in range(1, 200)
    }


def event(reason: str, message: str, kind: str = "Pod") -> client.CoreV1Event:
    return client.CoreV1Event(
        metadata=client.V1ObjectMeta(name=f"e-{reason}"),
        involved_object=client.V1ObjectReference(kind=kind),
        reason=reason,
        message=message,
        type="Warning",
        last_timestamp=T0,
    )


def disrupted_pod(phase: str = "Failed") -> Any:
    return pod_for(
        phase,
        [container("trainer", **terminated(143, "Error"))],
        [
            client.V1PodCondition(
                type="DisruptionTarget", status="True", reason="EvictionByEvictionAPI"
            )
        ],
        suffix="first",
    )


# --- preemption -----------------------------------------------------------------------


def test_an_evicted_probe_waits_for_its_replacement_and_counts_once(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    replacement = "second"
    running_again = pod_for(
        "Running",
        [container("trainer", running=client.V1ContainerStateRunning(started_at=T0))],
        suffix=replacement,
    )
    script = [
        RUNNING,
        Step(pod=disrupted_pod()),  # evicted: terminating, no replacement yet
        Step(),  # gone, and the Job controller has not made the next one yet
        Step(),
        Step(pod=running_again),
        Step(
            [("SuccessCriteriaMet", "CompletionsReached"), ("Complete", "CompletionsReached")],
            pod_for(
                "Succeeded",
                [container("trainer", **terminated(0, "Completed"))],
                suffix=replacement,
            ),
        ),
    ]
    cluster = FakeCluster(mocker, {"p001": script}, logs={"p001": "done\n"})
    clock = [0.0]
    ticking(cluster, clock)
    runner = make(kubeconfig, tmp_path, clock=clock, pending_grace_s=35.0)
    (result,) = runner.run(probes(tmp_path, "p001"))
    # Not "no pod was created" (the probe is older than the grace): the Job ran it again.
    assert (result.exit_code, result.infra_error) == (0, None)
    assert result.details["disruptions"] == {
        f"{next(iter(cluster.created))}-first": "EvictionByEvictionAPI"
    }
    assert result.details["pod"].endswith(replacement) and result.output == "done\n"
    assert len(cluster.created) == 1  # one Job: the search sees one result


# --- creating -----------------------------------------------------------------------


def test_a_create_whose_answer_is_lost_adopts_the_job_it_made(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    cluster = FakeCluster(mocker, {"p001": complete_steps()})
    create = cluster.create
    calls: list[str] = []

    def lost_answer(namespace: str, body: dict[str, Any], **kwargs: Any) -> Any:
        calls.append(body["metadata"]["name"])
        made = create(namespace, body, **kwargs)  # 409 on the retry: it exists
        if len(calls) == 1:
            raise urllib3.exceptions.ProtocolError("Connection aborted.", ConnectionResetError())
        return made

    cluster.batch.create_namespaced_job.side_effect = lost_answer
    (result,) = make(kubeconfig, tmp_path).run(probes(tmp_path, "p001"))
    assert result.exit_code == 0 and result.details["adopted"] is True
    assert calls[0] == calls[1] and len(cluster.created) == 1
    kwargs = cluster.batch.create_namespaced_job.call_args.kwargs
    assert kwargs["field_validation"] == "Strict" and kwargs["_request_timeout"] == 60.0


def test_a_create_that_times_out_every_time_still_finds_its_job(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    cluster = FakeCluster(mocker, {"p001": complete_steps()})
    create = cluster.create

    def made_but_timed_out(namespace: str, body: dict[str, Any], **kwargs: Any) -> Any:
        if body["metadata"]["name"] not in cluster.created:
            create(namespace, body, **kwargs)
        raise urllib3.exceptions.ReadTimeoutError(None, "/apis/batch/v1", "Read timed out.")

    cluster.batch.create_namespaced_job.side_effect = made_but_timed_out
    (result,) = make(kubeconfig, tmp_path, retries=1).run(probes(tmp_path, "p001"))
    assert result.exit_code == 0 and result.details["adopted"] is True
    assert len(cluster.created) == 1


def test_a_real_name_clash_gets_a_fresh_name(mocker: Any, kubeconfig: Path, tmp_path: Path) -> None:
    cluster = FakeCluster(mocker, {"p001": complete_steps(), "other": complete_steps()})
    mocker.patch.object(render, "random_suffix", side_effect=["clash1", "fresh2"])
    clash = render.job_name(SESSION, "p001", "clash1")
    cluster.created[clash] = {"metadata": {"labels": {render.LABEL_PROBE: "other"}}}
    cluster.probe_of[clash] = "other"
    (result,) = make(kubeconfig, tmp_path).run(probes(tmp_path, "p001"))
    assert result.exit_code == 0 and "adopted" not in result.details
    assert result.details["job"] == render.job_name(SESSION, "p001", "fresh2")


# --- stuck pods -----------------------------------------------------------------------


def creating_pod() -> Any:
    return pod_for("Pending", [container("trainer", **waiting("ContainerCreating"))])


@pytest.mark.parametrize(
    ("job_events", "reason", "grace"),
    [
        (
            'pods "p" is forbidden: exceeded quota: gpu-quota, requested: '
            "nvidia.com/gpu=1, used: nvidia.com/gpu=8, limited: nvidia.com/gpu=8",
            "ExceededQuota",
            "pending_grace_s",
        ),
        (
            'pods "p" is forbidden: violates PodSecurity "restricted:latest": runAsNonRoot != true',
            "PodSecurity",
            "image_pull_grace_s",
        ),
        (
            'pods "p" is forbidden: error looking up service account ns1/trainer: '
            'serviceaccount "trainer" not found',
            "ServiceAccountMissing",
            "image_pull_grace_s",
        ),
    ],
)
def test_a_pod_the_job_cannot_create_is_unresolved_with_the_reason(
    mocker: Any, kubeconfig: Path, tmp_path: Path, job_events: str, reason: str, grace: str
) -> None:
    cluster = FakeCluster(mocker, {"p001": [Step()]})
    clock = [0.0]
    ticking(cluster, clock)
    create = cluster.create

    def with_events(namespace: str, body: dict[str, Any], **kwargs: Any) -> Any:
        made = create(namespace, body, **kwargs)
        name = body["metadata"]["name"]
        cluster.events[name] = [event("FailedCreate", f"Error creating: {job_events}", "Job")]
        return made

    cluster.batch.create_namespaced_job.side_effect = with_events
    graces = {"pending_grace_s": 300.0, "image_pull_grace_s": 300.0, grace: 40.0}
    (result,) = make(kubeconfig, tmp_path, clock=clock, **graces).run(probes(tmp_path, "p001"))
    assert result.reason == reason and job_events in (result.infra_error or "")
    assert 40.0 <= result.duration_s <= 70.0  # after its grace, not the hour's deadline
    assert FailureSignature().classify(result) is Outcome.UNRESOLVED


def test_a_volume_that_does_not_mount_is_unresolved_with_the_kubelets_message(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    cluster = FakeCluster(mocker, {"p001": [Step(pod=creating_pod())]})
    clock = [0.0]
    ticking(cluster, clock)
    message = 'MountVolume.SetUp failed for volume "cfg" : configmap "train-config" not found'
    create = cluster.create

    def with_events(namespace: str, body: dict[str, Any], **kwargs: Any) -> Any:
        made = create(namespace, body, **kwargs)
        cluster.events[f"{body['metadata']['name']}-x7k2p"] = [event("FailedMount", message)]
        return made

    cluster.batch.create_namespaced_job.side_effect = with_events
    runner = make(kubeconfig, tmp_path, clock=clock, mount_grace_s=30.0)
    (result,) = runner.run(probes(tmp_path, "p001"))
    assert result.reason == "FailedMount" and message in (result.infra_error or "")


def test_a_slow_container_creation_without_failed_mounts_is_waited_for(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    slow = [Step(pod=creating_pod())] * 6 + complete_steps()
    cluster = FakeCluster(mocker, {"p001": slow})
    clock = [0.0]
    ticking(cluster, clock)
    (result,) = make(kubeconfig, tmp_path, clock=clock, mount_grace_s=10.0).run(
        probes(tmp_path, "p001")
    )
    assert result.exit_code == 0  # a big image pull is not a stuck pod


def test_a_scheduling_gated_pod_is_unresolved_after_the_pending_grace(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    gated = pod_for(
        "Pending",
        None,
        [
            client.V1PodCondition(
                type="PodScheduled",
                status="False",
                reason="SchedulingGated",
                message="Scheduling is blocked due to non-empty scheduling gates",
            )
        ],
        node=None,
    )
    cluster = FakeCluster(mocker, {"p001": [Step(pod=gated)]})
    clock = [0.0]
    ticking(cluster, clock)
    (result,) = make(kubeconfig, tmp_path, clock=clock, pending_grace_s=30.0).run(
        probes(tmp_path, "p001")
    )
    assert result.reason == "SchedulingGated" and "scheduling gates" in (result.infra_error or "")


def test_without_events_a_missing_pod_still_ends_after_the_grace(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    cluster = FakeCluster(mocker, {"p001": [Step()]})
    cluster.core.list_namespaced_event.side_effect = api_exception(403, "events is forbidden")
    clock = [0.0]
    ticking(cluster, clock)
    (result,) = make(kubeconfig, tmp_path, clock=clock, pending_grace_s=30.0).run(
        probes(tmp_path, "p001")
    )
    assert result.reason == "NoPod" and "no pod was created" in (result.infra_error or "")
    assert cluster.core.list_namespaced_event.call_count == 1  # asked once, then not again


def test_a_job_suspended_for_admission_waits_in_its_queue(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    queued = [Step(suspended=True)] * 5 + complete_steps()
    cluster = FakeCluster(mocker, {"p001": queued})
    clock = [0.0]
    ticking(cluster, clock)
    (result,) = make(kubeconfig, tmp_path, clock=clock, pending_grace_s=10.0).run(
        probes(tmp_path, "p001")
    )
    assert result.exit_code == 0


# --- the watch and the API server ---------------------------------------------------------


def test_repeated_410s_back_off_instead_of_relisting_in_a_loop(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    cluster = FakeCluster(mocker, {"p001": [RUNNING] * 6 + complete_steps()[1:]})

    def gone() -> None:
        raise api_exception(410, "Expired: too old resource version")

    cluster.stream_hooks = {i: gone for i in range(1, 6)}
    runner = make(kubeconfig, tmp_path, retry_base_s=0.5)
    sleeps: list[float] = []
    runner.sleep = sleeps.append
    (result,) = runner.run(probes(tmp_path, "p001"))
    assert result.exit_code == 0
    assert sleeps == [0.5, 1.0, 2.0, 4.0]  # the first 410 re-lists at once
    assert len(cluster.job_lists()) == 1 + 1 + 5  # leftovers, the first list, a re-list each


def test_an_api_server_restart_is_ridden_out(mocker: Any, kubeconfig: Path, tmp_path: Path) -> None:
    cluster = FakeCluster(mocker, {"p001": [RUNNING] * 3 + complete_steps()[1:]})

    def refused() -> None:
        raise urllib3.exceptions.MaxRetryError(None, "/apis", "Connection refused")

    cluster.stream_hooks = {i: refused for i in range(2, 12)}  # ten in a row
    runner = make(kubeconfig, tmp_path, retry_base_s=0.01, retry_window_s=60.0)
    (result,) = runner.run(probes(tmp_path, "p001"))
    assert result.exit_code == 0
    cluster = FakeCluster(mocker, {"p002": [RUNNING] * 3 + complete_steps()[1:]})
    cluster.stream_hooks = {i: refused for i in range(2, 12)}
    with pytest.raises(BackendError, match="lost the watch"):  # no window: 5 retries
        make(kubeconfig, tmp_path, retry_window_s=0.0).run(probes(tmp_path, "p002"))


# --- unknown fields ---------------------------------------------------------------------


def typo_pair(tmp_path: Path) -> tuple[Path, Path]:
    good = yaml.safe_load((EXAMPLE / "good.yaml").read_text())
    bad = yaml.safe_load((EXAMPLE / "good.yaml").read_text())
    bad["spec"]["template"]["spec"]["containers"][0]["envv"] = [{"name": "X", "value": "1"}]
    paths = (tmp_path / "good.yaml", tmp_path / "bad.yaml")
    for path, doc in zip(paths, (good, bad), strict=True):
        path.write_text(yaml.safe_dump(doc))
    return paths


def test_an_unknown_field_is_bad_input_before_any_probe_runs(tmp_path: Path, cli: Any) -> None:
    good, bad = typo_pair(tmp_path)
    done = cli("run", str(good), str(bad), "--backend", "kubernetes", "--dry-run", expect=2)
    assert "containers[trainer].envv: unknown field" in done.stderr
    assert "the Kubernetes API has no such field" in done.stderr
    assert "change containers[trainer].envv of the bad spec" in done.stderr


def test_the_clients_own_validation_becomes_bad_input_not_a_traceback(tmp_path: Path) -> None:
    from kubernetes import client as k8s

    configuration = k8s.Configuration()
    configuration.host = "https://127.0.0.1:9"  # never reached: the client refuses first
    conn = Connection(k8s.ApiClient(configuration), "ns1")
    api = Api(conn, retries=0)
    body = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "cb-x"},
        "spec": {"template": {"spec": {"containers": [{"name": "a", "envv": []}]}}},
    }
    with pytest.raises(
        InputError, match=r"unknown field spec\.template\.spec\.containers\[0\]\.envv"
    ):
        api.create(conn.batch.create_namespaced_job, body, "jobs.batch")
    # A wrong argument of ours is a bug, not bad input: it is not dressed up as one.
    with pytest.raises(ValueError) as caught:
        api.call(
            conn.core.read_namespaced_pod_log,
            "p",
            "ns1",
            tailLines=3,
            verb="get",
            resource="pods/log",
        )
    assert not isinstance(caught.value, InputError)


def test_the_api_servers_strict_rejection_is_bad_input(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    cluster = FakeCluster(mocker, {"p001": complete_steps()})
    cluster.batch.create_namespaced_job.side_effect = api_exception(
        400,
        'Job in version "v1" cannot be handled as a Job: strict decoding error: '
        'unknown field "spec.template.spec.containers[0].envv"',
    )
    with pytest.raises(InputError) as caught:
        make(kubeconfig, tmp_path).run(probes(tmp_path, "p001"))
    assert caught.value.exit_code == 2
    assert caught.value.field == "spec.template.spec.containers[0].envv"


# --- leftovers and cleanup ----------------------------------------------------------------


def test_resume_deletes_the_sessions_leftover_jobs_before_it_goes_on(
    mocker: Any, kubeconfig: Path, tmp_path: Path
) -> None:
    cluster = FakeCluster(mocker, {"p003": complete_steps()})
    leftover = render.job_name(SESSION, "p003", "killed1")
    cluster.created[leftover] = {
        "metadata": {
            "labels": {
                render.LABEL_MANAGED_BY: render.MANAGED_BY,
                render.LABEL_SESSION: SESSION,
                render.LABEL_PROBE: "p003",
            }
        }
    }
    cluster.probe_of[leftover] = "p003"
    order: list[str] = []
    cluster.batch.delete_namespaced_job.side_effect = lambda name, ns, **kw: (
        order.append(f"delete {name}"),
        cluster.delete(name, ns, **kw),
    )[1]
    create = cluster.create
    cluster.batch.create_namespaced_job.side_effect = lambda ns, body, **kw: (
        order.append(f"create {body['metadata']['name']}"),
        create(ns, body, **kw),
    )[1]
    (result,) = make(kubeconfig, tmp_path).run(probes(tmp_path, "p003"))
    assert result.exit_code == 0 and result.details["job"] != leftover
    assert order[0] == f"delete {leftover}" and order[1].startswith("create ")


def cleanup_cli(mocker: Any, kubeconfig: Path, capsys: Any, *args: str) -> tuple[Any, str, str]:
    from clusterbisect.cli import main

    code: Any = 0
    try:
        main(["cleanup", "--kubeconfig", str(kubeconfig), *args])
    except SystemExit as stop:
        code = stop.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cleanup_without_a_session_asks_before_deleting_other_sessions(
    mocker: Any, kubeconfig: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = FakeCluster(mocker, {"p001": [RUNNING], "p002": [RUNNING]})
    for session, probe in (("20261127-alice", "p001"), ("20261127-bob", "p002")):
        name = render.job_name(session, probe)
        cluster.created[name] = {
            "metadata": {
                "labels": {
                    render.LABEL_MANAGED_BY: render.MANAGED_BY,
                    render.LABEL_SESSION: session,
                    render.LABEL_PROBE: probe,
                }
            }
        }
        cluster.probe_of[name] = probe
    mocker.patch("sys.stdin.isatty", return_value=False)  # a script: nobody to ask
    code, _, err = cleanup_cli(mocker, kubeconfig, capsys)
    assert code == 2 and cluster.deleted == []
    assert "2 probe job(s)" in err and "20261127-alice, 20261127-bob" in err and "--all" in err
    code, out, _ = cleanup_cli(mocker, kubeconfig, capsys, "--session", "20261127-bob", "--json")
    assert code in (0, None) and len(json.loads(out)["deleted"]["jobs"]) == 1
    mocker.patch("sys.stdin.isatty", return_value=True)  # a person: asked, and says yes
    mocker.patch("click.confirm", return_value=True)
    code, out, _ = cleanup_cli(mocker, kubeconfig, capsys)
    assert code in (0, None) and "deleted 1 job(s)" in out  # alice's: bob's went before
    code, out, _ = cleanup_cli(mocker, kubeconfig, capsys, "--all", "--json")
    assert code in (0, None) and json.loads(out)["selector"] == render.session_selector()


# --- rendering for the runner ---------------------------------------------------------------


def test_unknown_fields_in_the_good_spec_name_that_spec(tmp_path: Path) -> None:
    good, _ = typo_pair(tmp_path)
    typo = tmp_path / "typo.yaml"
    doc = yaml.safe_load(good.read_text())
    doc["spec"]["template"]["spec"]["nodeSelectr"] = {"pool": "cpu"}
    typo.write_text(yaml.safe_dump(doc))
    spec = load_spec(str(typo))
    runner = KubernetesRunner(RunnerContext(dry_run="client", good=spec), KubernetesSettings())
    with pytest.raises(InputError, match=r"nodeSelectr: unknown field .* good spec"):
        runner.untestable(diff(spec, parse_spec(typo.read_text(), "bad.yaml")))
