"""Failure signatures and the classification of a probe run into an outcome.

A signature's regular expression is matched line by line (a carriage return ends a
line too), on the line as it would be printed (terminal control sequences removed),
over the probe's *whole* output: a runner that streams the output matches it as it
reads (:class:`LineMatcher`) and says so (``RunResult.scanned``), so what it keeps of
a long output (its head and tail) does not decide the outcome.
"""

from __future__ import annotations

import enum
import re
import signal
from dataclasses import dataclass, field

from clusterbisect.terminal import printable

# A line longer than this is matched in pieces of this size (overlapping), so one
# endless line (a progress bar without newlines) costs bounded memory.
MAX_LINE_BYTES = 1 << 16
LINE_OVERLAP_BYTES = 1 << 10
MATCH_CONTEXT_CHARS = 200  # of a long matching line, what is quoted around the match


class Outcome(str, enum.Enum):
    """The verdict of one probe run."""

    PASS = "pass"
    FAIL = "fail"
    UNRESOLVED = "unresolved"


@dataclass
class RunResult:
    """What a backend observed when it ran one probe (before classification).

    ``infra_error`` is set when the probe never ran the workload properly: an image
    pull error, an unschedulable pod, a runtime_env that could not be built. Such a
    run is always ``unresolved``, whatever else happened.
    """

    exit_code: int | None
    output: str = ""
    timed_out: bool = False
    reason: str | None = None  # e.g. "OOMKilled", "Error", "DeadlineExceeded"
    infra_error: str | None = None
    duration_s: float = 0.0
    log_path: str | None = None
    details: dict[str, object] = field(default_factory=dict)
    # Set by a runner that matched the signature's regex over the whole stream as it
    # read it (``scanned``): the first matching line (printable), or None. Otherwise
    # the regex is matched against ``output``, which may be only part of the output.
    matched: str | None = None
    scanned: bool = False


@dataclass(frozen=True)
class FailureSignature:
    """What counts as *the* failure. Anything else that goes wrong is unresolved.

    With no option set, any non-zero exit is the failure. Each option narrows it:
    all given conditions must hold (a regex, an exit code, a termination reason).
    A timeout is the failure only with ``hang_is_failure``.
    """

    fail_on: str | None = None
    fail_exit_code: int | None = None
    fail_reason: str | None = None
    hang_is_failure: bool = False
    # With fail_on or fail_reason: "any" exit code may go with the failure, or only a
    # "nonzero" one (a log line alone is not the failure: a warning in a passing run).
    fail_on_exit: str = "any"

    @property
    def needs_nonzero_exit(self) -> bool:
        return self.fail_on_exit == "nonzero"

    def describe(self) -> str:
        parts: list[str] = []
        if self.hang_is_failure:
            parts.append("a timeout (hang)")
        if self.fail_exit_code is not None:
            parts.append(f"exit code {self.fail_exit_code}")
        elif self.needs_nonzero_exit and (self.fail_on or self.fail_reason):
            parts.append("a non-zero exit")
        if self.fail_reason:
            parts.append(f"termination reason {self.fail_reason}")
        if self.fail_on:
            parts.append(f"output matching /{self.fail_on}/")
        if not parts:
            return "any non-zero exit"
        return (
            " or ".join(parts) if self.hang_is_failure and len(parts) == 1 else " and ".join(parts)
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "fail_on": self.fail_on,
            "fail_exit_code": self.fail_exit_code,
            "fail_reason": self.fail_reason,
            "hang_is_failure": self.hang_is_failure,
            "fail_on_exit": self.fail_on_exit,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> FailureSignature:
        code = data.get("fail_exit_code")
        return cls(
            fail_on=str(data["fail_on"]) if data.get("fail_on") else None,
            fail_exit_code=int(code) if isinstance(code, int) else None,
            fail_reason=str(data["fail_reason"]) if data.get("fail_reason") else None,
            hang_is_failure=bool(data.get("hang_is_failure", False)),
            fail_on_exit="nonzero" if data.get("fail_on_exit") == "nonzero" else "any",
        )

    def compiled(self) -> re.Pattern[str] | None:
        return compile_line_pattern(self.fail_on)

    def matched_line(self, run: RunResult) -> str | None:
        """The first line of ``run``'s output that the regex matches (None without a
        regex or a match): from the runner's scan of the whole stream when it made
        one, else from the output kept."""
        pattern = self.compiled()
        if pattern is None:
            return None
        if run.scanned:
            return run.matched
        return first_matching_line(pattern, run.output)

    def classify(self, run: RunResult) -> Outcome:
        """Map one run to pass, fail or unresolved."""
        if run.infra_error:
            return Outcome.UNRESOLVED
        if run.timed_out:
            return Outcome.FAIL if self.hang_is_failure else Outcome.UNRESOLVED
        explicit = bool(self.fail_on or self.fail_reason) and not self.needs_nonzero_exit
        # A log line or a termination reason can be the failure even on exit 0, unless
        # the signature asks for a non-zero exit too.
        if self._matches(run) and (run.exit_code != 0 or explicit):
            return Outcome.FAIL
        if run.exit_code == 0:
            return Outcome.PASS
        # Non-zero exit without the signature: a different failure, which must not
        # steer the search.
        return Outcome.UNRESOLVED

    def text_matches(self, output: str) -> bool:
        """The ``fail_on`` regex matches ``output`` (False without a regex)."""
        pattern = self.compiled()
        return bool(pattern and pattern.search(output))

    def _matches(self, run: RunResult) -> bool:
        if self.fail_exit_code is not None and run.exit_code != self.fail_exit_code:
            return False
        if self.fail_reason and run.reason != self.fail_reason:
            return False
        return not self.fail_on or self.matched_line(run) is not None

    def observed(self, run: RunResult, max_chars: int = 160) -> str:
        """A short description of the failure as seen in ``run`` (for the report)."""
        bits = []
        if run.timed_out:
            bits.append("timed out")
        if run.exit_code is not None:
            bits.append(f"exit code {run.exit_code}")
        if run.reason:
            bits.append(f"reason {printable(run.reason)}")
        line = self.matched_line(run)
        if line is not None:
            bits.append(f"matched: {printable(line).strip()[:max_chars]}")
        return ", ".join(bits) or "no failure observed"


def compile_line_pattern(regex: str | None) -> re.Pattern[str] | None:
    """A signature's regex, for matching one line at a time (``^``/``$`` per line)."""
    return re.compile(regex, re.MULTILINE) if regex else None


def first_matching_line(pattern: re.Pattern[str], text: str) -> str | None:
    """The first line of ``text`` (as printed) that ``pattern`` matches; of a long line,
    the part around the match."""
    for line in printable(text).split("\n"):
        match = pattern.search(line)
        if match:
            if len(line) <= MATCH_CONTEXT_CHARS * 2:
                return line
            start = max(0, match.start() - MATCH_CONTEXT_CHARS // 2)
            return line[start : max(match.end(), start + MATCH_CONTEXT_CHARS)]
    return None


class LineMatcher:
    """Matches a regex against a byte stream line by line, as it is read.

    Feed it chunks; :attr:`matched` is the first matching line (printable), if any.
    After a match it stops looking (the first match decides). Lines are split on
    ``\\n`` and ``\\r``; an over-long line is matched in overlapping pieces.
    """

    def __init__(self, pattern: re.Pattern[str]) -> None:
        self.pattern = pattern
        self.matched: str | None = None
        self._partial = bytearray()

    def feed(self, chunk: bytes) -> None:
        if self.matched is not None:
            return
        self._partial += chunk
        end = max(self._partial.rfind(b"\n"), self._partial.rfind(b"\r"))
        if end >= 0:
            whole = bytes(self._partial[: end + 1])
            del self._partial[: end + 1]
            self._match(whole)
        if len(self._partial) > MAX_LINE_BYTES and self.matched is None:
            self._match(bytes(self._partial))
            del self._partial[:-LINE_OVERLAP_BYTES]

    def close(self) -> None:
        """The stream ended: match what is left (a last line without its newline)."""
        if self._partial and self.matched is None:
            self._match(bytes(self._partial))
        self._partial.clear()

    def _match(self, data: bytes) -> None:
        line = first_matching_line(self.pattern, data.decode("utf-8", errors="replace"))
        if line is not None:
            self.matched = line


def signal_reason(code: int | None) -> str | None:
    """The signal name behind a negative exit code (``-9`` -> ``SIGKILL``), else None."""
    if code is None or code >= 0:
        return None
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"
