"""The runner contract: take rendered probes, run them, report what happened.

A runner owns the lifecycle of every job it starts: it must stop and clean up each
one on success, failure, timeout, error and interruption.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from clusterbisect.diff import Change
from clusterbisect.outcome import RunResult
from clusterbisect.specs.model import Spec


@dataclass
class Probe:
    """One probe to run: the good spec with ``changes`` applied.

    ``probe_id`` is unique within the session (``p007``); ``log_path`` is where the
    runner writes the probe's combined output (bounded in size).
    """

    probe_id: str
    session_id: str
    spec: Spec  # the good spec with the changes applied
    changes: list[Change]
    log_path: Path
    timeout_s: float | None = None
    command: list[str] | None = None  # the workload argv, when given after `--`
    extra: dict[str, Any] = field(default_factory=dict)


class Runner(Protocol):
    """Runs probes on one backend."""

    name: str

    def untestable(self, changes: list[Change]) -> dict[str, str]:
        """Changes this backend cannot apply, as ``{key: reason}``; left out of the search."""
        ...

    def render(self, probe: Probe) -> dict[str, Any]:
        """What would be launched for ``probe`` (for --dry-run and ``next``), as data."""
        ...

    def run(self, probes: list[Probe]) -> list[RunResult]:
        """Run the probes concurrently and return one result per probe, in order.

        Raises ``Interrupted`` after cleaning up if interrupted, ``BackendError`` when
        the backend itself fails.
        """
        ...

    def close(self) -> None:
        """Release everything the runner started (clusters, sessions, leftovers)."""
        ...
