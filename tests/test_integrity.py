"""The journal survives every crash, and a session has one writer at a time.

- a torn last line is cut off on open (with a warning), kept in journal.jsonl.torn,
  and never appended to; a whole last record missing its newline is kept;
- probe ids are never reused (not after a torn line, not after a killed probe's log);
- `run`, `resume`, `start` and recording an outcome hold an flock on the state dir: a
  second writer exits 2 naming the PID that holds it. Raced for real, many times.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import CLI, Cli

from clusterbisect.config import SessionConfig
from clusterbisect.errors import InputError
from clusterbisect.journal import ProbeRecord
from clusterbisect.locking import StateLock, holder
from clusterbisect.session import Session

RACES = 8


@pytest.fixture
def config(tmp_path: Path) -> SessionConfig:
    (tmp_path / "good.env").write_text("A=1\n")
    (tmp_path / "bad.env").write_text("A=2\n")
    return SessionConfig(
        good_source=str(tmp_path / "good.env"),
        bad_source=str(tmp_path / "bad.env"),
        command=["true"],
    )


def record(probe_id: str, outcome: str = "pass") -> ProbeRecord:
    return ProbeRecord(probe_id=probe_id, round=1, subset=["env.A"], outcome=outcome)


def made(config: SessionConfig, state: Path) -> Session:
    session = Session.create(config, state)
    session.close()
    return session


# --- the journal ------------------------------------------------------------------------


def test_a_torn_tail_is_cut_off_kept_aside_and_never_appended_to(
    tmp_path: Path, config: SessionConfig, capsys: pytest.CaptureFixture[str]
) -> None:
    session = made(config, tmp_path / "s")
    for probe_id in ("p001", "p002", "p003"):
        session.append(record(probe_id))
    torn = b'{"duration_s": 0.1, "exit_code": 1, "log": "logs/p004.log", "probe_id": "p004", "ou'
    with open(session.journal_path, "ab") as journal:
        journal.write(torn)
    # A reader (status, report) skips the torn tail and changes nothing.
    assert [r.probe_id for r in session.records()] == ["p001", "p002", "p003"]
    assert session.journal_path.read_bytes().endswith(torn)
    # The torn record's id is taken: the next probe is p005, never a second p004.
    assert session.new_probe_numbers(2) == [5, 6]
    with session.locked("resume"):
        assert not session.journal_path.read_bytes().endswith(torn)
        session.append(record("p005", "fail"))
    assert "torn" in capsys.readouterr().err
    kept = session.journal_path.with_name("journal.jsonl.torn").read_bytes()
    assert kept == torn + b"\n"
    lines = session.journal_path.read_text().splitlines()
    assert [json.loads(line)["probe_id"] for line in lines] == ["p001", "p002", "p003", "p005"]
    assert session.new_probe_numbers(1) == [6]


def test_a_whole_last_record_without_its_newline_is_kept(
    tmp_path: Path, config: SessionConfig
) -> None:
    session = made(config, tmp_path / "s")
    session.append(record("p001"))
    with open(session.journal_path, "a") as journal:
        journal.write(record("p002", "fail").to_line().rstrip("\n"))
    with session.locked("resume"):
        session.append(record("p003"))
    assert [r.probe_id for r in session.records()] == ["p001", "p002", "p003"]
    assert not session.journal_path.with_name("journal.jsonl.torn").exists()


def test_a_damaged_line_inside_the_journal_is_an_error_naming_it(
    tmp_path: Path, config: SessionConfig
) -> None:
    session = made(config, tmp_path / "s")
    session.append(record("p001"))
    with open(session.journal_path, "a") as journal:
        journal.write("not a record\n")
    session.append(record("p002"))
    with pytest.raises(InputError, match=r"journal.jsonl: line 2 is not a probe record"):
        session.records()


def test_a_killed_probes_log_keeps_its_number(tmp_path: Path, config: SessionConfig) -> None:
    session = made(config, tmp_path / "s")
    session.append(record("p001"))
    session.log_path("p002").write_text("killed mid-run\n")  # a log, no record
    assert session.new_probe_numbers(2) == [3, 4]
    assert session.taken_numbers() == {1, 2}


# --- the lock, in process ------------------------------------------------------------------


def test_the_lock_is_exclusive_and_names_its_holder(tmp_path: Path, config: SessionConfig) -> None:
    session = made(config, tmp_path / "s")
    with session.locked("resume"):
        assert holder(session.state_dir) == (os.getpid(), "resume")
        other = Session.open(session.state_dir)
        with (
            pytest.raises(InputError, match=r"in use by another clusterbisect \(PID \d+, `resume`"),
            other.locked("record"),
        ):
            pass
    with other.locked("record"):  # released: the next writer gets it
        pass


def test_a_discarded_session_leaves_no_lock_behind(tmp_path: Path, config: SessionConfig) -> None:
    session = Session.create(config, tmp_path / "s")
    session.discard()
    assert not (tmp_path / "s").exists()
    lock = StateLock.acquire(tmp_path, "run")  # the parent folder is untouched
    lock.release(remove=True)


# --- the lock, raced for real --------------------------------------------------------------

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
