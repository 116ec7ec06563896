"""Progress on stderr while a bisection runs: round, probes in flight, candidates left.

Made to explain itself to a person watching:

- each round says how many probes run, why (their purpose), the candidates left and
  the strategy's estimate of the probes to go;
- when the candidates grow again (a guess that did not confirm, another culprit to
  find, a hand-over to the flake-aware search), a line says why;
- a round that takes a while shows its elapsed time: on a terminal one line updated in
  place, in a log a line at 30 s, 1, 2, 4 and 8 minutes, then every 10 minutes;
- outcomes are coloured when stderr is a terminal, unless ``NO_COLOR`` is set (or
  ``TERM`` is ``dumb``).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from clusterbisect.journal import ProbeRecord
from clusterbisect.runners.base import Probe

if TYPE_CHECKING:
    from clusterbisect.engine import ProbeTimeout

# When the elapsed-time line appears: on a terminal after TTY_FIRST_S, then every
# TTY_EVERY_S; in a log at these marks, then every LOG_EVERY_S.
TTY_FIRST_S = 3.0
TTY_EVERY_S = 1.0
LOG_MARKS_S = (30.0, 60.0, 120.0, 240.0, 480.0)
LOG_EVERY_S = 600.0

_COLORS = {"pass": "green", "fail": "red", "unresolved": "yellow"}


def wants_color(stream: TextIO) -> bool:
    """Colour for a terminal, unless NO_COLOR is set (https://no-color.org) or TERM=dumb."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return _isatty(stream)


def _isatty(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def elapsed_text(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def next_tick(elapsed: float, tty: bool) -> float:
    """When (in seconds since the round started) the elapsed-time line shows next."""
    if tty:
        return TTY_FIRST_S if elapsed < TTY_FIRST_S else elapsed + TTY_EVERY_S
    for mark in LOG_MARKS_S:
        if elapsed < mark:
            return mark
    return LOG_MARKS_S[-1] + LOG_EVERY_S * (int((elapsed - LOG_MARKS_S[-1]) // LOG_EVERY_S) + 1)


class TerminalProgress:
    """Writes one line per round and per finished probe to ``stream`` (stderr).

    ``color`` and ``tty`` default to what the stream is; ``schedule`` (elapsed ->
    next tick) to :func:`next_tick`; tests pass their own.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        quiet: bool = False,
        *,
        color: bool | None = None,
        tty: bool | None = None,
        schedule: Callable[[float], float] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.tty = _isatty(self.stream) if tty is None else tty
        self.color = wants_color(self.stream) if color is None else color
        self.schedule = schedule or (lambda elapsed: next_tick(elapsed, self.tty))
        self.clock = clock
        self._lock = threading.Lock()
        self._status = False  # a transient elapsed-time line is on screen (tty)
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()
        self._left: int | None = None
        self._turn: str | None = None

    # --- output ---------------------------------------------------------------------

    def _style(self, text: str, **style: object) -> str:
        if not self.color:
            return text
        import click

        return click.style(text, **style)  # type: ignore[arg-type]

    def _write(self, text: str, transient: bool = False) -> None:
        if self.quiet:
            return
        with self._lock:
            if self._status:
                self.stream.write("\r\x1b[K")
                self._status = False
            if transient:
                self.stream.write(text)
                self._status = True
            else:
                self.stream.write(text + "\n")
            self.stream.flush()

    # --- events (engine.Progress) ------------------------------------------------------

    def round_started(
        self,
        round_no: int,
        probes: list[Probe],
        left: int,
        to_go: int | None,
        turn: str | None = None,
    ) -> None:
        if turn and turn != self._turn:
            grew = f"candidates back up to {left}: " if self._left and left > self._left else ""
            self._write(self._style(f"  {grew}{turn}", fg="cyan"))
        self._turn, self._left = turn or self._turn, left
        purposes = sorted({p.purpose for p in probes})
        eta = f", ~{to_go} probes to go" if to_go is not None else ""
        count = f"{len(probes)} probe{'s' if len(probes) != 1 else ''}"
        head = self._style(f"round {round_no}:", bold=True)
        self._write(
            f"{head} {count} in flight ({', '.join(purposes)}); "
            f"{left} candidate change{'s' if left != 1 else ''} left{eta}"
        )
        self._start_ticker(round_no, count)

    def timeout_set(self, timeout: ProbeTimeout) -> None:
        self._write(f"probe timeout: {timeout.describe()}")

    def probe_finished(self, record: ProbeRecord) -> None:
        detail = f" - {record.observed}" if record.observed else ""
        if record.infra_error:
            detail = f" - infra: {record.infra_error}"
        outcome = self._style(
            f"{record.outcome.upper():<10}", fg=_COLORS.get(record.outcome), bold=True
        )
        self._write(
            f"  {record.probe_id} [{len(record.subset):>4} changes] {outcome}"
            f" {record.duration_s:6.2f}s{detail}"
        )

    def round_finished(self, round_no: int) -> None:
        self.stop()

    # --- the elapsed-time ticker ---------------------------------------------------------

    def _start_ticker(self, round_no: int, count: str) -> None:
        self.stop()
        if self.quiet:
            return
        self._stop = threading.Event()
        started = self.clock()
        stop = self._stop

        def tick() -> None:
            due = self.schedule(0.0)
            while not stop.wait(max(0.0, due - (self.clock() - started))):
                elapsed = self.clock() - started
                line = f"  round {round_no}: {count} still running, {elapsed_text(elapsed)}"
                self._write(self._style(line, dim=True), transient=self.tty)
                due = self.schedule(elapsed)

        self._ticker = threading.Thread(target=tick, name="clusterbisect-progress", daemon=True)
        self._ticker.start()

    def stop(self) -> None:
        """Stop the elapsed-time line (and clear it from a terminal)."""
        self._stop.set()
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.join()
        with self._lock:
            if self._status:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
                self._status = False

    def torn_down(self, seconds: float) -> None:
        # Only a teardown worth mentioning (a local Ray), after the result is out.
        if seconds >= 0.5:
            self._write(f"teardown: {seconds:.1f}s after the result (not counted in its time)")
