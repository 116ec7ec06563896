"""Env dumps (``env`` / ``printenv`` output) and ``.env`` files as specs.

The document is ``{"env": {NAME: value}}``. ``export`` prefixes and matching quotes
are removed; a line that is not an assignment continues the previous value (``env``
prints multi-line values that way). Shell bookkeeping that differs between any two
shells (``_``, ``SHLVL``, ``OLDPWD``, ``HOSTNAME`` = the pod name) is noise.
"""

from __future__ import annotations

import re

from clusterbisect.errors import InputError
from clusterbisect.specs.model import ENV, Spec

ASSIGNMENT = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$", re.DOTALL)
ENV_NOISE = frozenset({"_", "SHLVL", "OLDPWD", "HOSTNAME"})


def is_assignment(line: str) -> bool:
    """``NAME=value`` (not ``name==1.0``, which is a pinned requirement)."""
    m = ASSIGNMENT.match(line.strip())
    return m is not None and not m.group(2).startswith("=")


def looks_like_env(lines: list[str]) -> bool:
    """The first line assigns a variable and most lines are assignments."""
    if not lines or not is_assignment(lines[0]):
        return False
    assignments = sum(1 for ln in lines if is_assignment(ln))
    return assignments * 2 >= len(lines)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        inner = value[1:-1]
        return inner.replace('\\"', '"').replace("\\n", "\n") if value[0] == '"' else inner
    return value


def parse_env_text(text: str, source: str) -> dict[str, str]:
    """``NAME -> value`` from env-dump or .env text (noise included)."""
    env: dict[str, str] = {}
    current: str | None = None
    open_quote: str | None = None
    for raw in text.splitlines():
        line = raw.rstrip("\r")
        if open_quote is not None and current is not None:
            env[current] += "\n" + line
            if line.rstrip().endswith(open_quote):
                env[current] = _unquote(env[current].strip())
                open_quote = None
            continue
        stripped = line.strip()
        m = ASSIGNMENT.match(stripped)
        if m and not m.group(2).startswith("="):
            current, value = m.group(1), m.group(2)
            if value[:1] in ("'", '"') and (
                len(value) == 1 or not value.rstrip().endswith(value[0])
            ):
                open_quote = value[0]
                env[current] = value
            else:
                env[current] = _unquote(value.strip()) if value[:1] in "'\"" else value
            continue
        if not stripped or stripped.startswith("#"):
            continue
        if current is None:
            raise InputError(f"not an assignment: {stripped[:40]!r}", source=source)
        env[current] += "\n" + line
    if open_quote is not None:
        raise InputError(f"unterminated quote in the value of {current}", source=source)
    return env


def parse(text: str, source: str) -> Spec:
    """Parse an env dump or ``.env`` file into a spec (noise stripped)."""
    env = {k: v for k, v in parse_env_text(text, source).items() if k not in ENV_NOISE}
    return Spec(format=ENV, kind="EnvFile", source=source, document={"env": env})


def render(spec: Spec) -> str:
    """The spec as a ``.env`` file (values quoted when needed)."""
    lines = []
    for name, value in (spec.document.get("env") or {}).items():
        text = str(value)
        if any(c in text for c in " \n\"'#$"):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
        lines.append(f"{name}={text}\n")
    return "".join(lines)
