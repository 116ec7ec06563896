"""The session's state directory, in process: creation, the journal, its paths, CURRENT.

The journal survives every crash: a torn last line is cut off on open (with a
warning), kept in journal.jsonl.torn and never appended to; a whole last record
missing its newline is kept; probe ids are never reused (not after a torn line, not
after a killed probe's log). The lock: one writer, named to the next (the real races
between processes: tests/test_races.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from clusterbisect import session as sessions
from clusterbisect.config import LimitOptions, SessionConfig
from clusterbisect.errors import InputError
from clusterbisect.journal import ProbeRecord
from clusterbisect.locking import StateLock, holder
from clusterbisect.session import Session


@pytest.fixture
def config(tmp_path: Path) -> SessionConfig:
    (tmp_path / "good.env").write_text("A=1\n")
    (tmp_path / "bad.env").write_text("A=2\n")
    return SessionConfig(
        good_source=str(tmp_path / "good.env"),
        bad_source=str(tmp_path / "bad.env"),
        command=["python", "w.py"],
        limits=LimitOptions(timeout=5.0),
    )


def record(probe_id: str, outcome: str = "pass") -> ProbeRecord:
    return ProbeRecord(probe_id=probe_id, round=1, subset=["env.A"], outcome=outcome)


def test_a_session_is_created_and_opened_again(tmp_path: Path, config: SessionConfig) -> None:
    made = Session.create(config, tmp_path / "s")
    assert (made.state_dir / "inputs" / "good.env").read_text() == "A=1\n"
    assert made.config.good == "inputs/good.env" and made.created > 0
    opened = Session.open(tmp_path / "s")
    assert opened.config == made.config and opened.session_id == made.session_id
    assert opened.created == pytest.approx(made.created)
    assert opened.spec("bad").document == {"env": {"A": "2"}}
    assert opened.spec("bad").source == config.bad_source  # what the user gave
    with pytest.raises(InputError, match=r"in use by another clusterbisect \(PID \d+, `run`\)"):
        Session.create(config, tmp_path / "s")  # the creator still holds the lock
    made.close()
    with pytest.raises(InputError, match="already holds a session"):
        Session.create(config, tmp_path / "s")
    with pytest.raises(InputError, match="not a clusterbisect state directory"):
        Session.open(tmp_path)


def test_a_reader_skips_a_torn_line(tmp_path: Path, config: SessionConfig) -> None:
    made = Session.create(config, tmp_path / "s")
    made.append(record("p001"))
    made.append(record("p002", "fail"))
    with open(made.state_dir / sessions.JOURNAL_FILE, "a") as journal:
        journal.write('{"probe_id": "p003", "rou')  # killed mid-write
    assert [r.probe_id for r in made.records()] == ["p001", "p002"]
    assert made.records()[1] == record("p002", "fail")


def test_the_session_owns_the_paths_it_writes(tmp_path: Path, config: SessionConfig) -> None:
    made = Session.create(config, tmp_path / "s")
    state = made.state_dir
    assert made.log_path("p004") == state / "logs" / "p004.log"
    assert made.write_log("p004", "boom\n") == "logs/p004.log"
    assert made.read_log("logs/p004.log") == "boom\n" and made.read_log("logs/none.log") == ""
    path = made.save_rendered(sessions.DRY_RUN_DIR, "p001", {"env": {"A": "2"}})
    assert path == state / "dry-run" / "p001.yaml" and "A: '2'" in path.read_text()
    assert made.save_rendered(sessions.PROBES_DIR, "p002", {}).parent == state / "probes"
    assert made.manifests_dir == state / "manifests"
    assert made.private_dir("ray") == state / "ray"
    assert made.write_bisect_log("log\n") == state / "bisect.log"
    made.write_result({"status": "found"})
    assert made.read_result() == {"status": "found"}
    assert json.loads(made.result_path.read_text()) == {"status": "found"}


def test_discard_removes_only_what_create_made(tmp_path: Path, config: SessionConfig) -> None:
    state = tmp_path / "s"
    state.mkdir()
    (state / "notes.txt").write_text("mine")
    Session.create(config, state).discard()
    assert sorted(p.name for p in state.iterdir()) == ["notes.txt"]
    Session.create(config, tmp_path / "t").discard()
    assert not (tmp_path / "t").exists()


def test_an_older_flat_session_file_still_opens(tmp_path: Path) -> None:
    state = tmp_path / "old"
    (state / "inputs").mkdir(parents=True)
    (state / "inputs" / "good.env").write_text("A=1\n")
    flat = {
        "good": "inputs/good.env",
        "bad": "inputs/good.env",
        "good_source": "good.env",
        "bad_source": "bad.env",
        "backend": "local",
        "signature": {"fail_on": "boom"},
        "parallel": 3,
        "timeout_s": None,
        "strategy": "auto",
        "strategy_options": {"confidence": 0.99, "baseline_runs": 1},
    }
    (state / sessions.SESSION_FILE).write_text(
        json.dumps({"session_id": "x", "created": 1.0, "config": flat})
    )
    opened = Session.open(state)
    assert opened.config.search.parallel == 3 and opened.config.signature.fail_on == "boom"


def test_the_current_session_pointer(
    tmp_path: Path, config: SessionConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match="no bisection in progress"):
        sessions.resolve_state_dir(None)
    made = Session.create(config, tmp_path / "s")
    sessions.set_current(made.state_dir)
    assert (tmp_path / ".clusterbisect" / "CURRENT").read_text().strip() == str(made.state_dir)
    assert sessions.resolve_state_dir(None) == made.state_dir and sessions.is_current(made)
    assert sessions.resolve_state_dir("elsewhere") == Path("elsewhere")
    sessions.clear_current()
    assert not sessions.is_current(made)


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
