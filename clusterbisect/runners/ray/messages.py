"""What Ray's answers mean: the error types that say a workload never ran, the lines
the Jobs API adds to a driver's log, and one-line causes of a failed job."""

from __future__ import annotations

import re

# Ray error types that mean the workload never ran properly: unresolved, not fail.
INFRA_ERROR_TYPES = frozenset(
    {
        "RUNTIME_ENV_SETUP_FAILURE",
        "JOB_SUPERVISOR_ACTOR_START_TIMEOUT",
        "JOB_SUPERVISOR_ACTOR_START_FAILURE",
        "JOB_SUPERVISOR_ACTOR_UNSCHEDULABLE",
        "JOB_SUPERVISOR_ACTOR_UNKNOWN_FAILURE",
        "JOB_SUPERVISOR_ACTOR_DIED",
        "JOB_ENTRYPOINT_COMMAND_START_ERROR",
    }
)


UNSCHEDULABLE = "UNSCHEDULABLE"
# What the head answers a submission while no job agent has registered yet.
NO_AGENT = "No available agent to submit job"


# Lines the Jobs API adds at the top of every driver log. They are Ray's, not the
# workload's, and the second one quotes the entrypoint, which a --fail-on regex
# could otherwise match.
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
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line[:limit]


def infra_summary(message: str) -> str:
    """One line naming the cause, e.g. pip's ``No matching distribution found for x``."""
    found = _PIP_ERROR.findall(message)
    if found:
        return first_line(found[-1])
    return first_line(message)


def is_connection_error(err: BaseException) -> bool:
    import requests

    return isinstance(err, requests.exceptions.ConnectionError | ConnectionError)
