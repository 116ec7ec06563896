"""The session's state directory, in process: creation, the journal, its paths, CURRENT."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clusterbisect import session as sessions
from clusterbisect.config import LimitOptions, SessionConfig
from clusterbisect.errors import InputError
from clusterbisect.journal import ProbeRecord
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


def test_the_journal_keeps_every_record_and_skips_a_torn_line(
    tmp_path: Path, config: SessionConfig
) -> None:
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
