"""Local probes always end, and end clean; their output is matched whole.

Real processes throughout: the local runner's keeper (a child subreaper) ends every
process a probe started; a hanging probe meets a default timeout; ``--max-time``
stops probes in flight; 1.2 MB of output before the error still fails the probe;
terminal control sequences never reach what the tool prints; an 89k-variable
environment still starts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Cli, culprit_keys

from benchmarks.chaos import alive, wait_dead
from clusterbisect import engine
from clusterbisect.errors import BackendError
from clusterbisect.journal import ProbeRecord
from clusterbisect.outcome import FailureSignature, Outcome
from clusterbisect.runners.base import Probe, RunnerContext
from clusterbisect.runners.local import LocalRunner, LocalSettings
from clusterbisect.runners.reaper import wrapped_command
from clusterbisect.specs.model import Spec


def probe(tmp_path: Path, command: list[str], timeout_s: float | None = 60) -> Probe:
    spec = Spec("env", "env", "x", {"env": {}})
    return Probe("p001", "s", spec, [], tmp_path / "p001.log", timeout_s, command)


def pids_in(path: Path) -> list[int]:
    return [int(word) for word in path.read_text().split()]


# --- processes ------------------------------------------------------------------------------

ESCAPING = r"""
import os, sys, time
pids = open(sys.argv[1], "a")
def note(pid): pids.write(f"{pid}\n"); pids.flush()
if os.fork() == 0:                  # a daemon: double fork, new session
    os.setsid()
    if os.fork() == 0:
        note(os.getpid()); time.sleep(60); os._exit(0)
    os._exit(0)
if os.fork() == 0:                  # a background child holding the output pipe
    note(os.getpid()); time.sleep(60); os._exit(0)
time.sleep(0.3)
print("done"); sys.exit(int(sys.argv[2]))
"""


@pytest.mark.parametrize("code", [0, 1])
def test_every_process_a_probe_started_ends_with_it(tmp_path: Path, code: int) -> None:
    script = tmp_path / "escape.py"
    script.write_text(ESCAPING)
    pids = tmp_path / "pids"
    (result,) = LocalRunner(RunnerContext()).run(
        [probe(tmp_path, [sys.executable, str(script), str(pids), str(code)])]
    )
    assert result.exit_code == code and result.output == "done\n"
    started = pids_in(pids)
    assert len(started) == 2
    # run() has returned: the keeper has killed and reaped the tree by now.
    assert [p for p in started if alive(p)] == []


@pytest.mark.parametrize("code", [0, 3])
def test_the_keeper_wrapping_a_command_ends_its_tree(tmp_path: Path, code: int) -> None:
    """``reaper.py --wrap`` (a Ray job's entrypoint on the session's own Ray): the
    environment inherited, the workload's exit code, nothing left behind."""
    script = tmp_path / "escape.py"
    script.write_text(ESCAPING)
    pids = tmp_path / "pids"
    argv = wrapped_command([sys.executable, str(script), str(pids), str(code)], 0.5)
    # Output to a file, not a pipe: returning must not wait for the escapees to close it.
    out = tmp_path / "out"
    with out.open("w") as sink:
        done = subprocess.run(argv, stdout=sink, env={"MARK": "x"}, check=False)
    assert (done.returncode, out.read_text()) == (code, "done\n")
    started = pids_in(pids)
    assert len(started) == 2 and [p for p in started if alive(p)] == []
    shown = subprocess.run(
        wrapped_command(["sh", "-c", 'echo "$MARK"; kill -TERM $$'], 0.5),
        capture_output=True,
        text=True,
        env={"MARK": "x", "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert (shown.returncode, shown.stdout) == (128 + 15, "x\n")


def test_a_timeout_ends_the_tree_even_when_it_ignores_sigterm(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    shell = (
        f'trap "" TERM; sleep 60 & echo $! >> {pids}; setsid sleep 60 & echo $! >> {pids}; sleep 60'
    )
    runner = LocalRunner(RunnerContext(), LocalSettings(kill_grace_s=0.5))
    (result,) = runner.run([probe(tmp_path, ["sh", "-c", shell], timeout_s=0.5)])
    assert result.timed_out and result.reason == "Timeout" and result.exit_code is None
    assert [p for p in pids_in(pids) if alive(p)] == []


def test_a_keeper_killed_from_outside_is_unresolved_not_the_failure(tmp_path: Path) -> None:
    (result,) = LocalRunner(RunnerContext()).run([probe(tmp_path, ["sh", "-c", "kill -9 $PPID"])])
    assert result.infra_error and "without a status" in result.infra_error
    assert FailureSignature().classify(result) is Outcome.UNRESOLVED


def test_a_missing_program_is_a_backend_error(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="no-such-program-zz"):
        LocalRunner(RunnerContext()).run([probe(tmp_path, ["no-such-program-zz"])])


def test_killing_clusterbisect_kills_its_probes(tmp_path: Path, cli: Cli) -> None:
    """The keeper asks the kernel for SIGTERM when its parent dies (PR_SET_PDEATHSIG)."""
    import signal
    import subprocess

    pids = tmp_path / "pids"
    work = tmp_path / "work.sh"
    work.write_text(
        f"#!/bin/sh\necho $$ >> {pids}\nsetsid sleep 60 &\necho $! >> {pids}\nsleep 60\n"
    )
    work.chmod(0o755)
    (tmp_path / "good.env").write_text("A=1\n")
    (tmp_path / "bad.env").write_text("A=2\n")
    from conftest import CLI

    proc = subprocess.Popen(
        [*CLI, "run", "good.env", "bad.env", "--quiet", "--", str(work)], cwd=tmp_path
    )
    while not pids.exists() or len(pids_in(pids)) < 2:
        assert proc.poll() is None
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert wait_dead(pids_in(pids)) == []


# --- timeouts -------------------------------------------------------------------------------


def baseline(duration: float, **extra: object) -> ProbeRecord:
    return ProbeRecord("p001", 1, [], "pass", purpose="baseline-good", duration_s=duration, **extra)  # type: ignore[arg-type]


def test_the_default_timeout_comes_from_the_slower_baseline() -> None:
    assert engine.probe_timeout(30.0, []).source == "option"
    first = engine.probe_timeout(None, [])
    assert (first.seconds, first.source) == (engine.FIRST_PROBES_TIMEOUT_S, "first")
    assert engine.probe_timeout(None, [baseline(2.0), baseline(3.0)]).seconds == 60.0
    slow = engine.probe_timeout(None, [baseline(2.0), baseline(30.0)])
    assert (slow.seconds, slow.source, slow.slower_baseline_s) == (150.0, "baselines", 30.0)
    assert "5x the slower baseline, 30.0 s" in slow.describe()
    # A baseline that timed out or never ran its workload says nothing of its length.
    assert engine.probe_timeout(None, [baseline(900.0, timed_out=True)]).source == "first"
    assert engine.probe_timeout(None, [baseline(900.0, infra_error="x")]).source == "first"


def env_files(tmp_path: Path, n: int) -> tuple[str, str]:
    for which in ("good", "bad"):
        (tmp_path / f"{which}.env").write_text("".join(f"V{i}={which}\n" for i in range(n)))
    return str(tmp_path / "good.env"), str(tmp_path / "bad.env")


def test_a_hanging_probe_without_timeout_ends_and_the_report_says_why(
    tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    # In process, with the default's floor at 1 s (the real one is a minute).
    from clusterbisect import workflow
    from clusterbisect.config import SessionConfig

    monkeypatch.setattr(engine, "TIMEOUT_FLOOR_S", 1.0)
    good, bad = env_files(tmp_path, 2)
    hang = "import os, time\nif os.environ['V1'] == 'bad' and os.environ['V0'] == 'good':\n"
    (tmp_path / "w.py").write_text(
        hang + "    time.sleep(60)\nif os.environ['V1'] == 'bad': raise SystemExit(1)\n"
    )
    config = SessionConfig(good, bad, command=[sys.executable, str(tmp_path / "w.py")])
    with workflow.new_session(config, tmp_path / "s") as bisection:
        result = workflow.run_session(bisection, None)
    timeout = result["probe_timeout"]
    assert timeout["source"] == "baselines" and timeout["seconds"] >= 1.0
    assert "default" in timeout["rule"]
    hung = [p for p in result["probes"] if p["timed_out"]]
    assert hung and all(p["outcome"] == "unresolved" for p in hung)


def test_max_time_stops_probes_in_flight(tmp_path: Path, cli: Cli) -> None:
    good, bad = env_files(tmp_path, 8)
    # Both baselines are quick; every search probe (some but not all changes) hangs.
    work = tmp_path / "w.sh"
    work.write_text(
        '#!/bin/sh\nn=$(env | grep -c "^V[0-9]*=bad")\n'
        '[ "$n" -eq 8 ] && exit 1\n[ "$n" -eq 0 ] && exit 0\nexec sleep 120\n'
    )
    work.chmod(0o755)
    proc = cli("run", good, bad, "--json", "--quiet", "--max-time", "10", "--", str(work), expect=1)
    result = json.loads(proc.stdout)
    assert result["status"] == "inconclusive"
    assert any("time budget" in note for note in result["notes"])
    assert any("stopped by the time budget" in note for note in result["notes"])
    assert not any(p["timed_out"] for p in result["probes"])  # not journaled as evidence
    assert result["next"]["command"].count("--max-time 20") == 1


# --- output ---------------------------------------------------------------------------------


def test_1_2_mb_before_the_error_is_still_the_failure(tmp_path: Path, cli: Cli) -> None:
    good, bad = env_files(tmp_path, 4)
    (tmp_path / "w.py").write_text(
        "import os, sys\n"
        "if os.environ['V2'] == 'bad':\n"
        "    sys.stdout.write('x' * 1_200_000 + '\\n')\n"
        "    print('RuntimeError: NCCL timeout'); print('after the error'); sys.exit(1)\n"
    )
    argv = ["--fail-on", "NCCL timeout", "--", sys.executable, str(tmp_path / "w.py")]
    result = cli.json("run", good, bad, "--quiet", "--state-dir", str(tmp_path / "s"), *argv)
    assert result["status"] == "found" and culprit_keys(result) == [["env.V2"]]
    proof = result["culprits"][0]["proof"]
    assert "NCCL timeout" in proof["excerpt"] and "NCCL timeout" in proof["observed"]
    log = tmp_path / "s" / proof["log"]
    assert log.stat().st_size < 256 * 1024 + (1 << 20) + 200  # head + tail + the note


def test_a_line_over_a_mebibyte_is_matched_in_pieces(tmp_path: Path) -> None:
    code = "import sys; sys.stdout.write('x' * 3_000_000 + 'RuntimeError: NCCL timeout' + 'y' * 10)"
    runner = LocalRunner(RunnerContext(signature=FailureSignature(fail_on="NCCL timeout")))
    (result,) = runner.run([probe(tmp_path, [sys.executable, "-c", code])])
    assert result.scanned and result.matched is not None
    signature = FailureSignature(fail_on="NCCL timeout")
    assert signature.classify(result) is Outcome.FAIL  # an explicit regex fails even exit 0
    assert signature.observed(result).startswith("exit code 0, matched: ")
    assert "RuntimeError: NCCL timeout" in signature.observed(result)
    assert len(result.output) < 256 * 1024 + (1 << 20) + 200


CONTROLS = (
    "\\x1b[31mRuntimeError: CUDA error\\x1b[0m \\x1b]52;c;ZXZpbA==\\x07\\x1b]0;pwned\\x07"
    "\\x9b2J\\rhidden\\x1b[2K"
)


def test_terminal_control_sequences_never_reach_the_output(tmp_path: Path, cli: Cli) -> None:
    good, bad = env_files(tmp_path, 4)
    (tmp_path / "w.py").write_text(
        f"import os, sys\nif os.environ['V1'] == 'bad':\n    print('{CONTROLS}'); sys.exit(1)\n"
    )
    command = ["--", sys.executable, str(tmp_path / "w.py")]
    state = str(tmp_path / "s")
    proc = cli(
        "run", good, bad, "--state-dir", state, "--fail-on", "CUDA error", *command, expect=0
    )
    shown = proc.stdout + proc.stderr
    for form in ("text", "markdown", "json"):
        shown += cli("report", state, "--format", form, expect=0).stdout
    shown += cli("status", "--state-dir", state, "--json", expect=0).stdout
    assert "RuntimeError: CUDA error" in shown
    assert not any(c in shown for c in ("\x1b", "\x07", "\x9b", "\r")), repr(shown[-500:])
    assert "\\u001b" not in shown and "\\u009b" not in shown  # nor escaped in the JSON


# --- the environment ------------------------------------------------------------------------


def test_an_89k_variable_environment_is_not_argument_list_too_long(
    tmp_path: Path, cli: Cli
) -> None:
    n = 89_000
    lines = [f"SETTING_{i:05d}=value-{i:05d}-of-the-spec" for i in range(n)]
    (tmp_path / "good.env").write_text("\n".join([*lines, "CULPRIT=good", "OTHER=good"]) + "\n")
    (tmp_path / "bad.env").write_text("\n".join([*lines, "CULPRIT=bad", "OTHER=bad"]) + "\n")
    # Python, not sh: dash takes ~20 s to start with 89,000 variables (bash minutes).
    (tmp_path / "w.py").write_text(
        f"#!{sys.executable} -S\nimport os, sys\nprint(os.environ['SETTING_88999'])\n"
        "sys.exit(os.environ['CULPRIT'] == 'bad')\n"
    )
    (tmp_path / "w.py").chmod(0o755)
    assert sum(len(line) + 1 for line in lines) > 2 * (1 << 20)  # over the default limit
    result = cli.json(
        "run", "good.env", "bad.env", "--quiet", "--state-dir", "s", "--", str(tmp_path / "w.py")
    )
    assert result["status"] == "found" and culprit_keys(result) == [["env.CULPRIT"]]
    assert "value-88999-of-the-spec" in result["culprits"][0]["proof"]["excerpt"]


def test_an_environment_linux_cannot_pass_is_a_clear_error(tmp_path: Path, cli: Cli) -> None:
    big = "x" * (200 << 10)
    (tmp_path / "good.env").write_text(f"HUGE={big}\nA=1\n")
    (tmp_path / "bad.env").write_text(f"HUGE={big}\nA=2\n")
    proc = cli("run", "good.env", "bad.env", "--quiet", "--", "true", expect=2)
    assert "env.HUGE" in proc.stderr and "128 KiB" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_the_keeper_is_the_workloads_parent_and_is_gone_after(tmp_path: Path) -> None:
    runner = LocalRunner(RunnerContext())
    (result,) = runner.run([probe(tmp_path, ["sh", "-c", "echo $PPID; ps -o comm= -p $PPID"])])
    parent = result.output.split()
    assert parent[1].startswith("python"), result.output  # the keeper is the parent
    assert not alive(int(parent[0]))
