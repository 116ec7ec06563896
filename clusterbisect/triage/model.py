"""The fleet as triage sees it: raw objects read from the sources, and jobs with outcomes.

``Inventory`` is what a source gives (file, folder, live cluster, Ray cluster): the
exported objects sorted by what they are, before anything is interpreted. ``Job`` is
one run of a workload, with its outcome, its spec (noise stripped, ready to flatten)
and the terminated states of its containers, from which its failure signature comes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from clusterbisect.specs.model import Spec

SUCCEEDED = "succeeded"
FAILED = "failed"
RUNNING = "running"
UNKNOWN = "unknown"
OUTCOMES = (SUCCEEDED, FAILED, RUNNING, UNKNOWN)


@dataclass
class Inventory:
    """Objects read from the sources, by what they are.

    ``workloads`` hold job objects (Job, PyTorchJob and the other Kubeflow jobs,
    RayJob, JobSet); ``pods`` the pods, which are joined to their jobs; ``ray_jobs``
    the entries of Ray job listings. Each is ``(source, object)``. ``logs`` maps
    ``(namespace, pod, container)`` to a log tail read from a live cluster, and
    ``("", submission_id, "")`` to a Ray job's.
    ``skipped`` counts objects of other kinds (Service, ConfigMap, ...) by kind;
    ``unread`` names the kinds of job a cluster has but did not let us list, and why;
    ``too_old`` counts the jobs a live source dropped as created before ``--since``.
    """

    workloads: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    pods: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    ray_jobs: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    logs: dict[tuple[str, str, str], str] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)
    sources: list[str] = field(default_factory=list)
    unread: dict[str, str] = field(default_factory=dict)
    too_old: int = 0

    def extend(self, other: Inventory) -> None:
        """Add ``other``'s objects to this inventory."""
        self.unread.update(other.unread)
        self.workloads.extend(other.workloads)
        self.pods.extend(other.pods)
        self.ray_jobs.extend(other.ray_jobs)
        self.logs.update(other.logs)
        self.skipped.update(other.skipped)
        self.sources.extend(other.sources)
        self.too_old += other.too_old

    def __len__(self) -> int:
        return len(self.workloads) + len(self.pods) + len(self.ray_jobs)


@dataclass(frozen=True)
class Termination:
    """How one container of one pod ended (``state.terminated``), with its log tail."""

    pod: str
    container: str
    exit_code: int | None
    reason: str | None = None
    message: str | None = None
    finished_at: str | None = None
    log_tail: str | None = None

    @property
    def failed(self) -> bool:
        """A non-zero exit, or a reason other than Completed."""
        if self.exit_code not in (None, 0):
            return True
        return self.reason not in (None, "", "Completed")


@dataclass
class Job:
    """One run of a workload: its outcome, its spec and how its containers ended.

    ``reason`` and ``message`` come from the job's own status (a condition, a RayJob's
    message, a Ray job's message); ``exit_code`` from a Ray job's driver. ``spec`` is
    None when the job could not be read as a spec (``problem`` says why).
    """

    name: str
    namespace: str
    kind: str
    source: str
    outcome: str
    uid: str | None = None
    workload: str = ""
    created: float | None = None  # seconds since the epoch
    reason: str | None = None
    message: str | None = None
    exit_code: int | None = None
    log_tail: str | None = None
    spec: Spec | None = None
    problem: str | None = None
    terminations: list[Termination] = field(default_factory=list)

    @property
    def ref(self) -> str:
        """``namespace/name`` (just the name when there is no namespace)."""
        return f"{self.namespace}/{self.name}" if self.namespace else self.name
