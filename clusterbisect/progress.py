"""Progress on stderr while a bisection runs: round, probes in flight, candidates left."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, TextIO

from clusterbisect.journal import ProbeRecord
from clusterbisect.runners.base import Probe

if TYPE_CHECKING:
    from clusterbisect.engine import ProbeTimeout


class TerminalProgress:
    """Writes one line per round and per finished probe to ``stream`` (stderr)."""

    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet

    def _write(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def round_started(
        self, round_no: int, probes: list[Probe], left: int, to_go: int | None
    ) -> None:
        purposes = sorted({p.purpose for p in probes})
        eta = f", ~{to_go} probes to go" if to_go is not None and "search" in purposes else ""
        self._write(
            f"round {round_no}: {len(probes)} probe{'s' if len(probes) != 1 else ''} in flight "
            f"({', '.join(purposes)}); {left} candidate change{'s' if left != 1 else ''} left{eta}"
        )

    def timeout_set(self, timeout: ProbeTimeout) -> None:
        self._write(f"probe timeout: {timeout.describe()}")

    def probe_finished(self, record: ProbeRecord) -> None:
        detail = f" - {record.observed}" if record.observed else ""
        if record.infra_error:
            detail = f" - infra: {record.infra_error}"
        self._write(
            f"  {record.probe_id} [{len(record.subset):>4} changes] {record.outcome.upper():<10}"
            f" {record.duration_s:6.2f}s{detail}"
        )

    def torn_down(self, seconds: float) -> None:
        # Only a teardown worth mentioning (a local Ray), after the result is out.
        if seconds >= 0.5:
            self._write(f"teardown: {seconds:.1f}s after the result (not counted in its time)")
