"""The step mode's words and its log read back: an outcome as a person or an agent
says it (``good``, ``bad``, ``skip`` too), and a ``clusterbisect log`` output (its
``start`` line and its marks) checked and turned into a session config and marks, for
``replay``. A value the log hides (``<redacted>``) is taken from the session's private
copy of its config when that is still there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clusterbisect.config import SessionConfig
from clusterbisect.errors import InputError
from clusterbisect.outcome import Outcome
from clusterbisect.redact import REDACTED

ALIASES = {"good": Outcome.PASS, "bad": Outcome.FAIL, "skip": Outcome.UNRESOLVED}


def parse_outcome(word: str) -> Outcome:
    if word in ALIASES:
        return ALIASES[word]
    try:
        return Outcome(word)
    except ValueError:
        raise InputError(
            f"unknown outcome {word!r}; expected pass, fail or unresolved (or good, bad, skip)",
            field="outcome",
        ) from None


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
