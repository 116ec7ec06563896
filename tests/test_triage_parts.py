"""The parts of triage: the exact test, outcomes, sources, joining pods, signatures, priors."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import TRAINER, export, failed_with, job, pod
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterbisect.errors import InputError
from clusterbisect.triage import (
    TriageOptions,
    TriageRequest,
    TriageSourceOptions,
    parse_duration,
    priors_from_result,
    triage,
)
from clusterbisect.triage.jobs import build_fleet, name_stem, workload_of
from clusterbisect.triage.model import Job, Termination
from clusterbisect.triage.outcomes import outcome_of
from clusterbisect.triage.priors import load_priors
from clusterbisect.triage.signatures import failure_of, main_termination, normalise
from clusterbisect.triage.sources import read_path, read_sources
from clusterbisect.triage.stats import fisher_greater_log10, fisher_score

FIXTURES = Path(__file__).parent / "fixtures"

# --- Fisher's exact test ---------------------------------------------------------------


def exact_p(a: int, b: int, c: int, d: int) -> Fraction:
    """P(X >= a), summed exactly with integers."""
    n, failed, with_it = a + b + c + d, a + c, a + b
    top = sum(
        math.comb(failed, x) * math.comb(n - failed, with_it - x)
        for x in range(a, min(with_it, failed) + 1)
    )
    return Fraction(top, math.comb(n, with_it))


def test_fisher_by_hand() -> None:
    # 3 of 4 with it failed, 0 of 4 without: C(3,3) C(5,1) / C(8,4) = 5/70.
    assert fisher_score(3, 1, 0, 4) == pytest.approx(math.log10(14))
    # Nothing to see: the smallest possible count, or a lower rate with it.
    assert fisher_score(0, 10, 10, 0) == 0.0
    assert fisher_score(0, 0, 5, 5) == 0.0
    # Half and half: p = P(X >= 5) for n=10 of N=20 with K=10, a bit over one half.
    assert 10 ** -fisher_score(5, 5, 5, 5) == pytest.approx(float(exact_p(5, 5, 5, 5)))
    with pytest.raises(ValueError, match="negative"):
        fisher_score(-1, 1, 1, 1)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=40), min_size=4, max_size=4))
def test_fisher_matches_the_exact_sum(cells: list[int]) -> None:
    a, b, c, d = cells
    expected = exact_p(a, b, c, d)
    got = 10 ** fisher_greater_log10(a, b, c, d)
    assert got == pytest.approx(float(expected), rel=1e-9)


def test_fisher_stays_finite_on_big_tables() -> None:
    # 5,000 of 5,000 with it failed, none of 95,000 without: p = 1 / C(100000, 5000).
    score = fisher_score(5000, 0, 0, 95000)
    expected = (math.lgamma(100001) - math.lgamma(5001) - math.lgamma(95001)) / math.log(10)
    assert score == pytest.approx(expected, rel=1e-9)
    assert math.isfinite(score) and score > 8000


# --- outcomes --------------------------------------------------------------------------


def conditions(*pairs: tuple[str, str]) -> dict[str, Any]:
    return {"conditions": [{"type": t, "status": s} for t, s in pairs]}


@pytest.mark.parametrize(
    ("kind", "status", "outcome"),
    [
        ("Job", conditions(("Complete", "True")), "succeeded"),
        ("Job", conditions(("SuccessCriteriaMet", "True")), "succeeded"),
        ("Job", conditions(("FailureTarget", "True")), "failed"),
        ("Job", conditions(("Failed", "True"), ("Complete", "False")), "failed"),
        ("Job", {"active": 1, "startTime": "2026-11-20T00:00:00Z"}, "running"),
        ("Job", conditions(("Suspended", "True")), "running"),
        ("Job", {}, "unknown"),
        (
            "PyTorchJob",
            conditions(("Created", "False"), ("Running", "False"), ("Succeeded", "True")),
            "succeeded",
        ),
        ("PyTorchJob", conditions(("Running", "False"), ("Failed", "True")), "failed"),
        ("TFJob", conditions(("Created", "True"), ("Running", "True")), "running"),
        ("MPIJob", conditions(("Restarting", "True")), "running"),
        ("TrainJob", conditions(("Complete", "True")), "succeeded"),
        ("JobSet", conditions(("Completed", "True")), "succeeded"),
        ("JobSet", conditions(("Failed", "True")), "failed"),
        ("RayJob", {"jobStatus": "SUCCEEDED", "jobDeploymentStatus": "Complete"}, "succeeded"),
        ("RayJob", {"jobStatus": "FAILED", "jobDeploymentStatus": "Complete"}, "failed"),
        ("RayJob", {"jobDeploymentStatus": "Failed", "reason": "DeadlineExceeded"}, "failed"),
        ("RayJob", {"jobStatus": "RUNNING", "jobDeploymentStatus": "Running"}, "running"),
        ("RayJob", {"jobStatus": "STOPPED", "jobDeploymentStatus": "Complete"}, "unknown"),
        ("Pod", {"phase": "Failed", "reason": "Evicted"}, "failed"),
        ("Pod", {"phase": "Pending"}, "running"),
    ],
)
def test_outcomes_from_conditions(kind: str, status: dict[str, Any], outcome: str) -> None:
    assert outcome_of({"kind": kind, "status": status}).outcome == outcome


def test_ray_listing_outcomes_and_reasons() -> None:
    verdict = outcome_of(
        {"status": "FAILED", "error_type": "JOB_ENTRYPOINT_COMMAND_ERROR", "message": "exit code 1"}
    )
    assert (verdict.outcome, verdict.reason, verdict.message) == (
        "failed",
        "JOB_ENTRYPOINT_COMMAND_ERROR",
        "exit code 1",
    )
    assert outcome_of({"status": "STOPPED"}).outcome == "unknown"
    assert outcome_of({"status": "JobStatus.SUCCEEDED"}).outcome == "succeeded"
    deadline = outcome_of(
        {
            "kind": "Job",
            "status": {
                "conditions": [
                    {
                        "type": "Failed",
                        "status": "True",
                        "reason": "DeadlineExceeded",
                        "message": "too long",
                    }
                ]
            },
        }
    )
    assert (deadline.reason, deadline.message) == ("DeadlineExceeded", "too long")


# --- sources ---------------------------------------------------------------------------


def two_jobs() -> list[dict[str, Any]]:
    good, bad = job("train-1"), job("train-2", "failed", env={"X": "1"})
    return [good, bad, pod(good), failed_with(bad)]


def test_sources_list_yaml_documents_json_array_typed_list_and_folder(tmp_path: Path) -> None:
    objects = two_jobs()
    as_list = export(tmp_path / "list.json", objects)
    documents = tmp_path / "docs.yaml"
    documents.write_text(yaml.safe_dump_all(objects))
    array = tmp_path / "array.json"
    array.write_text(json.dumps(objects))
    typed = tmp_path / "typed.json"
    items = [{k: v for k, v in o.items() if k != "kind"} for o in objects[:2]]
    typed.write_text(json.dumps({"kind": "JobList", "apiVersion": "batch/v1", "items": items}))
    for path in (as_list, str(documents), str(array)):
        inventory = read_path(path)
        assert (len(inventory.workloads), len(inventory.pods)) == (2, 2), path
    assert [o["kind"] for _, o in read_path(str(typed)).workloads] == ["Job", "Job"]
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "jobs.yaml").write_text(yaml.safe_dump_all(objects[:2]))
    (folder / "pods.json").write_text(json.dumps(objects[2:]))
    (folder / "notes.txt").write_text("not read")
    (folder / "config.yaml").write_text("kind: ConfigMap\napiVersion: v1\n")
    inventory = read_path(str(folder))
    assert (len(inventory.workloads), len(inventory.pods)) == (2, 2)
    assert inventory.skipped == {"ConfigMap": 1}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "file is empty"),
        (b"\x00\x01binary", "binary content"),
        (b'{"kind": "List", "items": [', "invalid JSON"),
        (b"a: [unclosed", "invalid YAML"),
        (b"kind: Deployment\napiVersion: apps/v1\n", r"no jobs found \(only 1 Deployment\)"),
        (b"[1, 2]", r"no jobs found \(no objects\)"),
    ],
)
def test_bad_sources_name_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "export.json"
    path.write_bytes(content)
    with pytest.raises(InputError, match=f"^{path}: {message}"):
        read_path(str(path))


def test_missing_file_and_folder_without_jobs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.json: file not found"):
        read_sources([str(tmp_path / "nope.json")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"empty: no jobs found in the folder \(no \.json"):
        read_path(str(tmp_path / "empty"))


def test_ray_listings_from_the_cli_and_the_sdk(tmp_path: Path) -> None:
    detail = json.loads((FIXTURES / "ray_job_details.json").read_text())
    ok = {
        **detail,
        "submission_id": "raysubmit_ok",
        "status": "SUCCEEDED",
        "driver_exit_code": 0,
        "message": "Job finished successfully.",
    }
    ok["runtime_env"] = {**detail["runtime_env"], "env_vars": {"OMP_NUM_THREADS": "2"}}
    listing = tmp_path / "ray.json"
    copies = [{**d, "submission_id": d["submission_id"] + "2"} for d in (detail, ok)]
    listing.write_text(json.dumps([detail, ok, *copies]))
    fleet = build_fleet(read_path(str(listing)))
    by_name = {j.name: j for j in fleet.jobs}
    failed = by_name["raysubmit_Qd7fZt2sGm1kP9Wx"]
    assert (failed.outcome, failed.exit_code, failed.kind) == ("failed", 1, "RayJobDetails")
    assert failed.workload == "python train.py"
    assert failed.spec is not None and "job_id" not in failed.spec.document
    assert failure_of(failed).raw == "exit 1: Job entrypoint command failed with exit code 1"
    assert by_name["raysubmit_ok"].outcome == "succeeded"
    # The settings are keyed as diff keys them: runtime_env.env_vars.NAME.
    result = triage(TriageRequest([str(listing)])).to_dict()
    assert result["pair"]["changes"] == 3
    top = result["suspects"][0]
    env = "runtime_env.env_vars."
    assert (top["key"], top["value"]) == (env + "HF_TOKEN", "<redacted>")
    assert top["bundle"] == [env + "NCCL_DEBUG", env + "OMP_NUM_THREADS"]
    assert (top["failed"], top["total"]) == (2, 2)


# --- joining pods to jobs --------------------------------------------------------------


def test_pods_join_by_owner_uid_or_by_label_and_bare_pods_are_jobs(tmp_path: Path) -> None:
    a, b = job("train-1", "failed"), job("train-2", "failed")
    by_label = failed_with(b)
    del by_label["metadata"]["ownerReferences"]
    bare = pod(job("solo"), exit_code=3, message="ValueError: bad config", owner_reference=False)
    bare["metadata"]["labels"] = {}
    stray = pod(job("gone", "failed"), exit_code=1)  # its Job is not exported
    fleet = build_fleet(
        read_path(export(tmp_path / "f.json", [a, b, failed_with(a), by_label, bare, stray]))
    )
    by_name = {j.name: j for j in fleet.jobs}
    assert [t.pod for t in by_name["train-1"].terminations] == ["train-1-x7k2p"]
    assert [t.pod for t in by_name["train-2"].terminations] == ["train-2-x7k2p"]
    solo = by_name["solo-x7k2p"]
    assert (solo.kind, solo.outcome, solo.spec is not None) == ("Pod", "failed", True)
    assert failure_of(solo).raw == "exit 3: ValueError: bad config"
    assert fleet.orphan_pods == 1


def test_kubeflow_and_rayjob_pods_join_their_job() -> None:
    pytorch = yaml.safe_load((FIXTURES / "pytorchjob.yaml").read_text())
    pytorch["status"] = {"conditions": [{"type": "Failed", "status": "True"}]}
    meta = pytorch["metadata"]
    worker = {
        "kind": "Pod",
        "metadata": {
            "name": f"{meta['name']}-worker-0",
            "namespace": meta.get("namespace", ""),
            "labels": {"training.kubeflow.org/job-name": meta["name"]},
        },
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {
                    "name": "pytorch",
                    "state": {
                        "terminated": {
                            "exitCode": 134,
                            "reason": "Error",
                            "message": "Aborted (core dumped)",
                        }
                    },
                }
            ],
        },
    }
    rayjob = yaml.safe_load((FIXTURES / "rayjob.yaml").read_text())
    rayjob["metadata"]["uid"] = "rj-uid"
    rayjob["status"] = {"jobStatus": "FAILED", "rayClusterName": "rc-abc12"}
    ns = rayjob["metadata"].get("namespace", "")
    submitter = job("submitter", "failed", namespace=ns)
    submitter["metadata"]["ownerReferences"] = [
        {"kind": "RayJob", "name": rayjob["metadata"]["name"], "uid": "rj-uid", "controller": True}
    ]
    submitter_pod = failed_with(submitter)
    head = {
        "kind": "Pod",
        "metadata": {
            "name": "rc-abc12-head-x2p4k",
            "namespace": ns,
            "labels": {"ray.io/cluster": "rc-abc12"},
        },
        "status": {"phase": "Failed", "reason": "Evicted", "message": "low on memory"},
    }
    from clusterbisect.triage.model import Inventory

    inventory = Inventory(
        workloads=[("f", pytorch), ("f", rayjob), ("f", submitter)],
        pods=[("f", worker), ("f", submitter_pod), ("f", head)],
    )
    fleet = build_fleet(inventory)
    assert sorted(j.kind for j in fleet.jobs) == ["PyTorchJob", "RayJob"]
    assert fleet.child_jobs == 1 and fleet.orphan_pods == 0
    kinds = {j.kind: j for j in fleet.jobs}
    assert [t.exit_code for t in kinds["PyTorchJob"].terminations] == [134]
    assert {t.pod for t in kinds["RayJob"].terminations} == {
        "submitter-x7k2p",
        "rc-abc12-head-x2p4k",
    }
    assert all(j.spec is not None for j in fleet.jobs)


def test_terminations_read_last_state_of_restarted_containers() -> None:
    restarted = {
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "n"},
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": "trainer",
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {
                        "terminated": {"exitCode": 2, "reason": "Error", "message": "boom"}
                    },
                }
            ],
        },
    }
    from clusterbisect.triage.join import terminations

    assert [(t.container, t.exit_code, t.message) for t in terminations(restarted)] == [
        ("trainer", 2, "boom")
    ]


def test_workload_names() -> None:
    assert name_stem("bert-ft-00123-x7k2p") == "bert-ft"
    assert name_stem("llm-train-20261126") == "llm-train"
    assert name_stem("daily") == "daily"
    assert name_stem("7") == "7"
    assert workload_of({"name": "a-1", "labels": {"app": "bert"}}) == "bert"
    assert workload_of({"name": "a-1", "labels": {"app": "bert", "team": "x"}}, "team") == "x"
    assert (
        workload_of(
            {"name": "nightly-28911", "ownerReferences": [{"kind": "CronJob", "name": "nightly"}]}
        )
        == "cronjob/nightly"
    )
    assert workload_of({"name": "x", "generateName": "sweep-"}) == "sweep"


# --- signatures ------------------------------------------------------------------------


def failed_job(*terminations: Termination, **kw: Any) -> Job:
    return Job(
        name="train-7",
        namespace="ml",
        kind="Job",
        source="f",
        outcome="failed",
        terminations=list(terminations),
        **kw,
    )


def test_signatures_mask_what_differs_between_runs() -> None:
    one = (
        "2026-11-20T10:11:12.123Z [rank3] CUDA error at 0x7fa3b2c1d0 on node 10.0.3.7:29500 "
        "(id 3f2a9c81-1b2c-4d5e-8f90-a1b2c3d4e5f6)"
    )
    two = (
        "2026-11-21 08:00:01 [rank12] CUDA error at 0x55b1 on node 10.2.0.1:29500 "
        "(id 0a1b2c3d-1b2c-4d5e-8f90-a1b2c3d4e5f6)"
    )
    assert (
        normalise(one)
        == normalise(two)
        == ("<time> [rank<n>] CUDA error at <hex> on node <ip> (id <id>)")
    )
    assert normalise("worker trainer-5d8f9c7b4-x7k2p died") == "worker <pod> died"
    assert normalise("in train-7 pod", {"train-7"}) == "in <pod> pod"
    assert normalise("commit 3f2a9c8 step 400") == "commit <hex> step <n>"


def test_failure_text_picks_the_error_line_and_keeps_the_exit_code() -> None:
    log = "step 1 ok\nTraceback (most recent call last):\n  File x\nKeyError: 'label'\n\n"
    job_ = failed_job(Termination("train-7-abcde", "trainer", 1, "Error", log))
    assert failure_of(job_).raw == "exit 1: KeyError: 'label'"
    oom = failed_job(Termination("p", "trainer", 137, "OOMKilled"))
    assert failure_of(oom).signature == "OOMKilled exit 137"
    # No termination: the job's own reason and message; a deadline stays visible.
    deadline = failed_job(reason="DeadlineExceeded", message="Job was active longer than 3600s")
    assert failure_of(deadline).signature == ("DeadlineExceeded: Job was active longer than <n>s")
    assert failure_of(failed_job()).raw == "no termination details"


def test_the_crash_is_chosen_over_the_kill_that_followed() -> None:
    crash = Termination("p", "trainer", 1, "Error", "RuntimeError: x", "2026-11-20T10:00:00Z")
    sidecar = Termination("p", "proxy", 143, "Error", None, "2026-11-20T10:00:05Z")
    evicted = Termination("p", "", None, "Evicted", "low memory")
    assert main_termination([sidecar, crash]) == crash
    assert main_termination([evicted]) == evicted
    assert main_termination([]) is None


# --- options and priors ----------------------------------------------------------------


def test_durations() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("1h30m") == 5400
    assert parse_duration("2d") == 172800
    for bad in ("", "soon", "-5m", "5", "0s"):
        with pytest.raises(InputError, match="--since"):
            parse_duration(bad)
    with pytest.raises(InputError, match="--since: expected a duration"):
        TriageSourceOptions(since="yesterday").validate()
    with pytest.raises(InputError, match="--top"):
        TriageOptions(top=0).validate()
    with pytest.raises(InputError, match="--signature: invalid regular expression"):
        TriageOptions(signature="(").validate()


def test_priors_weigh_suspects_and_their_bundles(tmp_path: Path) -> None:
    priors = priors_from_result(
        {
            "suspects": [
                {"key": TRAINER + "env.A", "score": 40.0, "bundle": [TRAINER + "image"]},
                {"key": "containers[sidecar].image", "score": 10.0, "bundle": []},
            ]
        }
    )
    assert priors.weight(TRAINER + "env.A") == priors.weight(TRAINER + "image") == 1.0
    assert priors.weight("containers[sidecar]") == 0.25  # an element: its heaviest setting
    assert priors.weight(TRAINER + "env.B") == 0.0
    assert priors.order([TRAINER + "env.B", "containers[sidecar]", TRAINER + "image"]) == [
        TRAINER + "image",
        "containers[sidecar]",
        TRAINER + "env.B",
    ]
    assert [priors.rank(k) for k in (TRAINER + "image", "containers[sidecar]", "x")] == [1, 2, None]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"suspects": [{"key": "a", "score": "high"}]}))
    with pytest.raises(InputError, match=r"bad.json: suspects\[0\].score: expected a non-negative"):
        load_priors(str(bad))
    bad.write_text("{}")
    with pytest.raises(InputError, match="expected a triage result"):
        load_priors(str(bad))


def test_an_interaction_gives_both_suspects_the_heavier_weight() -> None:
    suspects = [
        {"key": "A", "score": 30.0, "bundle": []},
        {"key": "B", "score": 12.0, "bundle": []},
        {"key": "C", "score": 6.0, "bundle": []},
    ]
    interactions = [
        {"keys": ["A", "B"], "significant": True},
        {"keys": ["A", "C"], "significant": False},
    ]
    priors = priors_from_result({"suspects": suspects, "interactions": interactions})
    assert (priors.weight("A"), priors.weight("B"), priors.weight("C")) == (1.0, 1.0, 0.2)
    with pytest.raises(InputError, match=r"interactions\[0\]: expected an interaction"):
        priors_from_result({"suspects": suspects, "interactions": [{"keys": "A"}]})
