"""The triage result: one document for machines (``to_dict``), the same as
``triage --json`` prints (see the ``triage`` contract in DESIGN.md).

Every value in it is safe to show: secret setting values are redacted and secret
values found in the jobs are scrubbed from failure texts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Statuses.
SUSPECTS_FOUND = "suspects_found"  # at least one suspect passes the significance bar
NO_SIGNIFICANT_SUSPECT = "no_significant_suspect"  # failures, but nothing beats chance
NOTHING_TO_EXPLAIN = "nothing_to_explain"  # no failed job
STATUSES = (SUSPECTS_FOUND, NO_SIGNIFICANT_SUSPECT, NOTHING_TO_EXPLAIN)


def _rate(value: float) -> float:
    return round(value, 4)


@dataclass(frozen=True)
class SignatureReport:
    """A cluster of failures: its signature, size, example jobs and one raw text."""

    signature: str
    count: int
    examples: list[str]
    sample: str
    explained: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "signature": self.signature,
            "count": self.count,
            "examples": list(self.examples),
            "sample": self.sample,
            "explained": self.explained,
        }


@dataclass(frozen=True)
class SettingValue:
    """A setting value as shown: ``present`` False means the key is absent (value None)."""

    key: str
    value: Any
    present: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "value": self.value, "present": self.present}


@dataclass(frozen=True)
class SuspectReport:
    """A suspect as shown: ``value`` None with ``present`` False means "key absent"."""

    key: str
    value: Any
    present: bool
    category: str
    failed: int
    total: int
    failed_without: int
    total_without: int
    failure_rate: float
    rate_without: float
    score: float
    significant: bool
    bundle: list[SettingValue] = field(default_factory=list)
    explained_by: str | None = None  # the key of a stronger suspect that explains it

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "value": self.value,
            "present": self.present,
            "category": self.category,
            "failed": self.failed,
            "total": self.total,
            "failure_rate": _rate(self.failure_rate),
            "failed_without": self.failed_without,
            "total_without": self.total_without,
            "rate_without": _rate(self.rate_without),
            "score": round(self.score, 2),
            "significant": self.significant,
            "explained_by": self.explained_by,
            "bundle": [b.key for b in self.bundle],
            "bundle_values": [b.to_dict() for b in self.bundle],
        }


@dataclass(frozen=True)
class GroupReport:
    failed: int
    total: int

    def to_dict(self) -> dict[str, Any]:
        rate = self.failed / self.total if self.total else 0.0
        return {"failed": self.failed, "total": self.total, "failure_rate": _rate(rate)}


@dataclass(frozen=True)
class InteractionReport:
    """Two suspects and the jobs with both, with one of them, and with neither."""

    first: SettingValue
    second: SettingValue
    both: GroupReport
    first_only: GroupReport
    second_only: GroupReport
    neither: GroupReport
    score: float
    significant: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "keys": [self.first.key, self.second.key],
            "settings": [self.first.to_dict(), self.second.to_dict()],
            "both": self.both.to_dict(),
            "first_only": self.first_only.to_dict(),
            "second_only": self.second_only.to_dict(),
            "neither": self.neither.to_dict(),
            "score": round(self.score, 2),
            "significant": self.significant,
        }


@dataclass(frozen=True)
class PairReport:
    """The good and the bad job to bisect, and how many settings differ (as ``diff``)."""

    good: str
    bad: str
    good_namespace: str
    bad_namespace: str
    workload: str
    kind: str
    changes: int
    candidates: list[str]
    required: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "good": self.good,
            "bad": self.bad,
            "changes": self.changes,
            "good_namespace": self.good_namespace,
            "bad_namespace": self.bad_namespace,
            "workload": self.workload,
            "kind": self.kind,
            "candidates": list(self.candidates),
            "required": list(self.required),
        }


@dataclass
class TriageResult:
    """What triage found. ``to_dict()`` is the ``--json`` document."""

    status: str
    message: str
    jobs: int = 0
    succeeded: int = 0
    failed: int = 0
    running: int = 0
    unknown: int = 0
    explained: int = 0  # failures with the signature being explained
    background: int = 0  # failures with other signatures
    analysed: int = 0  # jobs the suspects are computed over
    signature: str | None = None  # the signature being explained
    signatures: list[SignatureReport] = field(default_factory=list)
    suspects: list[SuspectReport] = field(default_factory=list)
    interactions: list[InteractionReport] = field(default_factory=list)
    pair: PairReport | None = None
    pair_note: str | None = None  # why there is no pair
    files: dict[str, str] = field(default_factory=dict)
    left_out: dict[str, int] = field(default_factory=dict)  # jobs/objects not used, by cause
    tested: int = 0  # distinct job sets tested
    threshold: float = 0.0  # the score a suspect needs to be significant
    sources: list[str] = field(default_factory=list)
    unread: dict[str, str] = field(default_factory=dict)  # kinds a cluster did not let us list

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` document: the contract's fields, then the details."""
        return {
            "status": self.status,
            "message": self.message,
            "jobs": self.jobs,
            "failed": self.failed,
            "succeeded": self.succeeded,
            "running": self.running,
            "unknown": self.unknown,
            "explained": self.explained,
            "background": self.background,
            "analysed": self.analysed,
            "signature": self.signature,
            "signatures": [s.to_dict() for s in self.signatures],
            "suspects": [s.to_dict() for s in self.suspects],
            "interactions": [i.to_dict() for i in self.interactions],
            "pair": self.pair.to_dict() if self.pair else None,
            "pair_note": self.pair_note,
            "files": dict(self.files),
            "left_out": dict(self.left_out),
            "tested": self.tested,
            "threshold": round(self.threshold, 2),
            "sources": list(self.sources),
            "unread": dict(self.unread),
        }
