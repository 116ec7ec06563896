"""The step-by-step mode, shaped after git bisect: start, next, good/bad/skip, status, log.

The user (or an agent) runs each probe its own way and reports the outcome. Nothing
here launches anything but :func:`exec_probe` (a process on this machine, when asked):
the same engine as ``run`` replays the journal through the search strategy and stops
at the first probe that has no answer yet (``Engine.drive`` with ``execute=False``).

Secret values are never shown: ``next`` names a private file (mode 0600) that holds
them (an env file, a Kubernetes Secret the rendered Job refers to), and ``exec`` runs a
command with the probe's real environment and records what the signature makes of it,
so that a probe can be run without anyone reading its secrets.

Because both modes share the journal, a session started by hand can be finished with
``clusterbisect resume`` and an interrupted ``run`` can be continued by hand.

The current session is recorded in ``.clusterbisect/CURRENT`` (relative to the working
directory), as git keeps its bisect state in ``.git``; every command takes an explicit
state directory instead.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusterbisect import backends
from clusterbisect.config import SessionConfig
from clusterbisect.engine import Engine, EngineOutcome
from clusterbisect.errors import InputError
from clusterbisect.journal import ProbeRecord
from clusterbisect.outcome import Outcome, RunResult
from clusterbisect.redact import REDACTED
from clusterbisect.report import build_result
from clusterbisect.runners.base import Runner
from clusterbisect.search.base import ProbeRequest
from clusterbisect.session import (
    PROBES_DIR,
    Session,
    clear_current,
    is_current,
    resolve_state_dir,
    set_current,
)
from clusterbisect.steplog import parse_log, parse_outcome
from clusterbisect.workflow import (
    Bisection,
    create_session,
    engine_for,
    evidence,
    new_session,
    runner_for,
    save_probe,
)

MAX_EVIDENCE_BYTES = 1 << 20  # a reported log is kept up to this size (its tail)
LOG_HEADER = "# clusterbisect log"

# git bisect's words for the outcomes.


def open_session(explicit: str | os.PathLike[str] | None) -> Bisection:
    """The named session, else the current one, opened for work."""
    return Bisection.open(resolve_state_dir(explicit))


def open_state(explicit: str | os.PathLike[str] | None) -> Session:
    """The named session's state directory, else the current one's (nothing diffed)."""
    return Session.open(resolve_state_dir(explicit))


# --- loading a session's position ----------------------------------------------------


@dataclass
class Position:
    """Where a session stands: the engine over its journal and what the search wants."""

    bisection: Bisection
    engine: Engine
    runner: Runner
    outcome: EngineOutcome

    @property
    def session(self) -> Session:
        return self.bisection.session

    @property
    def done(self) -> bool:
        return self.outcome.result is not None

    @property
    def pending(self) -> list[ProbeRequest]:
        return self.outcome.pending.requests if self.outcome.pending else []

    def pending_numbers(self) -> list[int]:
        """The id numbers of the pending probes: the numbers no recorded probe has taken,
        in order. So a pending probe keeps its id whichever pending probe is recorded
        first."""
        taken = {int(r.probe_id[1:]) for r in self.engine.records if r.probe_id[1:].isdigit()}
        numbers, number = [], 0
        for _ in self.pending:
            number += 1
            while number in taken:
                number += 1
            numbers.append(number)
        return numbers

    def pending_ids(self) -> list[str]:
        return [f"p{number:03d}" for number in self.pending_numbers()]


def locate(bisection: Bisection) -> Position:
    """Replay the journal and stop at the first probe without an answer."""
    runner = runner_for(bisection, render_only=True)
    try:
        engine = engine_for(bisection, runner)
        outcome = engine.drive(execute=False)
    except BaseException:
        runner.close()
        raise
    return Position(bisection, engine, runner, outcome)


def with_position(bisection: Bisection, func: Any) -> Any:
    position = locate(bisection)
    try:
        return func(position)
    finally:
        position.runner.close()


def shown(document: dict[str, Any], verbose: bool = False) -> dict[str, Any]:
    """A step-mode document as it is replied: compact (``compact.py``) unless
    ``verbose``. A view is compacted itself; a reply carrying one under ``next``
    (start, record, replay) has that view compacted."""
    if verbose:
        return document
    from clusterbisect import compact

    view = document.get("next", document)
    backend = document.get("backend") or view.get("backend") or "local"
    local = backends.get(backend).capabilities.local_process
    if "next" in document:
        return compact.with_next(document, local)
    return compact.next_view(document, local)


# --- start ------------------------------------------------------------------------------


def start(config: SessionConfig, state_dir: Path | None) -> dict[str, Any]:
    """Create a session, make it current and show the first probe."""
    with new_session(config, state_dir, "start") as bisection:
        view = next_view(bisection)
    session = bisection.session
    set_current(session.state_dir)
    return {
        "state_dir": str(session.state_dir),
        "session_id": session.session_id,
        "backend": config.backend,
        **{
            k: view[k]
            for k in ("changes_total", "changes_searched", "untestable", "fidelity")
            if k in view
        },
        "warnings": list(bisection.warnings),
        "next": view,
    }


# --- next -------------------------------------------------------------------------------


def next_view(bisection: Bisection, probe: str | None = None) -> dict[str, Any]:
    """The next probe to run (or the result when the search is complete)."""
    return with_position(bisection, lambda position: _next(position, probe))


def _summary(position: Position) -> dict[str, Any]:
    engine = position.engine
    problem = engine.problem
    return {
        "state_dir": str(position.session.state_dir),
        "session_id": position.session.session_id,
        "backend": position.session.config.backend,
        "changes_total": len(problem.changes),
        "changes_searched": len(problem.testable),
        "untestable": problem.untestable_list(),
        "fidelity": position.runner.fidelity().to_dict(),
        "probes_done": len(engine.records),
    }


def _next(position: Position, wanted: str | None) -> dict[str, Any]:
    view = _summary(position)
    if position.done:
        return {**view, "done": True, "result": finish(position)}
    pending, ids = position.pending, position.pending_ids()
    numbers = position.pending_numbers()
    index = pending_index(position, wanted)
    view.update(
        {
            "done": False,
            "probe": describe_probe(position, pending[index], numbers[index]),
            "pending": [
                {
                    "probe": ids[i],
                    "purpose": r.purpose,
                    "runs_needed": position.engine.runs_needed(r),
                    "subset": position.engine.problem.subset_keys(r.subset),
                }
                for i, r in enumerate(pending)
            ],
            "candidates_left": _candidates_left(position),
            "estimated_probes_to_go": position.engine.strategy.remaining_estimate(),
            "then": "run it with `clusterbisect exec PROBE_ID` (the `exec` tool), or your own "
            "way and record the outcome: clusterbisect good|bad|skip [--log FILE], or the "
            "`record` tool",
        }
    )
    return view


def _candidates_left(position: Position) -> int:
    left = position.engine.strategy.candidates_left()
    return left or len(position.engine.problem.testable)


def pending_index(position: Position, wanted: str | None) -> int:
    if wanted is None:
        return 0
    ids = position.pending_ids()
    if wanted not in ids:
        raise InputError(
            f"probe {wanted!r} is not pending; pending probes: {', '.join(ids)}",
            field="probe",
            details={"pending": ids},
        )
    return ids.index(wanted)


def describe_probe(position: Position, request: ProbeRequest, number: int) -> dict[str, Any]:
    """A pending probe: the changes to apply and what the backend would launch.

    What is shown holds no secret value. The real values are in ``private_file``
    (mode 0600): ``use`` says how to run the probe with it, and for a probe that is a
    local process ``exec`` is the command that runs it and records its outcome.
    """
    engine, runner, session = position.engine, position.runner, position.session
    probe = engine.make_probe(request, number)
    changes = engine.problem.subset_changes(request.subset)
    rendered = runner.render(probe)
    described: dict[str, Any] = {
        "id": probe.probe_id,
        "purpose": request.purpose,
        "runs_needed": engine.runs_needed(request),
        "changes_applied": len(changes),
        "changes": [c.to_dict() for c in changes],
        "rendered": rendered,
    }
    saved = save_probe(session, PROBES_DIR, runner, probe)
    if backends.get(session.config.backend).capabilities.local_process:
        env = rendered.get("env") or {}
        described["unset"] = sorted(set(probe.env_names) - set(env))
        # Values hidden here are in the private file; `exec` runs the probe with them.
        described["redacted"] = sorted(k for k, v in env.items() if REDACTED in v)
        described["exec"] = _exec_line(session, probe.probe_id)
    described["rendered_file"] = saved.pop("manifest")
    described.update(saved)
    return described


def _exec_line(session: Session, probe_id: str) -> str:
    """The command that runs ``probe_id`` here with its real environment, as written
    (from any directory: it names the session)."""
    line = shlex.join(["clusterbisect", "exec", probe_id, "--state-dir", str(session.state_dir)])
    return line if session.config.command else line + " -- COMMAND..."


# --- recording outcomes ---------------------------------------------------------------


def record(
    bisection: Bisection,
    outcome: Outcome | None,
    *,
    probe: str | None = None,
    run: RunResult | None = None,
    log_file: str | None = None,
    log_text: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Journal the outcome of a pending probe (default: the first) and show the next.

    Without ``outcome``, the session's failure signature classifies ``run`` (with the
    log as its output), exactly as it classifies the runner's probes. With both, they
    must agree (a pass with exit code 1 is refused) unless ``force``.
    """
    if outcome is None and run is None:
        raise InputError("give an outcome, or an exit code for the signature to classify")
    if log_file is not None and log_text is not None:
        raise InputError("give the log as a file or as text, not both", field="log")

    def _record(position: Position) -> dict[str, Any]:
        if position.done:
            raise InputError(
                "the bisection is complete; nothing is pending (see `clusterbisect status`)",
                source=str(position.session.state_dir),
            )
        index = pending_index(position, probe)
        request = position.pending[index]
        number = position.pending_numbers()[index]
        text = _read_log(log_file) if log_file is not None else log_text
        session = position.session
        log_rel = session.write_log(f"p{number:03d}", text) if text is not None else None
        if run is not None and text is not None:
            run.output = text  # a --fail-on regex is matched against the log
        if outcome is not None:
            if run is not None and not force:
                _check_agreement(position, outcome, run)
            verdict = outcome
        else:
            assert run is not None
            verdict = position.engine.classify(request.purpose, f"p{number:03d}", run)
        entry = position.engine.record_manual(
            request.subset, verdict, request.purpose, log=log_rel, run=run, number=number
        )
        return recorded_view(session, entry, "reporter" if outcome is not None else "signature")

    with bisection.session.locked("record"):
        recorded = with_position(bisection, _record)
        return {**recorded, "next": next_view(bisection)}


def _check_agreement(position: Position, outcome: Outcome, run: RunResult) -> None:
    """Refuse an outcome that what was observed contradicts: a pass the signature reads
    as a failure or unresolved (exit code 1, a timeout, an infrastructure error), or a
    fail it reads as a pass. An unresolved outcome is always accepted (a reporter may
    know the probe did not run properly)."""
    signature = position.engine.signature
    read = signature.classify(run)
    if outcome is Outcome.UNRESOLVED or read is outcome:
        return
    if outcome is Outcome.FAIL and read is Outcome.UNRESOLVED:
        return  # a different failure by the signature, but the reporter saw this one
    seen = signature.observed(run) if read is not Outcome.PASS else "a clean run"
    raise InputError(
        f"{outcome.value!r} contradicts what was observed ({seen}), which the "
        f"session's signature ({signature.describe()}) reads as {read.value}: give only "
        "what you observed and let the signature decide, or force the outcome "
        "(force: true, --force)",
        field="outcome",
        details={"outcome": outcome.value, "signature_reads": read.value},
    )


def recorded_view(session: Session, entry: ProbeRecord, classified_by: str) -> dict[str, Any]:
    return {
        "recorded": {
            "probe": entry.probe_id,
            "purpose": entry.purpose,
            "outcome": entry.outcome,
            "classified_by": classified_by,
            "observed": entry.observed,
            "exit_code": entry.exit_code,
            "changes_applied": len(entry.subset),
            "log": str(session.path_of(entry.log)) if entry.log else None,
        }
    }


def _read_log(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - MAX_EVIDENCE_BYTES))
            data = handle.read()
    except OSError as err:
        raise InputError(f"cannot read the log ({err.strerror or err})", source=path) from None
    text = data.decode("utf-8", errors="replace")
    if size > MAX_EVIDENCE_BYTES:
        text = (
            f"[clusterbisect: the first {size - MAX_EVIDENCE_BYTES} bytes were not kept]\n" + text
        )
    return text


# --- status, result, log ----------------------------------------------------------------


def status(bisection: Bisection) -> dict[str, Any]:
    """Where the session stands; the result when the search is complete."""

    def _status(position: Position) -> dict[str, Any]:
        view = _summary(position)
        records = position.engine.records
        view["current"] = is_current(position.session)
        view["manual_probes"] = sum(1 for r in records if r.source in ("manual", "exec"))
        view["rounds"] = position.engine.rounds
        view["last"] = (
            {"probe": records[-1].probe_id, "outcome": records[-1].outcome} if records else None
        )
        if position.done:
            view["done"] = True
            view["result"] = finish(position)
        else:
            view["done"] = False
            stored = position.session.read_result() or {}
            if stored.get("stopped_early") and stored.get("probe_count") == len(records):
                # A run its budget stopped: say so before anything else.
                view["stopped_early"] = stored["stopped_early"]
                view["continue_with"] = stored.get("continue_with")
            view["pending"] = position.pending_ids()
            view["candidates_left"] = _candidates_left(position)
            view["estimated_probes_to_go"] = position.engine.strategy.remaining_estimate()
        return view

    return with_position(bisection, _status)


def result(bisection: Bisection) -> dict[str, Any]:
    """The finished result, or where the search stands if it is not finished."""

    def _result(position: Position) -> dict[str, Any]:
        if position.done:
            return finish(position)
        candidates = position.engine.strategy.candidates()
        return {
            **_summary(position),
            "status": "in_progress",
            "pending": position.pending_ids(),
            "candidates": [
                [c.to_dict() for c in position.engine.problem.subset_changes(s)] for s in candidates
            ],
            "probe_count": len(position.engine.records),
        }

    return with_position(bisection, _result)


def finish(position: Position) -> dict[str, Any]:
    """The result of a complete search, written to result.json (kept if up to date)."""
    session, engine = position.session, position.engine
    stored = session.read_result()
    if stored and stored.get("probe_count") == len(engine.records):
        return stored
    assert position.outcome.result is not None
    elapsed = _elapsed(session, engine)
    document = build_result(
        evidence(engine, position.outcome.result, elapsed, position.bisection.warnings)
    )
    session.write_result(document)
    return document


def _elapsed(session: Session, engine: Engine) -> float:
    """Wall-clock time from the session's creation to its last probe."""
    if not session.created:
        return sum(r.duration_s for r in engine.records)
    last = max((r.finished_at for r in engine.records), default=time.time())
    return max(0.0, last - session.created)


def log_text(session: Session) -> str:
    """The journal as a replayable log, like `git bisect log`."""
    config = session.config.to_dict()
    for which in ("good", "bad"):
        source = config[f"{which}_source"]
        config[f"{which}_copy"] = str(session.input_path(which))
        if not Path(source).is_absolute() and Path(source).exists():
            config[f"{which}_source"] = str(Path(source).resolve())
        del config[which]
    config = session.redactor.value(config)
    if session.private_config is not None:  # what is hidden above, for `replay`
        config["config_copy"] = str(session.private_config)
    lines = [
        f"{LOG_HEADER} of session {session.session_id} ({session.state_dir})",
        "# replay with: clusterbisect replay FILE (edit or delete `mark` lines first if needed)",
        "start " + json.dumps(config, sort_keys=True),
    ]
    for r in session.records():
        detail = f" ({r.observed})" if r.observed else ""
        lines.append(
            f"# {r.probe_id} round {r.round} {r.purpose}: {r.outcome}{detail}, "
            f"{len(r.subset)} changes, by {r.source}" + (f", log {r.log}" if r.log else "")
        )
        mark = {"outcome": r.outcome, "subset": r.subset, "purpose": r.purpose}
        if r.log:
            mark["log"] = str(session.path_of(r.log))
        lines.append("mark " + json.dumps(mark, sort_keys=True))
    return "\n".join(lines) + "\n"


# --- replay and reset ------------------------------------------------------------------


def replay(text: str, source: str, state_dir: Path | None) -> dict[str, Any]:
    """Start a new session from a log's ``start`` line and re-apply its marks in order.

    Like `git bisect replay`, this is how a wrong mark is corrected: edit the log,
    then replay it. Marks are journaled as reported outcomes; a mark the search does
    not ask for is still kept as a cached answer.
    """
    config, marks = parse_log(text, source)
    bisection = create_session(config, state_dir, "replay")
    try:
        return _replay_marks(bisection, marks, source)
    finally:
        bisection.session.close()


def _replay_marks(bisection: Bisection, marks: list[dict[str, Any]], source: str) -> dict[str, Any]:
    set_current(bisection.session.state_dir)

    def _apply(position: Position) -> int:
        engine = position.engine
        by_key = {c.key: i for i, c in enumerate(engine.problem.testable)}
        for number, mark in enumerate(marks, 1):
            unknown = [k for k in mark["subset"] if k not in by_key]
            if unknown:
                raise InputError(
                    f"mark {number} names changes this session does not search: "
                    f"{', '.join(unknown[:5])}",
                    source=source,
                )
            subset = frozenset(by_key[k] for k in mark["subset"])
            log = mark.get("log")
            engine.record_manual(
                subset,
                parse_outcome(mark["outcome"]),
                str(mark.get("purpose", "search")),
                log=str(log) if log and Path(log).exists() else None,
            )
        return len(marks)

    applied = with_position(bisection, _apply)
    state = str(bisection.session.state_dir)
    return {"replayed": applied, "state_dir": state, "next": next_view(bisection)}


def reset(explicit: str | None) -> dict[str, Any]:
    """End the session: it is no longer current. Its state directory is kept."""
    state_dir = resolve_state_dir(explicit).resolve()
    session = Session.open(state_dir)
    was_current = is_current(session)
    if was_current:
        clear_current()
    result = session.read_result()
    return {
        "ended": True,
        "state_dir": str(session.state_dir),
        "was_current": was_current,
        "status": result["status"] if result else "unfinished",
        "probes": len(session.records()),
    }
