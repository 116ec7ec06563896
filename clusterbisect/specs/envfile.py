"""Env dumps (``env`` / ``printenv`` output) and ``.env`` files as specs.

The document is ``{"env": {NAME: value}}``. Two dialects, told apart by the file name
and the syntax it uses:

- a ``.env`` file (``.env``, ``*.env``, ``.env.*``, or any ``export``, quoted value,
  comment or space around ``=``) is read as python-dotenv reads it: ``export``
  prefixes, spaces around ``=``, single and double quotes (with escapes in double
  quotes), multi-line quoted values, trailing ``# comments`` after unquoted values.
  Values are taken literally: ``${VAR}`` is not expanded (the machine's environment
  must not leak into a spec), as with ``dotenv_values(interpolate=False)``;
- an env dump is taken as printed: every ``NAME=value`` line literally, and a line
  that is not an assignment continues the previous value (``env`` prints multi-line
  values that way).

A name assigned twice is an error naming both lines. Shell bookkeeping that differs
between any two shells (``_``, ``SHLVL``, ``OLDPWD``, ``HOSTNAME`` = the pod name) is
noise.
"""

from __future__ import annotations

import io
import re
from pathlib import PurePath

from clusterbisect.errors import InputError
from clusterbisect.specs.model import ENV, Spec

ASSIGNMENT = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)
# A .env assignment may have spaces around "=" and dots or dashes in the name.
DOTENV_ASSIGNMENT = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_.-]*)\s*=(.*)$", re.DOTALL)
ENV_NOISE = frozenset({"_", "SHLVL", "OLDPWD", "HOSTNAME"})
# A line python-dotenv reads as exactly NAME and value: no quotes, spaces, escapes or
# comments. A file of only such lines (and blank ones) skips its slower parser.
PLAIN_DOTENV_LINE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=([^\s'\"\\]*)")


def is_assignment(line: str) -> bool:
    """``NAME=value`` or ``NAME = value`` (not ``name==1.0``, a pinned requirement)."""
    m = DOTENV_ASSIGNMENT.match(line.strip())
    return m is not None and not m.group(2).lstrip().startswith("=")


def looks_like_env(lines: list[str]) -> bool:
    """The first line assigns a variable and most lines are assignments."""
    if not lines or not is_assignment(lines[0]):
        return False
    assignments = sum(1 for ln in lines if is_assignment(ln))
    return assignments * 2 >= len(lines)


def is_dotenv(text: str, source: str) -> bool:
    """Whether ``text`` is a ``.env`` file (python-dotenv syntax), not an env dump."""
    name = PurePath(source).name
    if name == ".env" or name.endswith(".env") or name.startswith(".env."):
        return True
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith(("#", "export ")):
            return True
        m = DOTENV_ASSIGNMENT.match(line)
        if m and (not ASSIGNMENT.match(line) or m.group(2)[:1] in ("'", '"')):
            return True
    return False


def _duplicate(name: str, line: int, first: int, source: str) -> InputError:
    return InputError(
        f"line {line}: {name} is assigned twice (first at line {first})", source=source
    )


def _parse_plain_dotenv(text: str, source: str) -> dict[str, str] | None:
    """The file as python-dotenv reads it, if every line is plain (else None)."""
    env: dict[str, str] = {}
    lines: dict[str, int] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        if not line:
            continue
        m = PLAIN_DOTENV_LINE.fullmatch(line)
        if m is None:
            return None
        name = m.group(1)
        if name in lines:
            raise _duplicate(name, number, lines[name], source)
        lines[name] = number
        env[name] = m.group(2)
    return env


def _parse_dotenv(text: str, source: str) -> dict[str, str]:
    plain = _parse_plain_dotenv(text, source)
    if plain is not None:
        return plain
    from dotenv.parser import parse_stream

    env: dict[str, str] = {}
    lines: dict[str, int] = {}
    for binding in parse_stream(io.StringIO(text)):
        # A binding starts with the blank lines before it: its own line is after them.
        original = binding.original.string
        blank = original[: len(original) - len(original.lstrip())]
        line = binding.original.line + blank.count("\n")
        if binding.error:
            shown = binding.original.string.strip()[:40]
            raise InputError(f"line {line}: not a .env assignment: {shown!r}", source=source)
        if binding.key is None or binding.value is None:
            continue  # a comment, a blank line, or a name without "=" (python-dotenv skips it)
        if binding.key in lines:
            raise _duplicate(binding.key, line, lines[binding.key], source)
        lines[binding.key] = line
        env[binding.key] = binding.value
    return env


def _parse_dump(text: str, source: str) -> dict[str, str]:
    env: dict[str, str] = {}
    lines: dict[str, int] = {}
    current: str | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r")
        m = ASSIGNMENT.match(line)
        if m and not m.group(2).startswith("="):
            current = m.group(1)
            if current in lines:
                raise _duplicate(current, number, lines[current], source)
            lines[current] = number
            env[current] = m.group(2)
            continue
        if not line.strip():
            continue  # between assignments, not inside a value
        if current is None:
            raise InputError(
                f"line {number}: not an assignment: {line.strip()[:40]!r}", source=source
            )
        env[current] += "\n" + line
    return env


def parse_env_text(text: str, source: str) -> dict[str, str]:
    """``NAME -> value`` from env-dump or .env text (noise included)."""
    if is_dotenv(text, source):
        return _parse_dotenv(text, source)
    return _parse_dump(text, source)


def parse(text: str, source: str) -> Spec:
    """Parse an env dump or ``.env`` file into a spec (noise stripped)."""
    env = {k: v for k, v in parse_env_text(text, source).items() if k not in ENV_NOISE}
    return Spec(format=ENV, kind="EnvFile", source=source, document={"env": env})


def render(spec: Spec) -> str:
    """The spec as a ``.env`` file (values quoted when needed)."""
    lines = []
    for name, value in (spec.document.get("env") or {}).items():
        text = str(value)
        if any(c in text for c in " \n\"'#$\\"):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
        lines.append(f"{name}={text}\n")
    return "".join(lines)
