"""A run's result comes before its teardown; a resume clears leftovers before it runs.

In process, with the scripted backend (tests/fakes.py): its runner's ``close`` and its
cleanup hook record what had happened when they were called.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from fakes import ScriptedOptions, ScriptedRunner, register

from clusterbisect import backends, workflow
from clusterbisect.config import SessionConfig, SignatureOptions
from clusterbisect.progress import TerminalProgress

seen: list[tuple[Any, ...]] = []


def cleanup_hook(
    session_id: str | None, *, options: Any, private_dir: Path | None, dry_run: bool
) -> dict:
    """The scripted backend's cleanup hook: what a backend is given to clear leftovers."""
    assert not dry_run  # resume deletes; only an unscoped ``cleanup`` asks first
    seen.append(("cleanup", session_id, type(options).__name__, private_dir))
    return {"summary": "nothing left"}


@pytest.fixture(autouse=True)
def scripted_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    register(monkeypatch)
    entry = backends.BACKENDS["scripted"]
    monkeypatch.setitem(
        backends.BACKENDS,
        "scripted",
        backends.Backend(
            entry.name,
            entry.summary,
            entry.options,
            entry.factory,
            entry.capabilities,
            cleanup="test_teardown:cleanup_hook",
            cleanup_options=ScriptedOptions,
        ),
    )
    seen.clear()


def new_session(tmp_path: Path) -> workflow.Bisection:
    (tmp_path / "good.env").write_text("A=good\nB=good\n")
    (tmp_path / "bad.env").write_text("A=bad\nB=bad\n")
    config = SessionConfig(
        good_source=str(tmp_path / "good.env"),
        bad_source=str(tmp_path / "bad.env"),
        backend="scripted",
        signature=SignatureOptions(fail_on="CUDA error"),
        backend_options=ScriptedOptions([["B"]]),
    )
    return workflow.create_session(config, tmp_path / "state")


def test_the_result_is_written_and_published_before_the_runner_is_torn_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bisection = new_session(tmp_path)
    result_file = bisection.session.result_path

    def close(runner: ScriptedRunner) -> None:
        seen.append(("close", result_file.exists(), [c[0] for c in seen]))

    monkeypatch.setattr(ScriptedRunner, "close", close)
    stream = io.StringIO()
    result = workflow.run_session(
        bisection, TerminalProgress(stream), lambda r: seen.append(("publish", r["status"]))
    )
    assert result["status"] == "found"
    # Published first; at close the result file existed and the result was out.
    assert seen == [("publish", "found"), ("close", True, ["publish"])]
    assert "teardown" not in stream.getvalue()  # an instant teardown is not worth a line


def test_a_slow_teardown_is_reported_after_the_result_and_not_in_its_time() -> None:
    stream = io.StringIO()
    TerminalProgress(stream).torn_down(3.24)
    assert stream.getvalue() == "teardown: 3.2s after the result (not counted in its time)\n"


def test_resume_clears_the_sessions_leftovers_first(tmp_path: Path) -> None:
    bisection = new_session(tmp_path)
    session = bisection.session
    result = workflow.resume_session(bisection, None, lambda r: seen.append(("publish",)))
    assert result["status"] == "found"
    assert seen[0] == (
        "cleanup",
        session.session_id,
        "ScriptedOptions",
        session.private_dir("scripted"),
    )
    assert seen[1] == ("publish",)


def test_cleanup_of_a_session_uses_its_backend_and_directory(tmp_path: Path) -> None:
    session = new_session(tmp_path).session
    report = workflow.cleanup(None, None, None, session.state_dir)
    assert report == {"summary": "nothing left"}
    assert seen == [
        ("cleanup", session.session_id, "ScriptedOptions", session.private_dir("scripted"))
    ]
