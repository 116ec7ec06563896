"""Failure signatures: what a failed job showed, normalised so that alike failures group.

Pure. A failed job's text comes from how its containers ended (``state.terminated``:
reason, exit code, message) or its log tail, else from the job's own status (a
condition's reason and message, a Ray job's message and driver exit code). The text
is one line: the reason and exit code, then the most error-like line of the message
or log (the last line that names an error, exception, panic, kill, ...).

Normalising masks what differs between two runs of the same failure: the job's and
pods' own names, timestamps, uuids, IP addresses, hex ids, generated pod names,
ranks and every other number. The exit code stays: ``exit 137`` and ``exit 1`` are
different failures. Jobs whose normalised texts are equal form one cluster.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from clusterbisect.errors import InputError
from clusterbisect.triage.model import Job, Termination

MAX_LINE = 240
# A line that says what went wrong.
_ERROR_LINE = re.compile(
    r"(?i)(error|exception|fatal|panic|traceback|killed|abort|segmentation fault|"
    r"failed|failure|timed? ?out|assert|refused|denied|cannot|unable)"
)
_TRACEBACK_HEADER = re.compile(r"^Traceback \(most recent call last\):?$")
# Reasons that say only "it failed": the message says more.
_GENERIC_REASONS = frozenset({"Error", "BackoffLimitExceeded", "JobFailed"})
_MASKS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(
            r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2})?(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?"
        ),
        "<time>",
    ),
    (re.compile(r"\b\d{1,2}:\d{2}:\d{2}(?:[.,]\d+)?\b"), "<time>"),
    (re.compile(r"\b\d{4}[-/]\d{2}[-/]\d{2}\b"), "<time>"),
    (re.compile(r"\b[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\b"), "<id>"),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d+)?\b"), "<ip>"),
    # Generated names: name-x7k2p, name-5d8f9c7b4-x7k2p. Kubernetes draws the suffix
    # from consonants and the digits 2, 4-7, 9; one letter at least keeps "step-24567".
    (
        re.compile(
            r"\b[a-z][a-z0-9]*(?:-[a-z0-9]+)*-"
            r"(?=[bcdfghjklmnpqrstvwxz2456789]{0,4}[bcdfghjklmnpqrstvwxz])"
            r"[bcdfghjklmnpqrstvwxz2456789]{5}\b"
        ),
        "<pod>",
    ),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<hex>"),
    (re.compile(r"\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{7,}\b"), "<hex>"),
    (
        re.compile(
            r"(?i)\b(rank|local_rank|global_rank|node|worker|replica|gpu|device)"
            r"([\s=:#_\[-]*)\d+"
        ),
        r"\1\2<n>",
    ),
    (re.compile(r"\d+"), "<n>"),
)
_SPACES = re.compile(r"\s+")
NO_DETAILS = "no termination details"


@dataclass(frozen=True)
class Failure:
    """A failed job's text (``raw``, one line) and its normalised ``signature``."""

    raw: str
    signature: str


@dataclass(frozen=True)
class SignatureCluster:
    """Failed jobs (indices into the list given to ``cluster``) with one signature."""

    signature: str
    members: tuple[int, ...]


def failure_of(job: Job) -> Failure:
    """The failure text and signature of a failed job."""
    head, line = _parts(job)
    names = {job.name, *(t.pod for t in job.terminations if t.pod)}
    signature = _join(head, normalise(line, names) if line else None)
    return Failure(_join(head, line)[:MAX_LINE], signature[:MAX_LINE])


def failure_text(job: Job) -> str:
    """One line saying how ``job`` failed (see the module docstring)."""
    return _join(*_parts(job))[:MAX_LINE]


def _parts(job: Job) -> tuple[str, str | None]:
    """The reason and exit code (kept as they are), and the error line (normalised)."""
    termination = main_termination(job.terminations)
    if termination is not None:
        head = _head(termination.reason, termination.exit_code)
        if job.reason == "DeadlineExceeded":
            head = f"DeadlineExceeded {head}".strip()
        return head, error_line(termination.message) or error_line(termination.log_tail)
    return _head(job.reason, job.exit_code), error_line(job.log_tail) or error_line(job.message)


def _join(head: str, line: str | None) -> str:
    return f"{head}: {line}" if head and line else head or line or NO_DETAILS


def _head(reason: str | None, exit_code: int | None) -> str:
    parts = []
    if reason and reason not in _GENERIC_REASONS:
        parts.append(reason)
    if exit_code is not None:
        parts.append(f"exit {exit_code}")
    return " ".join(parts)


def main_termination(terminations: Sequence[Termination]) -> Termination | None:
    """The termination that says most about a job's failure.

    One with a message or log tail first; then a real crash over a kill that followed
    it (exit 137/143 of a sidecar, unless OOMKilled); then the latest.
    """
    if not terminations:
        return None

    def weight(t: Termination) -> tuple[bool, bool, bool, str]:
        told = bool(t.message or t.log_tail)
        crash = t.reason == "OOMKilled" or t.exit_code not in (137, 143)
        return told, crash, bool(t.container), t.finished_at or ""

    return max(terminations, key=weight)


def error_line(text: str | None) -> str | None:
    """The last line of ``text`` naming an error, else its last line (None if empty)."""
    if not text:
        return None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not _TRACEBACK_HEADER.match(ln)]
    if not lines:
        return None
    for line in reversed(lines):
        if _ERROR_LINE.search(line):
            return line[:MAX_LINE]
    return lines[-1][:MAX_LINE]


def normalise(text: str, names: Iterable[str] = ()) -> str:
    """``text`` with what differs between runs of one failure masked."""
    for name in sorted((n for n in names if n), key=len, reverse=True):
        text = text.replace(name, "<pod>")
    for pattern, replacement in _MASKS:
        text = pattern.sub(replacement, text)
    return _SPACES.sub(" ", text).strip()


def cluster(failures: Sequence[Failure]) -> list[SignatureCluster]:
    """Failures grouped by signature, the largest group first (ties: by signature)."""
    groups: dict[str, list[int]] = {}
    for i, failure in enumerate(failures):
        groups.setdefault(failure.signature, []).append(i)
    ordered = sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    return [SignatureCluster(sig, tuple(members)) for sig, members in ordered]


def choose(
    clusters: Sequence[SignatureCluster], failures: Sequence[Failure], regex: str | None
) -> set[int]:
    """The failures to explain: those matching ``regex`` (on the signature or the raw
    text), else the largest cluster. Raises ``InputError`` for a bad or unmatched regex."""
    if not clusters:
        return set()
    if regex is None:
        return set(clusters[0].members)
    try:
        pattern = re.compile(regex)
    except re.error as err:
        raise InputError(
            f"invalid regular expression {regex!r}: {err}", field="--signature"
        ) from None
    chosen = {
        i for i, f in enumerate(failures) if pattern.search(f.signature) or pattern.search(f.raw)
    }
    if not chosen:
        known = "; ".join(f"{c.signature} ({len(c.members)})" for c in clusters[:5])
        raise InputError(
            f"no failed job matches {regex!r}; the signatures are: {known}", field="--signature"
        )
    return chosen
