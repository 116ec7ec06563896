"""`clusterbisect run` end to end on the local backend: real processes, real journal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from conftest import CLI, EXAMPLES, Cli, EnvPair, culprit_keys

from benchmarks.chaos import wait_dead

# The workload: fails (exit 1, "CUDA error") when every variable of one culprit set has
# the bad value; otherwise exits 3 with another message when ODD_SETTING is set (a
# different failure). Culprits are given as "A+B,C" in CULPRITS, read from the test, not the spec.
WORKLOAD = r"""
import os, sys, time
time.sleep(float(os.environ.get("PROBE_SLEEP", "0")))
for group in os.environ["CULPRITS"].split(","):
    if group and all(os.environ.get(v, "").startswith("bad") for v in group.split("+")):
        print(f"RuntimeError: CUDA error: an illegal memory access ({group})"); sys.exit(1)
if os.environ.get("ODD_SETTING") == "bad":
    print("Segmentation fault in an unrelated library"); sys.exit(3)
print("training finished")
"""


def write_env_pair(
    env_pair: Callable[..., EnvPair], n: int, extra_bad: dict[str, str] | None = None
):
    good = [f"VAR_{i:03d}=good" for i in range(n)]
    bad = [f"VAR_{i:03d}=bad" for i in range(n)]
    bad += [f"{key}={value}" for key, value in (extra_bad or {}).items()]
    pair = env_pair(good, bad, WORKLOAD)
    return pair.good, pair.bad


def bisect(cli: Cli, good, bad, culprits, *options, env_extra=None):
    state = cli.cwd / "state"
    proc = cli(
        "run", good, bad, "--json", "--state-dir", str(state), *options, "--",
        sys.executable, str(cli.cwd / "work.py"),
        extra_env={"CULPRITS": culprits, **(env_extra or {})}, timeout=120, expect=None,
    )  # fmt: skip
    return proc, json.loads(proc.stdout)


def test_one_culprit_among_200_in_at_most_12_probes(tmp_path, cli, env_pair):
    good, bad = write_env_pair(env_pair, 200)
    proc, result = bisect(cli, good, bad, "VAR_137")
    assert proc.returncode == 0
    assert result["status"] == "found"
    assert culprit_keys(result) == [["env.VAR_137"]]
    assert result["probe_count"] <= 12
    culprit = result["culprits"][0]
    assert culprit["confidence"] == 1.0
    assert culprit["changes"][0] == {
        "key": "env.VAR_137",
        "change": "modified",
        "good": "good",
        "bad": "bad",
        "category": "env",
    }
    assert "CUDA error" in culprit["proof"]["excerpt"]
    assert result["signature"]["observed"].startswith("exit code 1")
    assert len(result["probes"]) == result["probe_count"]
    journal = (Path(result["state_dir"]) / "journal.jsonl").read_text().splitlines()
    assert len(journal) == result["probe_count"]


def test_parallel_4_needs_at_most_6_rounds(tmp_path, cli, env_pair):
    good, bad = write_env_pair(env_pair, 200)
    proc, result = bisect(cli, good, bad, "VAR_042", "--parallel", "4")
    assert proc.returncode == 0
    assert culprit_keys(result) == [["env.VAR_042"]]
    assert result["rounds"] <= 6


def test_interacting_pair_is_reported_as_one_culprit(tmp_path, cli, env_pair):
    good, bad = write_env_pair(env_pair, 40)
    proc, result = bisect(cli, good, bad, "VAR_003+VAR_031")
    assert proc.returncode == 0
    assert culprit_keys(result) == [["env.VAR_003", "env.VAR_031"]]


def test_two_independent_culprits_are_both_reported(tmp_path, cli, env_pair):
    good, bad = write_env_pair(env_pair, 40)
    proc, result = bisect(cli, good, bad, "VAR_005,VAR_033")
    assert proc.returncode == 0
    assert culprit_keys(result) == [["env.VAR_005"], ["env.VAR_033"]]
    assert all(c["confirmed"] for c in result["culprits"])


def test_a_probe_that_fails_differently_does_not_mislead(tmp_path, cli, env_pair):
    good, bad = write_env_pair(env_pair, 30, extra_bad={"ODD_SETTING": "bad"})
    proc, result = bisect(cli, good, bad, "VAR_011", "--fail-on", "CUDA error")
    assert proc.returncode == 0, proc.stderr
    assert culprit_keys(result) == [["env.VAR_011"]]
    outcomes = {p["outcome"] for p in result["probes"]}
    assert "unresolved" in outcomes  # the odd setting was seen and routed around


def test_budget_cut_short_is_inconclusive_with_candidates(tmp_path, cli, env_pair):
    good, bad = write_env_pair(env_pair, 64)
    proc, result = bisect(cli, good, bad, "VAR_050", "--max-probes", "4")
    assert proc.returncode == 1
    assert result["status"] == "inconclusive"
    assert result["probe_count"] == 4
    (candidate,) = result["candidates"]
    assert "env.VAR_050" in [c["key"] for c in candidate]
    assert len(candidate) < 64
    assert any("budget" in note for note in result["notes"])


def test_a_budget_stopped_run_says_so_first_and_resume_extends_it(tmp_path, cli, env_pair):
    good, bad = write_env_pair(env_pair, 64)
    _, result = bisect(cli, good, bad, "VAR_050", "--max-probes", "4")
    state = result["state_dir"]
    assert result["stopped_early"] == "the probe budget (4) is spent"
    assert result["continue_with"].startswith(f"continue with: clusterbisect resume {state} ")
    extra = {"CULPRITS": "VAR_050"}
    text = cli("report", state, expect=0).stdout.splitlines()
    assert text[0] == (
        "INCONCLUSIVE: no culprit could be isolated yet: stopped early, "
        "the probe budget (4) is spent"
    )
    assert text[1].startswith(f"  Continue with: clusterbisect resume {state} --max-probes ")
    status = cli.json("status", "--state-dir", state)
    assert status["stopped_early"] == "the probe budget (4) is spent" and not status["done"]
    assert (
        "Stopped early: the probe budget (4) is spent" in cli("status", "--state-dir", state).stdout
    )
    # Without a new budget, resume stops again at once; a budget at or below what was
    # run is refused (it counts every probe of the session).
    again = cli.json("resume", state, extra_env=extra, expect=1)
    assert again["probe_count"] == 4 and again["stopped_early"]
    refused = cli("resume", state, "--max-probes", "4", extra_env=extra, expect=2)
    assert "has run 4 probes already" in refused.stderr
    # A larger one finishes the search, and is kept for the session.
    done = cli.json("resume", state, "--max-probes", "40", extra_env=extra, expect=0)
    assert culprit_keys(done) == [["env.VAR_050"]] and done["stopped_early"] is None
    stored = json.loads((Path(state) / "session.json").read_text())
    assert stored["config"]["limits"]["max_probes"] == 40


def test_the_resume_tool_takes_a_new_budget(tmp_path, cli, env_pair):
    good, bad = write_env_pair(env_pair, 16)
    _, result = bisect(cli, good, bad, "VAR_003", "--max-probes", "3")
    extra = {"CULPRITS": "VAR_003"}
    code, document = cli.call(
        "resume", {"state_dir": result["state_dir"], "max_probes": 2}, extra_env=extra
    )
    assert code == 2 and "give more than 3" in document["error"]["message"]
    code, document = cli.call(
        "resume", {"state_dir": result["state_dir"], "max_probes": 30}, extra_env=extra
    )
    assert code == 0 and culprit_keys(document) == [["env.VAR_003"]]


def test_baseline_failed_and_not_reproducible(tmp_path, cli, env_pair):
    good, bad = write_env_pair(env_pair, 4)
    proc, result = bisect(cli, good, bad, "", env_extra={"ODD_SETTING": "bad"})
    assert proc.returncode == 1
    assert result["status"] == "baseline_failed"
    assert any("Segmentation fault" in note for note in result["notes"])
    state = tmp_path / "state2"
    proc = cli(
        *["run", good, bad, "--json", "--state-dir", str(state), "--"]
        + [sys.executable, str(tmp_path / "work.py")],
        extra_env={"CULPRITS": "NOT_A_VAR"},
        expect=None,
    )
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["status"] == "not_reproducible"


def test_timeouts_are_unresolved_unless_hangs_are_the_failure(tmp_path, cli, env_pair):
    good, bad = write_env_pair(env_pair, 2)
    (tmp_path / "work.py").write_text(
        "import os, time\nif os.environ.get('VAR_001') == 'bad':\n    time.sleep(30)\n"
    )
    state = tmp_path / "hang"
    started = time.monotonic()
    proc = cli(
        *["run", good, bad, "--json", "--state-dir", str(state), "--timeout", "1"]
        + ["--hang-is-failure", "--", sys.executable, str(tmp_path / "work.py")],
        expect=None,
    )
    result = json.loads(proc.stdout)
    assert culprit_keys(result) == [["env.VAR_001"]]
    assert time.monotonic() - started < 25
    proc = cli(
        *["run", good, bad, "--json", "--state-dir", str(tmp_path / "hang2"), "--timeout", "1"]
        + ["--", sys.executable, str(tmp_path / "work.py")],
        expect=None,
    )
    assert json.loads(proc.stdout)["status"] == "not_reproducible"


def test_secret_values_never_reach_output(tmp_path, cli, env_pair):
    good, bad = write_env_pair(env_pair, 6)
    for name, value in (("good.env", "good-s3cr3t-value"), ("bad.env", "bad-s3cr3t-value")):
        with open(tmp_path / name, "a") as spec:
            spec.write(f"HF_API_TOKEN={value}\n")
    proc, result = bisect(cli, good, bad, "HF_API_TOKEN")
    assert "s3cr3t" not in proc.stdout + proc.stderr
    report = cli("report", result["state_dir"], "--format", "markdown", expect=None)
    assert "s3cr3t" not in report.stdout
    assert culprit_keys(result) == [["env.HF_API_TOKEN"]]


def test_local_backend_without_command_is_a_usage_error(tmp_path, cli, env_pair):
    good, bad = write_env_pair(env_pair, 2)
    proc = cli("run", good, bad, expect=None)
    assert proc.returncode == 2
    assert "after `--`" in proc.stderr and "Traceback" not in proc.stderr


def test_report_renders_text_markdown_and_json(tmp_path, cli, env_pair):
    good, bad = write_env_pair(env_pair, 16)
    _, result = bisect(cli, good, bad, "VAR_009")
    state = result["state_dir"]
    text = cli("report", state, expect=None).stdout
    assert "FOUND: env.VAR_009" in text and "Proved by probe" in text
    markdown = cli("report", state, "--format", "markdown", expect=None).stdout
    assert "```mermaid" in markdown and "flowchart TD" in markdown
    again = json.loads(cli("report", state, "--format", "json", expect=None).stdout)
    assert again["culprits"] == result["culprits"]


def _journal(state: Path) -> list[dict]:
    path = state / "journal.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_sigkill_then_resume_reaches_the_same_answer_without_repeats(tmp_path, cli, env_pair):
    good, bad = write_env_pair(env_pair, 64)
    state = tmp_path / "state"
    env = {**os.environ, "CULPRITS": "VAR_021", "PROBE_SLEEP": "0.3"}
    proc = subprocess.Popen(
        CLI
        + ["run", good, bad, "--json", "--quiet", "--state-dir", str(state), "--"]
        + [sys.executable, str(tmp_path / "work.py")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while len(_journal(state)) < 4:  # a state to wait for, not a time
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _journal(state)
    assert 4 <= len(before) < 10
    resumed = cli("resume", str(state), "--json", env=env, expect=None)
    result = json.loads(resumed.stdout)
    assert culprit_keys(result) == [["env.VAR_021"]]
    after = _journal(state)
    assert after[: len(before)] == before
    subsets = [tuple(r["subset"]) for r in after]
    # Only good + the culprit runs twice: the confirmation asks for two runs.
    twice = {s for s in subsets if subsets.count(s) > 1}
    confirmed = {
        tuple(p["subset"]) for p in result["probes"] if p["purpose"].startswith("confirm-good")
    }
    assert twice <= confirmed and all(subsets.count(s) == 2 for s in twice), (
        "a finished probe was run again"
    )
    # The same answer as an uninterrupted run, with the same number of probes.
    _, fresh = bisect(cli, good, bad, "VAR_021", "--state-dir", str(tmp_path / "fresh"))
    assert fresh["probe_count"] == result["probe_count"]


def test_ctrl_c_stops_probes_and_exits_130(tmp_path, env_pair):
    good, bad = write_env_pair(env_pair, 8)
    marker = tmp_path / "child.pid"
    (tmp_path / "work.py").write_text(
        "import os, subprocess, sys, time\n"
        f"child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        f"open({str(marker) + '.tmp'!r}, 'w').write(str(child.pid))\n"
        f"os.replace({str(marker) + '.tmp'!r}, {str(marker)!r})\n"
        "time.sleep(600)\n"
    )
    state = tmp_path / "state"
    proc = subprocess.Popen(
        CLI
        + ["run", good, bad, "--state-dir", str(state), "--"]
        + [sys.executable, str(tmp_path / "work.py")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Wait for the state (a probe and its child are running), however long it takes.
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert wait_dead([int(marker.read_text())]) == [], "the probe's child survived Ctrl-C"
    assert "resume" in err


def test_dry_run_renders_the_plan_without_secrets(tmp_path, cli, env_pair):
    good, bad = write_env_pair(env_pair, 8)
    for name in ("good.env", "bad.env"):
        with open(tmp_path / name, "a") as spec:
            spec.write("HF_TOKEN=hf_unchanged_s3cr3t\n")
    state = tmp_path / "dry"
    proc = cli("run", good, bad, "--dry-run", "--json", "--state-dir", str(state), expect=None)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert [p["purpose"] for p in plan["plan"][:2]] == ["baseline-good", "baseline-bad"]
    assert len(plan["plan"]) == 3  # the baselines and the first round
    assert not (state / "journal.jsonl").exists()  # nothing ran
    written = "".join(p.read_text() for p in (state / "dry-run").glob("*.yaml"))
    assert "VAR_000: good" in written
    assert "s3cr3t" not in proc.stdout + proc.stderr + written


def write_flaky_workload(folder: Path, fails: str) -> None:
    """A workload that fails when VAR_005 is bad and ``fails`` holds for ``n``, the
    count of runs so far: a flaky crash, but a repeatable test."""
    (folder / "work.py").write_text(
        "import os, sys, pathlib\n"
        f"counter = pathlib.Path({str(folder / 'count')!r})\n"
        "n = int(counter.read_text()) + 1 if counter.exists() else 1\n"
        "counter.write_text(str(n))\n"
        f"if os.environ.get('VAR_005') == 'bad' and {fails}:\n"
        "    print('RuntimeError: CUDA error'); sys.exit(1)\n"
    )


def test_disagreeing_baselines_switch_to_the_flaky_strategy(tmp_path, cli, env_pair):
    good, bad = write_env_pair(env_pair, 12)
    write_flaky_workload(tmp_path, "n % 2 == 0")  # every other run
    proc, result = bisect(cli, good, bad, "", "--baseline-runs", "4")
    assert result["strategy"] == "flaky"
    baselines = [p for p in result["probes"] if p["purpose"].startswith("baseline")]
    assert len(baselines) == 8
    assert result["status"] == "found", result["notes"]
    assert culprit_keys(result) == [["env.VAR_005"]]
    assert 0.3 <= result["estimates"]["p"] <= 0.8  # half the runs fail; the prior pulls up
    assert proc.returncode == 0


def test_steady_baselines_keep_the_deterministic_strategy(tmp_path, cli, env_pair):
    good, bad = write_env_pair(env_pair, 12)
    proc, result = bisect(cli, good, bad, "VAR_007", "--baseline-runs", "3")
    assert result["strategy"] == "bisection"
    assert culprit_keys(result) == [["env.VAR_007"]]
    assert proc.returncode == 0
    # 6 baseline runs, then the search reuses them: ceil(log2 12) + 2 confirmations more,
    # and the second run of good + the culprit.
    assert result["probe_count"] <= 6 + 4 + 2 + 1


def test_nothing_testable_on_the_backend_is_a_clear_usage_error(tmp_path, cli):
    job = EXAMPLES / "training-upgrade" / "good.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text(job.read_text().replace('cpu: "8"', 'cpu: "12"'))
    proc = cli(
        "run", str(job), str(bad), "--state-dir", str(tmp_path / "s"), "--", "true", expect=None
    )
    assert proc.returncode == 2, proc.stderr
    assert "can be applied on the local backend" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "s").exists()  # a usage error leaves no session behind


def test_a_usage_error_keeps_the_other_files_of_a_given_state_dir(tmp_path, cli):
    job = EXAMPLES / "training-upgrade" / "good.yaml"
    bad = tmp_path / "bad.yaml"
    bad.write_text(job.read_text().replace('cpu: "8"', 'cpu: "12"'))
    state = tmp_path / "s"
    state.mkdir()
    (state / "notes.txt").write_text("mine")
    proc = cli("run", str(job), str(bad), "--state-dir", str(state), "--", "true", expect=None)
    assert proc.returncode == 2, proc.stderr
    assert sorted(p.name for p in state.iterdir()) == ["notes.txt"]


def test_a_backend_that_can_apply_nothing_names_the_one_that_can(tmp_path, cli):
    import yaml

    job = yaml.safe_load((EXAMPLES / "training-upgrade" / "good.yaml").read_text())
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(job))
    job["spec"]["template"]["spec"]["containers"][0]["image"] += "-next"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(job))
    proc = cli("run", "good.yaml", "bad.yaml", "--", "python", "train.py", expect=2)
    assert "error: good.yaml: none of the 1 changes can be applied on the local backend" in (
        proc.stderr
    )
    assert proc.stderr.rstrip().endswith("--backend kubernetes can apply 1")
    assert not (tmp_path / ".clusterbisect").exists() or not any(
        (tmp_path / ".clusterbisect").iterdir()
    )  # no half-made session


def test_after_a_contradiction_no_confidence_is_printed_as_1(tmp_path, cli, env_pair):
    good, bad = write_env_pair(env_pair, 12)
    # Two runs in three fail: the confirmation contradicts the bisection, which hands
    # over to the flaky search.
    write_flaky_workload(tmp_path, "n % 3 != 1")
    state = tmp_path / "state"
    proc = cli(
        *["run", good, bad, "--state-dir", str(state), "--quiet", "--"],
        *[sys.executable, str(tmp_path / "work.py")],
        expect=0,
    )
    assert "switched to the flake-aware search" in proc.stdout
    assert "FOUND: env.VAR_005" in proc.stdout
    assert "confidence 1.00" not in proc.stdout
    result = json.loads(cli("report", str(state), "--format", "json", expect=0).stdout)
    assert result["strategy"] == "flaky" and result["culprits"][0]["confidence"] < 1.0
    markdown = cli("report", str(state), "--format", "markdown", expect=0).stdout
    assert "confidence 1.00" not in markdown
