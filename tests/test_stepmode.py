"""The step-by-step CLI, shaped after git bisect, on real processes and a real journal.

start / next / good / bad / skip / mark / status / log / replay / reset; a session
started by hand finished by `resume`, and an interrupted `run` finished by hand.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLES, EnvPair, culprit_keys
from fakes import ScriptedOptions, culprit_rule, register

from clusterbisect import stepmode, workflow
from clusterbisect.config import LocalOptions, SessionConfig, SignatureOptions
from clusterbisect.errors import InputError
from clusterbisect.outcome import Outcome, RunResult

WORKLOAD = r"""
import os, sys
if os.environ.get("ODD") == "bad":
    print("ImportError: something unrelated"); sys.exit(2)
if os.environ.get("NCCL_ALGO") == "bad":
    print("RuntimeError: NCCL error: unhandled system error"); sys.exit(1)
print("step 100, loss 0.12")
"""


def write_inputs(env_pair: Callable[..., EnvPair], n: int = 10) -> list[str]:
    names = [f"SETTING_{i}" for i in range(n - 1)] + ["NCCL_ALGO"]
    pair = env_pair([f"{k}=good" for k in names], [f"{k}=bad" for k in names], WORKLOAD)
    return pair.command


def run_probe(probe: dict[str, Any], tmp_path: Path) -> tuple[int, Path]:
    env = {k: v for k, v in os.environ.items() if k not in probe["unset"]}
    env.update(probe["rendered"]["env"])
    log = tmp_path / f"{probe['id']}.out"
    with open(log, "wb") as out:
        code = subprocess.call(probe["rendered"]["argv"], env=env, stdout=out, stderr=out)
    return code, log


def test_start_next_good_bad_status_reset(tmp_path, cli, env_pair):
    command = write_inputs(env_pair)
    out = cli("start", "good.env", "bad.env", "--", *command).stdout
    assert "Bisecting 10 changes" in out
    assert "Next probe p001 (baseline-good): apply 0 of 10 changes" in out
    assert "clusterbisect good | bad | skip" in out

    steps = 0
    while True:
        view = cli.json("next")
        if view["done"]:
            break
        probe = view["probe"]
        code, log = run_probe(probe, tmp_path)
        verb = "good" if code == 0 else "bad"
        out = cli(verb, "--log", str(log)).stdout
        assert f"Recorded {probe['id']} ({probe['purpose']})" in out
        steps += 1
        assert steps < 20
    result = view["result"]
    assert result["status"] == "found"
    assert culprit_keys(result) == [["env.NCCL_ALGO"]]
    assert result["probe_count"] == steps
    state = Path(view["state_dir"])
    assert json.loads((state / "result.json").read_text())["status"] == "found"
    # Each reported log was copied in as evidence and the proof quotes it.
    assert "NCCL error" in result["culprits"][0]["proof"]["excerpt"]
    assert len(list((state / "logs").glob("p*.log"))) == steps

    status = cli("status").stdout
    assert "(current)" in status and "FOUND: env.NCCL_ALGO" in status
    # Nothing is pending any more.
    error = cli("bad", expect=2).stderr
    assert "complete" in error
    log = cli("log").stdout
    assert log.count("\nmark ") == steps
    assert "reset" not in log

    assert "Ended the session" in cli("reset").stdout
    assert not (tmp_path / ".clusterbisect" / "CURRENT").exists()
    assert "no bisection in progress" in cli("next", expect=2).stderr
    assert (state / "journal.jsonl").exists()  # the evidence stays


def test_skip_and_mark_by_exit_code_use_the_signature(tmp_path, cli, env_pair):
    command = write_inputs(env_pair, n=4)
    cli("start", "good.env", "bad.env", "--fail-on", "NCCL error", "--", *command)
    recorded = cli.json("skip")
    assert recorded["recorded"]["outcome"] == "unresolved"
    # The retry of the same probe, reported as an exit code and a log that does not
    # show the signature: unresolved again, decided by the signature, not the reporter.
    other = tmp_path / "other.log"
    other.write_text("ImportError: something unrelated\n")
    recorded = cli.json("mark", "--exit-code", "2", "--log", str(other))
    assert recorded["recorded"]["classified_by"] == "signature"
    assert recorded["recorded"]["outcome"] == "unresolved"
    assert recorded["recorded"]["observed"] == "exit code 2"
    # The bad baseline, with the signature in its log: fail.
    crash = tmp_path / "crash.log"
    crash.write_text("RuntimeError: NCCL error: unhandled system error\n")
    view = cli.json("next")
    assert view["probe"]["purpose"] == "baseline-bad"
    recorded = cli.json("mark", "--exit-code", "1", "--log", str(crash))
    assert recorded["recorded"]["outcome"] == "fail"
    assert "matched: RuntimeError: NCCL error" in recorded["recorded"]["observed"]
    assert "give --outcome or --exit-code" in cli("mark", expect=2).stderr


def test_resume_finishes_a_session_started_by_hand(tmp_path, cli, env_pair):
    command = write_inputs(env_pair, n=16)
    started = cli.json("start", "good.env", "bad.env", "--state-dir", "s", "--", *command)
    view = started["next"]
    for _ in range(3):  # the baselines and one search probe, by hand
        code, log = run_probe(view["probe"], tmp_path)
        view = cli.json("good" if code == 0 else "bad", "--log", str(log))["next"]
    proc = cli("resume", "s", "--json", "--quiet")
    result = json.loads(proc.stdout)
    assert result["status"] == "found"
    assert culprit_keys(result) == [["env.NCCL_ALGO"]]
    sources = [p["source"] for p in result["probes"]]
    assert sources[:3] == ["manual"] * 3 and set(sources[3:]) == {"runner"}
    subsets = [tuple(p["subset"]) for p in result["probes"]]
    # Only good + the culprit runs twice: the confirmation asks for two runs.
    twice = {s for s in subsets if subsets.count(s) > 1}
    confirmed = {
        tuple(p["subset"]) for p in result["probes"] if p["purpose"].startswith("confirm-good")
    }
    assert twice <= confirmed and all(subsets.count(s) == 2 for s in twice), "a probe was run twice"
    # The same answer and probe count as a run from scratch.
    fresh = cli.json("run", "good.env", "bad.env", "--quiet", "--", *command)
    assert culprit_keys(fresh) == culprit_keys(result)
    assert fresh["probe_count"] == result["probe_count"]
    # `status` on the finished session shows the result.
    assert cli.json("status")["result"]["status"] == "found"


def test_an_interrupted_run_is_finished_by_hand(tmp_path, cli, env_pair):
    command = write_inputs(env_pair, n=16)
    cut = cli.json(
        "run", "good.env", "bad.env", "--state-dir", "r", "--max-probes", "3",
        "--quiet", "--", *command, expect=1,
    )  # fmt: skip
    assert cut["status"] == "inconclusive" and cut["probe_count"] == 3
    steps = 0
    view = cli.json("next", "--state-dir", "r")
    while not view["done"]:
        assert view["probe"]["id"] == f"p{4 + steps:03d}"
        code, log = run_probe(view["probe"], tmp_path)
        verb = "good" if code == 0 else "bad"
        view = cli.json(verb, "--state-dir", "r", "--log", str(log))["next"]
        steps += 1
    assert view["result"]["status"] == "found"
    assert culprit_keys(view["result"]) == [["env.NCCL_ALGO"]]
    assert view["result"]["probe_count"] == 3 + steps
    # `run` never made it current: the current-session pointer is untouched.
    assert not (tmp_path / ".clusterbisect" / "CURRENT").exists()


def test_log_and_replay_correct_a_wrong_mark(tmp_path, cli, env_pair):
    command = write_inputs(env_pair, n=8)
    cli("start", "good.env", "bad.env", "--state-dir", "first", "--", *command)
    cli("good")
    cli("bad")
    probe = cli.json("next")["probe"]
    code, _ = run_probe(probe, tmp_path)
    wrong = "good" if code != 0 else "bad"  # a mistake, as people make
    cli(wrong)
    log = cli("log").stdout
    assert log.count("\nmark ") == 3
    lines = log.splitlines()
    last = json.loads(lines[-1].split(" ", 1)[1])
    right = "fail" if code != 0 else "pass"
    assert last["outcome"] != right
    lines[-1] = "mark " + json.dumps({**last, "outcome": right})
    (tmp_path / "fixed.log").write_text("\n".join(lines) + "\n")

    replayed = cli.json("replay", "fixed.log", "--state-dir", "second")
    assert replayed["replayed"] == 3
    assert replayed["state_dir"] == str(tmp_path / "second")
    # The replayed session is now current and continues to the right culprit.
    view = replayed["next"]
    while not view["done"]:
        code, _ = run_probe(view["probe"], tmp_path)
        view = cli.json("good" if code == 0 else "bad")["next"]
    assert culprit_keys(view["result"]) == [["env.NCCL_ALGO"]]
    # A malformed log is bad input.
    (tmp_path / "junk.log").write_text("hello\n")
    assert "expected `start" in cli("replay", "junk.log", expect=2).stderr


def test_kubernetes_probes_render_without_a_cluster(tmp_path, cli):
    example = EXAMPLES / "training-upgrade"
    start = cli.json(
        "start", str(example / "good.yaml"), str(example / "bad.yaml"),
        "--backend", "kubernetes", "-n", "ml-training", "--state-dir", "k",
    )  # fmt: skip
    view = cli.json("next", "--probe", "p002", "--verbose")
    probe = view["probe"]
    assert start["backend"] == "kubernetes" and probe["purpose"] == "baseline-bad"
    job = probe["rendered"]
    assert job["kind"] == "Job" and job["metadata"]["namespace"] == "ml-training"
    assert job["metadata"]["labels"]["clusterbisect.io/session"] == start["session_id"]
    image = job["spec"]["template"]["spec"]["containers"][0]["image"]
    assert ":2.6.0-cuda12.6" in image  # the bad image: every change applied
    assert Path(probe["rendered_file"]).is_file()


def test_agent_replies_are_compact_unless_verbose(tmp_path, cli):
    """A Kubernetes session's `next` names each change once and points at the rendered
    Job; `record` carries the compact next view, not the full one."""
    example = EXAMPLES / "training-upgrade"
    culprit = "containers[trainer].env.TORCH_FORCE_WEIGHTS_ONLY_LOAD"
    cli.json(
        "start", str(example / "good.yaml"), str(example / "bad.yaml"),
        "--backend", "kubernetes", "--state-dir", "k",
    )  # fmt: skip
    compact = cli("next", "--json", "--probe", "p002", expect=0).stdout
    verbose = cli("next", "--json", "--probe", "p002", "--verbose", expect=0).stdout
    assert compact.count(culprit) == 1 and verbose.count(culprit) >= 3
    assert len(compact) < 4000 < 20000 < len(verbose)
    view = json.loads(compact)
    probe = view["probe"]
    assert probe["changes_applied"] == len(probe["changes"]) == 44 and culprit in probe["changes"]
    assert "rendered" not in probe and Path(probe["rendered_file"]).is_file()
    assert view["untestable_count"] == 1 and "untestable" not in view
    assert view["pending"] == [
        {"probe": "p001", "purpose": "baseline-good", "runs_needed": 1, "changes_applied": 0},
        {"probe": "p002", "purpose": "baseline-bad", "runs_needed": 1, "changes_applied": 44},
    ]
    recorded = cli("good", "--json", expect=0).stdout
    assert len(recorded) < 4000 and recorded.count(culprit) == 1
    assert json.loads(recorded)["next"] == view | {"probes_done": 1, "pending": view["pending"][1:]}
    full = cli.json("bad", "--verbose")  # p002; the next view in full
    assert full["next"]["probe"]["changes"][0].keys() >= {"key", "good", "bad"}
    assert full["next"]["probe"]["rendered"]["kind"] == "Job"


def test_a_contradicting_outcome_is_refused_unless_forced(tmp_path, cli, env_pair):
    command = write_inputs(env_pair)
    cli.json("start", "good.env", "bad.env", "--fail-on", "CUDA error", "--", *command)
    refused = cli("mark", "--outcome", "pass", "--exit-code", "1", expect=2)
    assert "outcome: 'pass' contradicts what was observed (exit code 1)" in refused.stderr
    code, error = cli.call("record", {"outcome": "pass", "exit_code": 1})
    assert code == 2 and error["error"]["details"]["signature_reads"] == "unresolved"
    assert cli.json("status")["probes_done"] == 0
    # Agreeing, unresolved or forced: recorded.
    assert cli.json("mark", "--outcome", "pass", "--exit-code", "0")["recorded"]["outcome"] == (
        "pass"
    )
    code, forced = cli.call("record", {"outcome": "pass", "exit_code": 1, "force": True})
    assert code == 0 and forced["recorded"]["outcome"] == "pass"
    code, skipped = cli.call("record", {"outcome": "skip", "exit_code": 0})
    assert code == 0 and skipped["recorded"]["outcome"] == "unresolved"


def test_probe_ids_stay_put_when_recorded_out_of_order(tmp_path, cli, env_pair):
    command = write_inputs(env_pair)
    start = cli.json("start", "good.env", "bad.env", "--", *command)
    assert [p["probe"] for p in start["next"]["pending"]] == ["p001", "p002"]  # both baselines
    # Record the bad baseline first: the good one is still p001, not renumbered.
    recorded = cli.json("bad", "--probe", "p002")
    assert recorded["recorded"]["probe"] == "p002"
    view = cli.json("next")
    assert view["probe"]["id"] == "p001" and view["probe"]["purpose"] == "baseline-good"
    assert cli.json("good")["recorded"]["probe"] == "p001"
    # The search goes on from p003, and the log shows the ids as they were recorded.
    assert cli.json("next")["probe"]["id"] == "p003"
    log = cli("log").stdout
    assert log.index("p002") < log.index("p001")


# --- in process, on the scripted backend (tests/fakes.py) ------------------------------


def scripted_config(tmp_path: Path, n: int = 12) -> SessionConfig:
    (tmp_path / "good.env").write_text("".join(f"VAR_{i:02d}=good\n" for i in range(n)))
    (tmp_path / "bad.env").write_text("".join(f"VAR_{i:02d}=bad\n" for i in range(n)))
    return SessionConfig(
        good_source=str(tmp_path / "good.env"),
        bad_source=str(tmp_path / "bad.env"),
        backend="scripted",
        signature=SignatureOptions(fail_on="CUDA error"),
        backend_options=ScriptedOptions([["VAR_07"]]),
    )


def test_step_mode_reaches_the_verdict_run_reaches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(monkeypatch)
    monkeypatch.chdir(tmp_path)
    rule = culprit_rule(["VAR_07"])
    started = stepmode.start(scripted_config(tmp_path), tmp_path / "by-hand")
    assert started["backend"] == "scripted" and started["changes_searched"] == 12
    assert stepmode.open_session(None).session.state_dir == tmp_path / "by-hand"  # current
    view = started["next"]
    while not view["done"]:
        probe = view["probe"]
        assert Path(probe["rendered_file"]).parent == tmp_path / "by-hand" / "probes"
        code, output = rule(probe["rendered"]["env"])  # run it "my own way"
        recorded = stepmode.record(
            stepmode.open_session(None), None, run=RunResult(exit_code=code), log_text=output
        )
        assert recorded["recorded"]["classified_by"] == "signature"
        view = recorded["next"]
    by_hand = view["result"]
    with workflow.new_session(scripted_config(tmp_path), tmp_path / "run") as opened:
        automatic = workflow.run_session(opened)
    assert culprit_keys(by_hand) == culprit_keys(automatic) == [["env.VAR_07"]]
    assert by_hand["probe_count"] == automatic["probe_count"]
    assert [p["subset"] for p in by_hand["probes"]] == [p["subset"] for p in automatic["probes"]]
    assert "CUDA error" in by_hand["culprits"][0]["proof"]["excerpt"]
    status = stepmode.status(stepmode.open_session(None))
    assert (
        status["done"] and status["current"] and status["manual_probes"] == len(by_hand["probes"])
    )
    assert stepmode.reset(None)["was_current"] is True
    with pytest.raises(InputError, match="no bisection in progress"):
        stepmode.open_session(None)


def test_a_log_replays_into_the_same_position(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(monkeypatch)
    monkeypatch.chdir(tmp_path)
    stepmode.start(scripted_config(tmp_path), tmp_path / "first")
    first = stepmode.open_session(None)
    stepmode.record(first, Outcome.PASS)
    stepmode.record(stepmode.open_session(None), Outcome.FAIL)
    text = stepmode.log_text(first.session)
    replayed = stepmode.replay(text, "log", tmp_path / "second")
    assert replayed["replayed"] == 2 and replayed["state_dir"] == str(tmp_path / "second")
    again = stepmode.next_view(stepmode.open_session(None))
    before = stepmode.next_view(stepmode.open_session(tmp_path / "first"))
    assert again["probe"]["changes"] == before["probe"]["changes"]


def test_a_log_written_before_the_option_groups_still_replays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `clusterbisect log` start line in the flat layout of older versions."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "good.env").write_text("A=good\nB=good\n")
    (tmp_path / "bad.env").write_text("A=bad\nB=bad\n")
    flat = {
        "backend": "local",
        "backend_options": {},
        "good_source": str(tmp_path / "good.env"),
        "bad_source": str(tmp_path / "bad.env"),
        "clean_env": True,
        "command": ["python", "work.py"],
        "container": None,
        "ignore": [],
        "max_probes": None,
        "max_time_s": None,
        "parallel": 1,
        "signature": {"fail_exit_code": None, "fail_on": "boom", "fail_reason": None},
        "strategy": "auto",
        "strategy_options": {"baseline_runs": 1, "confidence": 0.99},
        "timeout_s": 30.0,
    }
    text = "start " + json.dumps(flat) + "\n" + 'mark {"outcome": "pass", "subset": []}\n'
    replayed = stepmode.replay(text, "old.log", tmp_path / "s")
    assert replayed["replayed"] == 1 and replayed["next"]["probe"]["purpose"] == "baseline-bad"
    config = stepmode.open_state(None).config
    assert config.limits.timeout == 30.0 and config.signature.fail_on == "boom"
    assert config.backend_options == LocalOptions(clean_env=True)
