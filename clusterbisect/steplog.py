"""The step mode's log, like `git bisect log` / `git bisect replay`: the journal written
as a replayable text (a ``start`` line with the session's options, one ``mark`` line
per recorded probe), and a new session made from such a text with its marks re-applied.

Secret values in the options are hidden in the log; its ``config_copy`` names the
private copy (``inputs/config.json``, mode 0600) that ``replay`` takes them from.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clusterbisect.config import SessionConfig
from clusterbisect.errors import InputError
from clusterbisect.redact import REDACTED
from clusterbisect.session import Session, set_current
from clusterbisect.stepmode import Position, next_view, parse_outcome, with_position
from clusterbisect.workflow import Bisection, create_session

LOG_HEADER = "# clusterbisect log"


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


def read_log_file(path: str) -> str:
    """A ``log`` output from a file, for :func:`replay`: UTF-8 text, or bad input."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise InputError(f"cannot read ({err.strerror or err})", source=path) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if (not text and data) or "\x00" in text:
        raise InputError(
            "binary content; expected a `clusterbisect log` output (text)", source=path
        )
    return text


def parse_log(text: str, source: str) -> tuple[SessionConfig, list[dict[str, Any]]]:
    """The session config and the marks of a log written by :func:`log_text`."""
    config: SessionConfig | None = None
    marks: list[dict[str, Any]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        if word not in ("start", "mark"):
            raise InputError(
                f"line {number}: expected `start {{...}}` or `mark {{...}}`", source=source
            )
        try:
            data = json.loads(rest, parse_constant=_not_a_number)
        except (ValueError, RecursionError) as err:
            raise InputError(
                f"line {number}: not JSON after {word!r} ({err})", source=source
            ) from None
        if word == "start" and isinstance(data, dict):
            config = _config_from_log(data, source, number)
        elif word == "mark" and isinstance(data, dict):
            if config is None:
                raise InputError(f"line {number}: a mark before the start line", source=source)
            subset = data.get("subset")
            if not isinstance(subset, list) or not all(isinstance(k, str) for k in subset):
                raise InputError(
                    f"line {number}: a mark needs a subset (a list of change keys)", source=source
                )
            if not isinstance(data.get("outcome"), str):
                raise InputError(f"line {number}: a mark needs an outcome", source=source)
            parse_outcome(str(data["outcome"]))
            marks.append(data)
        else:
            raise InputError(
                f"line {number}: expected `start {{...}}` or `mark {{...}}`", source=source
            )
    if config is None:
        raise InputError("no `start` line; is this a `clusterbisect log` output?", source=source)
    return config, marks


def _not_a_number(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


def _config_from_log(data: dict[str, Any], source: str, number: int) -> SessionConfig:
    data = dict(data)
    private = data.pop("config_copy", None)
    if private and Path(private).is_file():  # the values the log hides (a secret flag)
        data = _unhidden(data, json.loads(Path(private).read_text(encoding="utf-8")))
    for which in ("good", "bad"):
        copy = data.pop(f"{which}_copy", None)
        original = data.get(f"{which}_source")
        if not all(isinstance(v, (str, type(None))) for v in (copy, original)):
            raise InputError(f"line {number}: {which}_source is not a path", source=source)
        if (not original or not Path(original).exists()) and copy and Path(copy).exists():
            data[f"{which}_source"] = copy  # the original moved: use the session's copy
    try:
        return SessionConfig.from_dict({**data, "good": "", "bad": ""})
    except (TypeError, KeyError, ValueError, InputError) as err:
        raise InputError(f"line {number}: bad start line ({err})", source=source) from None


def _unhidden(shown: Any, real: Any) -> Any:
    """``shown`` with every value that hides a secret (``<redacted>``) taken from
    ``real``, where ``real`` has a value at the same place."""
    if isinstance(shown, str):
        return real if REDACTED in shown and isinstance(real, str) else shown
    if isinstance(shown, dict) and isinstance(real, dict):
        return {k: _unhidden(v, real.get(k)) for k, v in shown.items()}
    if isinstance(shown, list) and isinstance(real, list) and len(shown) == len(real):
        return [_unhidden(a, b) for a, b in zip(shown, real, strict=True)]
    return shown
