"""The report, from data: an Evidence built by hand (no engine, no session, no files)."""

from __future__ import annotations

from collections.abc import Callable

from clusterbisect.diff import diff
from clusterbisect.journal import ProbeRecord
from clusterbisect.problem import Problem
from clusterbisect.redact import Redactor
from clusterbisect.report import Evidence, build_result, render_markdown, render_text
from clusterbisect.search.base import BASELINE_FAILED, FOUND, Culprit, SearchResult
from clusterbisect.specs import parse_spec

GOOD = "HF_TOKEN=hf_old_s3cr3t\nLR=0.1\nNCCL_ALGO=ring\n"
BAD = "HF_TOKEN=hf_new_s3cr3t\nLR=0.2\nNCCL_ALGO=tree\n"


def problem() -> Problem:
    good, bad = parse_spec(GOOD, "good.env"), parse_spec(BAD, "bad.env")
    changes = diff(good, bad)
    return Problem.split(good, bad, changes, {}, "local")


def redactor() -> Redactor:
    """The session's redactor: every secret of both specs (a fixed fingerprint key)."""
    return Redactor.of_specs(
        [parse_spec(GOOD, "good.env"), parse_spec(BAD, "bad.env")], key=b"session key"
    )


def run(probe_id: str, subset: list[str], outcome: str, purpose: str = "search") -> ProbeRecord:
    observed = "exit code 1, matched: NCCL error" if outcome == "fail" else ""
    return ProbeRecord(
        probe_id, int(probe_id[1:]), subset, outcome, purpose, log=f"logs/{probe_id}.log",
        observed=observed,
    )  # fmt: skip


def evidence(
    search: SearchResult, records: list[ProbeRecord], read_log: Callable[[str], str]
) -> Evidence:
    return Evidence(
        search=search,
        problem=problem(),
        records=records,
        rounds=len(records),
        strategy="bisection",
        signature="output matching /NCCL error/",
        session={
            "state_dir": "/nowhere/state",
            "session_id": "s1",
            "backend": "local",
            "good": "good.env",
            "bad": "bad.env",
        },
        elapsed_s=1.23456,
        read_log=read_log,
        redactor=redactor(),
    )


ALL = ["env.HF_TOKEN", "env.LR", "env.NCCL_ALGO"]


def test_a_found_culprit_with_its_proof_quoted_from_the_log_reader() -> None:
    records = [
        run("p001", [], "pass", "baseline-good"),
        run("p002", ALL, "fail", "baseline-bad"),
        run("p003", ["env.NCCL_ALGO"], "fail", "confirm-good-plus-culprit"),
        run("p004", ["env.HF_TOKEN", "env.LR"], "pass", "confirm-bad-minus-culprits"),
    ]
    logs = {
        # The reader gives the text (no such file exists): the report reads nothing itself.
        "logs/p003.log": "token hf_new_s3cr3t loaded\n" + "x" * 200 + "\nRuntimeError: NCCL error\n"
    }
    index = {c.key: i for i, c in enumerate(problem().testable)}
    culprit = Culprit(
        frozenset({index["env.NCCL_ALGO"]}),
        confirmed=True,
        evidence={"bad_minus_culprits": frozenset({index["env.HF_TOKEN"], index["env.LR"]})},
    )
    result = build_result(
        evidence(SearchResult(FOUND, [culprit]), records, lambda path: logs.get(path, ""))
    )
    assert result["status"] == "found" and result["probe_count"] == 4
    assert result["elapsed_s"] == 1.235 and result["state_dir"] == "/nowhere/state"
    (found,) = result["culprits"]
    assert [c["key"] for c in found["changes"]] == ["env.NCCL_ALGO"]
    assert found["proof"]["probe"] == "p003" and found["proof"]["log"] == "logs/p003.log"
    excerpt = found["proof"]["excerpt"]
    assert excerpt.endswith("RuntimeError: NCCL error") and "hf_new_s3cr3t" not in excerpt
    assert "x" * 157 + "..." in excerpt  # long lines are clipped
    assert found["confirmation"]["bad_minus_culprits"] == {"probe": "p004", "outcome": "pass"}
    assert result["signature"]["observed"] == "exit code 1, matched: NCCL error"
    assert result["candidates"] == [] and result["untestable"] == []
    text = render_text(result)
    assert text.startswith("FOUND: env.NCCL_ALGO") and "Proved by probe p003" in text
    assert "hf_old_s3cr3t" not in text + render_markdown(result)


def test_a_failed_baseline_is_explained_by_its_log() -> None:
    records = [run("p001", [], "fail", "baseline-good")]
    result = build_result(
        evidence(SearchResult(BASELINE_FAILED), records, lambda path: "ImportError: no module x\n")
    )
    assert result["status"] == "baseline_failed" and result["culprits"] == []
    (note,) = result["notes"]
    assert note.startswith("baseline-good probe p001: fail") and "ImportError" in note
    assert render_text(result).startswith("BASELINE FAILED")


def test_two_independent_culprits_each_claim_only_what_their_probes_show() -> None:
    """Culprit 1 fails on its own but the bad spec without it still fails (culprit 2):
    it explains only part of the failures, and the report must not call it confirmed
    both ways; culprit 2, with culprit 1, explains every failure."""
    index = {c.key: i for i, c in enumerate(problem().testable)}
    lr, nccl, token = index["env.LR"], index["env.NCCL_ALGO"], index["env.HF_TOKEN"]
    records = [
        run("p001", [], "pass", "baseline-good"),
        run("p002", ALL, "fail", "baseline-bad"),
        run("p003", ["env.NCCL_ALGO"], "fail", "confirm-good-plus-culprit"),
        run("p004", ["env.HF_TOKEN", "env.LR"], "fail", "confirm-bad-minus-culprits"),
        run("p005", ["env.LR"], "fail", "confirm-good-plus-culprit"),
        run("p006", ["env.HF_TOKEN"], "pass", "confirm-bad-minus-culprits"),
    ]
    culprits = [
        Culprit(
            frozenset({nccl}),
            confirmed=True,
            evidence={"bad_minus_culprits": frozenset({token, lr})},
        ),
        Culprit(
            frozenset({lr}), confirmed=True, evidence={"bad_minus_culprits": frozenset({token})}
        ),
    ]
    result = build_result(evidence(SearchResult(FOUND, culprits), records, lambda path: ""))
    assert [c["explains"] for c in result["culprits"]] == ["part", "rest"]
    text = render_text(result)
    first, second = text.split("Culprit 2")
    assert "confirmed both ways" not in text
    assert "explains only part of the failures" in first.splitlines()[2]
    assert "Bad spec without this culprit: probe p004 fail (another change fails" in first
    assert "with culprit 1, explains every failure" in second.splitlines()[0]
    assert "Bad spec without culprits 1-2: probe p006 pass" in second
    assert text.startswith("FOUND 2 culprits, each failing on its own: env.NCCL_ALGO; env.LR")
    assert "Bad spec without this culprit: probe p004 fail" in render_markdown(result)
    # One culprit that explains everything keeps the words the README shows.
    alone = build_result(evidence(SearchResult(FOUND, culprits[:1]), records[:2], lambda p: ""))
    assert alone["culprits"][0]["explains"] == "unknown"  # its probes are not journaled


def test_a_confidence_is_cut_never_rounded_up_to_1() -> None:
    from clusterbisect.report import confidence_text, confidence_value

    assert (confidence_text(0.996), confidence_value(0.99999)) == ("0.99", 0.9999)
    assert (confidence_text(1.0), confidence_value(1.0)) == ("1.00", 1.0)
    records = [run("p001", [], "pass", "baseline-good"), run("p002", ALL, "fail", "baseline-bad")]
    culprit = Culprit(frozenset({2}), confidence=0.9996, confirmed=True)
    result = build_result(evidence(SearchResult(FOUND, [culprit]), records, lambda _: ""))
    assert result["culprits"][0]["confidence"] == 0.9996
    assert "(single setting, confidence 0.99" in render_text(result)
    assert "1.00" not in render_text(result) + render_markdown(result)


def test_an_inconclusive_search_says_what_to_run_next() -> None:
    import dataclasses
    from pathlib import Path

    from clusterbisect.config import LimitOptions, SessionConfig, SignatureOptions
    from clusterbisect.nextstep import Reached, next_step

    config = SessionConfig(
        "good.env",
        "bad.env",
        command=["python", "train.py", "--token=hunter2"],
        signature=SignatureOptions(fail_on="NCCL error"),
        limits=LimitOptions(max_probes=30),
    )
    good, bad = Path("/s/inputs/good.env"), Path("/s/inputs/bad.env")
    reached = Reached(Path("/s"), probes_run=30, to_go=4)
    flaky = next_step(
        config, SearchResult("inconclusive", notes=["runs disagree"]), good, bad, reached
    )
    assert flaky is not None
    assert flaky["command"] == (
        "clusterbisect run /s/inputs/good.env /s/inputs/bad.env --fail-on 'NCCL error' "
        "--max-probes 30 --flaky --baseline-runs 6 -- python train.py '--token=<redacted>'"
    )
    # A budget stop goes on where it stopped: resume, the probes run plus those to go.
    spent = "stopped early: the probe budget (30) is spent"
    short = next_step(config, SearchResult("inconclusive", notes=[spent]), good, bad, reached)
    assert short is not None and short["command"] == "clusterbisect resume /s --max-probes 34"
    assert short["why"].startswith("the probe budget (30) is spent before a culprit")
    timed = dataclasses.replace(config, limits=LimitOptions(max_time=60))
    spent = "stopped early: the time budget (60 s) is spent"
    late = next_step(timed, SearchResult("inconclusive", notes=[spent]), good, bad, reached)
    assert late is not None and late["command"] == "clusterbisect resume /s --max-time 120"
    assert next_step(config, SearchResult(FOUND), good, bad, reached) is None
    records = [run("p001", [], "pass", "baseline-good")]
    document = evidence(SearchResult("inconclusive"), records, lambda _: "")
    document.next_step = flaky
    text = render_text(build_result(document))
    assert f"Next: {flaky['why']}:\n  {flaky['command']}" in text


def test_a_secret_culprit_is_named_with_fingerprints_never_its_value() -> None:
    """A revoked token: the report says the secret changed and tells the two values
    apart by a keyed fingerprint, without showing either."""
    index = {c.key: i for i, c in enumerate(problem().testable)}
    records = [run("p003", ["env.HF_TOKEN"], "fail", "confirm-good-plus-culprit")]
    culprit = Culprit(frozenset({index["env.HF_TOKEN"]}), confirmed=True)
    result = build_result(
        evidence(SearchResult(FOUND, [culprit]), records, lambda path: "401 hf_new_s3cr3t\n")
    )
    (change,) = result["culprits"][0]["changes"]
    assert change["good"] == change["bad"] == "<redacted>"
    secret = change["secret"]
    assert secret["changed"] is True
    assert secret["good"] != secret["bad"] and len(secret["good"]) == 8
    # The same value, the same key: the same fingerprint (a report rebuilt later agrees).
    assert secret["good"] == redactor().fingerprint("hf_old_s3cr3t")
    for shown in (render_text(result), render_markdown(result), repr(result)):
        assert "s3cr3t" not in shown
    assert f"env.HF_TOKEN changed (fingerprint {secret['good']} -> {secret['bad']})" in (
        render_text(result)
    )


def test_an_unchanged_credential_inside_a_changed_value_says_so() -> None:
    good = "DATABASE_URL=postgres://app:pw-0ne-2@db1/x\n"
    bad = "DATABASE_URL=postgres://app:pw-0ne-2@db2/x\n"
    specs = [parse_spec(good, "good.env"), parse_spec(bad, "bad.env")]
    (change,) = diff(*specs)
    assert not change.secret  # the name is not secret; its password is
    shown = Redactor.of_specs(specs).involvement(change.secret, change.good, change.bad)
    assert shown is not None and shown["changed"] is False and shown["good"] == shown["bad"]
    assert change.to_dict()["bad"] == "postgres://app:<redacted>@db2/x"
