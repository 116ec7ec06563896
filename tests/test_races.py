"""One writer per session, raced for real, many times.

`run`, `resume`, `start` and recording an outcome hold an flock on the state dir: a
second writer exits 2 naming the PID that holds it. Two `run`s into one --state-dir,
two `resume`s of one session, a `good` while a `resume` runs. (The lock and the
journal's integrity in process: tests/test_session.py.)
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

from conftest import CLI, Cli

from clusterbisect.session import Session

RACES = 8

SLOW_WORKLOAD = (
    "import os, sys, time\n"
    "time.sleep(0.1)\n"
    "sys.exit(1 if os.environ.get('VAR_3') == 'bad' else 0)\n"
)


def write_inputs(folder: Path, n: int = 8) -> tuple[str, str, list[str]]:
    folder.mkdir(parents=True, exist_ok=True)
    for which in ("good", "bad"):
        (folder / f"{which}.env").write_text("".join(f"VAR_{i}={which}\n" for i in range(n)))
    (folder / "work.py").write_text(SLOW_WORKLOAD)
    return (
        str(folder / "good.env"),
        str(folder / "bad.env"),
        [sys.executable, str(folder / "work.py")],
    )


def race(argv: list[str], cwd: Path) -> list[tuple[int, subprocess.CompletedProcess[str]]]:
    """Start the command twice at once; each one's PID and result, once both ended."""
    procs = [
        subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    done = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert "Traceback" not in err, err
        done.append((proc.pid, subprocess.CompletedProcess(proc.args, proc.returncode, out, err)))
    return done


def check_journal(state: Path, probe_count: int) -> None:
    lines = (state / "journal.jsonl").read_text().splitlines()
    ids = [json.loads(line)["probe_id"] for line in lines]
    assert len(ids) == len(set(ids)) == probe_count, ids


def named_holder(proc: subprocess.CompletedProcess[str], command: str) -> int:
    """A refused writer exits 2 and names the PID of the process that held the lock."""
    assert proc.returncode == 2, proc.stderr
    named = re.search(rf"in use by another clusterbisect \(PID (\d+), `{command}`\)", proc.stderr)
    assert named, proc.stderr
    return int(named.group(1))


def test_two_runs_into_one_state_dir_never_both_run(tmp_path: Path) -> None:
    good, bad, work = write_inputs(tmp_path / "in")
    refused = 0
    for attempt in range(RACES):
        state = tmp_path / f"s{attempt}"
        argv = [*CLI, "run", good, bad, "--json", "--quiet", "--state-dir", str(state), "--", *work]
        (pid_a, a), (pid_b, b) = race(argv, cwd=tmp_path)
        assert sorted([a.returncode, b.returncode]) == [0, 2], (a.stderr, b.stderr)
        (winner_pid, winner), loser = ((pid_a, a), b) if a.returncode == 0 else ((pid_b, b), a)
        error = json.loads(loser.stdout)["error"]  # --json: the error as one document
        assert error["code"] == "bad_input"
        if "in use by another clusterbisect" in loser.stderr:
            refused += 1
            assert named_holder(loser, "run") == winner_pid == error["details"]["pid"]
        else:
            assert "already holds a session" in loser.stderr, loser.stderr
        check_journal(state, json.loads(winner.stdout)["probe_count"])
    assert refused >= 1  # raced, not one after the other every time


def test_two_resumes_of_one_session_never_both_run_probes(tmp_path: Path, cli: Cli) -> None:
    good, bad, work = write_inputs(tmp_path / "in")
    refused = 0
    for attempt in range(RACES):
        state = tmp_path / f"s{attempt}"
        cli("start", good, bad, "--state-dir", str(state), "--", *work, expect=0)
        argv = [*CLI, "resume", str(state), "--json", "--quiet"]
        raced = race(argv, cwd=tmp_path)
        results = [json.loads(p.stdout) for _, p in raced if p.returncode == 0]
        assert results, [p.stderr for _, p in raced]
        for (_, proc), (other_pid, _) in zip(raced, reversed(raced), strict=True):
            if proc.returncode != 0:
                refused += 1
                assert named_holder(proc, "resume") == other_pid
        # Whoever came second (if not refused) found the work done: same probes.
        assert len({r["probe_count"] for r in results}) == 1
        check_journal(state, results[0]["probe_count"])
    assert refused >= 1


def test_recording_while_a_resume_runs_is_refused(tmp_path: Path, cli: Cli) -> None:
    good, bad, work = write_inputs(tmp_path / "in")
    state = tmp_path / "s"
    cli("start", good, bad, "--state-dir", str(state), "--", *work, expect=0)
    marker = tmp_path / "started"
    (tmp_path / "in" / "work.py").write_text(
        f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [*CLI, "resume", str(state), "--quiet"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while not marker.exists():  # the resume holds the lock and runs a probe
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.02)
        refused = cli("good", "--state-dir", str(state), expect=2)
        assert f"(PID {proc.pid}, `resume`)" in refused.stderr
    finally:
        proc.kill()
        proc.wait()
        if proc.stderr:
            proc.stderr.close()


def test_reading_commands_do_not_wait_for_the_lock(tmp_path: Path, cli: Cli) -> None:
    good, bad, work = write_inputs(tmp_path / "in")
    state = tmp_path / "s"
    cli("start", good, bad, "--state-dir", str(state), "--", *work, expect=0)
    session = Session.open(state)
    with session.locked("resume"):
        status = cli.json("status", "--state-dir", str(state))
        assert status["done"] is False
        cli("log", "--state-dir", str(state), expect=0)
