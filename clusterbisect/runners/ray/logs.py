"""What a Ray job's log and errors say: the lines the Jobs API writes before the
workload's own output dropped, the first line of a message, and pip's own line out of
a runtime_env that could not be built (``No matching distribution found for x``).
Pure text in, text out.
"""

from __future__ import annotations

import re

_PREAMBLE = (
    re.compile(r"^\S+ \S+\s+INFO job_manager\.py:\d+ -- Runtime env is setting up\.$"),
    re.compile(r"^Running entrypoint for job \S+: .*$"),
)

_PIP_ERROR = re.compile(
    r"^(ERROR: .*|.*No matching distribution.*|.*Could not find a version.*)$", re.M
)


def strip_preamble(text: str) -> str:
    """Drop the lines the Jobs API writes before the workload's own output."""
    lines = text.splitlines(keepends=True)
    kept: list[str] = []
    patterns = list(_PREAMBLE)
    for i, line in enumerate(lines):
        if patterns and i < 4 and any(p.match(line.rstrip("\n")) for p in patterns):
            patterns = [p for p in patterns if not p.match(line.rstrip("\n"))]
            continue
        kept.append(line)
    return "".join(kept)


def first_line(text: str, limit: int = 300) -> str:
    """The first non-blank line of ``text``, stripped and cut at ``limit`` characters."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line[:limit]


def infra_summary(message: str) -> str:
    """One line naming the cause, e.g. pip's ``No matching distribution found for x``."""
    found = _PIP_ERROR.findall(message)
    if found:
        return first_line(found[-1])
    return first_line(message)
