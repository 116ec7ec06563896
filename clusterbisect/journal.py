"""The journal's record: one finished probe, as a line of ``journal.jsonl``.

The engine writes one record per probe run (or reported by hand in step mode); the
report and the step mode read them back. Records name changes by their keys, not by
index, so a journal stays readable and a resumed session maps it back onto the
(recomputed) change list. Reading and writing the file is the session's job.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass


@dataclass
class ProbeRecord:
    """One finished probe, as journaled."""

    probe_id: str
    round: int
    subset: list[str]  # change keys applied
    outcome: str
    purpose: str = "search"
    exit_code: int | None = None
    timed_out: bool = False
    reason: str | None = None
    infra_error: str | None = None
    duration_s: float = 0.0
    log: str | None = None  # relative to the state dir
    observed: str = ""
    finished_at: float = 0.0
    source: str = "runner"  # runner | manual | exec (step-by-step mode)

    def to_line(self) -> str:
        """The record as one journal line (with its newline)."""
        return json.dumps(asdict(self), sort_keys=True) + "\n"

    @classmethod
    def from_line(cls, line: str) -> ProbeRecord:
        """A record from a journal line; ``ValueError``/``TypeError`` if it is not one."""
        return cls(**json.loads(line))
