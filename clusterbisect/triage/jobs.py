"""From an inventory of exported objects to jobs: outcome, spec, workload, terminations.

Pure. The spec of each job is loaded by the project's spec loader (noise stripped,
exactly as ``diff`` loads a file), so its settings have the keys ``diff`` gives.

A Job owned by another job (a RayJob's submitter, a JobSet's child Jobs) is part of
its owner: its pods count for the owner. A bare pod is a job of its own.
"""

from __future__ import annotations

import datetime
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from clusterbisect.errors import InputError
from clusterbisect.specs import kubernetes as k8s
from clusterbisect.specs import ray as ray_specs
from clusterbisect.triage.join import (
    JobIndex,
    has_job_owner_or_label,
    meta_of,
    owners,
    terminations,
)
from clusterbisect.triage.model import Inventory, Job
from clusterbisect.triage.outcomes import outcome_of
from clusterbisect.triage.sources import JOB_KINDS

# Labels that name the workload a job is a run of, most specific first.
WORKLOAD_LABELS = ("app.kubernetes.io/name", "app", "workload")
# Ray job metadata fields that name the workload.
RAY_WORKLOAD_FIELDS = ("workload", "app", "name", "job_name")
_HAS_DIGIT = re.compile(r"\d")


@dataclass
class Fleet:
    """The jobs, and what could not be used (by cause)."""

    jobs: list[Job] = field(default_factory=list)
    orphan_pods: int = 0  # pods whose job is not among the sources
    child_jobs: int = 0  # Jobs folded into the job that owns them
    too_old: int = 0  # jobs created before --since
    skipped: Counter[str] = field(default_factory=Counter)  # objects of other kinds


def build_fleet(
    inventory: Inventory,
    *,
    workload_label: str | None = None,
    created_after: float | None = None,
) -> Fleet:
    """The jobs of ``inventory``, each with its outcome, spec and failed terminations.

    ``workload_label`` names the label that says which workload a job runs (default:
    a CronJob owner, ``app.kubernetes.io/name``, ``app``, ``workload``, else the name
    without its generated suffix). ``created_after`` (seconds since the epoch) leaves
    out older jobs.
    """
    fleet = Fleet(skipped=Counter(inventory.skipped))
    index = JobIndex()
    uids = {str(meta_of(o).get("uid")) for _, o in inventory.workloads if meta_of(o).get("uid")}
    names = {(_namespace(o), o.get("kind"), meta_of(o).get("name")) for _, o in inventory.workloads}
    children: list[dict[str, Any]] = []
    for source, obj in inventory.workloads:
        meta = meta_of(obj)
        if _owned_by_a_job(meta, _namespace(obj), uids, names):
            children.append(obj)
            continue
        job = _workload_job(source, obj, workload_label)
        fleet.jobs.append(job)
        index.add(job)
        cluster = (obj.get("status") or {}).get("rayClusterName") if job.kind == "RayJob" else None
        _load_spec(job, source, obj)
        if cluster:
            index.by_ray_cluster[(job.namespace, str(cluster))] = job
    for child in children:
        meta = meta_of(child)
        owner = index.owner_of(meta, _namespace(child))
        if owner is not None:
            index.add(owner, meta.get("uid"), str(child.get("kind")), str(meta.get("name")))
            fleet.child_jobs += 1
    for source, pod in inventory.pods:
        meta = meta_of(pod)
        if not has_job_owner_or_label(meta):
            job = _workload_job(source, pod, workload_label)
            job.terminations.extend(terminations(pod, inventory.logs))
            _load_spec(job, source, pod)
            fleet.jobs.append(job)
            continue
        owner = index.owner_of(meta, _namespace(pod))
        if owner is None:
            fleet.orphan_pods += 1
        else:
            owner.terminations.extend(terminations(pod, inventory.logs))
    for source, entry in inventory.ray_jobs:
        fleet.jobs.append(_ray_job(source, entry, inventory.logs))
    if created_after is not None:
        kept = [j for j in fleet.jobs if j.created is None or j.created >= created_after]
        fleet.too_old = len(fleet.jobs) - len(kept)
        fleet.jobs = kept
    fleet.too_old += inventory.too_old
    return fleet


def _namespace(obj: dict[str, Any]) -> str:
    return str(meta_of(obj).get("namespace") or "")


def _owned_by_a_job(
    meta: dict[str, Any], namespace: str, uids: set[str], names: set[tuple[Any, Any, Any]]
) -> bool:
    for ref in owners(meta):
        if ref.get("kind") in JOB_KINDS and (
            str(ref.get("uid")) in uids or (namespace, ref.get("kind"), ref.get("name")) in names
        ):
            return True
    return False


def _workload_job(source: str, obj: dict[str, Any], workload_label: str | None) -> Job:
    meta = meta_of(obj)
    verdict = outcome_of(obj)
    name = str(meta.get("name") or meta.get("generateName") or "?")
    return Job(
        name=name,
        namespace=_namespace(obj),
        kind=str(obj.get("kind")),
        source=source,
        outcome=verdict.outcome,
        uid=str(meta["uid"]) if meta.get("uid") else None,
        workload=workload_of(meta, workload_label),
        created=parse_time(meta.get("creationTimestamp")),
        reason=verdict.reason,
        message=verdict.message,
    )


def _load_spec(job: Job, source: str, obj: dict[str, Any]) -> None:
    """Load the object as a spec (in place: the object is not used afterwards)."""
    try:
        job.spec = k8s.parse_documents([obj], f"{source}#{job.kind}/{job.name}", fresh=True)
    except InputError as err:
        job.problem = err.message


def _ray_job(source: str, entry: dict[str, Any], logs: dict[tuple[str, str, str], str]) -> Job:
    verdict = outcome_of(entry)
    name = str(entry.get("submission_id") or entry.get("job_id"))
    code = entry.get("driver_exit_code")
    start = entry.get("start_time")
    job = Job(
        name=name,
        namespace="",
        kind="RayJobDetails",
        source=source,
        outcome=verdict.outcome,
        uid=str(entry.get("job_id")) if entry.get("job_id") else None,
        workload=_ray_workload(entry),
        created=start / 1000.0 if isinstance(start, int | float) else None,
        reason=verdict.reason,
        message=verdict.message,
        exit_code=code if isinstance(code, int) else None,
        log_tail=logs.get(("", name, "")),
    )
    try:
        job.spec = ray_specs.parse(entry, f"{source}#{name}")
    except InputError as err:
        job.problem = err.message
    return job


def workload_of(meta: dict[str, Any], label: str | None = None) -> str:
    """The workload a job is a run of (see ``build_fleet``)."""
    labels = meta.get("labels")
    if not isinstance(labels, dict):
        labels = {}
    name = str(meta.get("name") or "")
    if label:
        return str(labels.get(label) or name_stem(name))
    for ref in owners(meta):
        if ref.get("kind") == "CronJob" and ref.get("name"):
            return f"cronjob/{ref['name']}"
    for candidate in WORKLOAD_LABELS:
        if labels.get(candidate):
            return str(labels[candidate])
    generated = meta.get("generateName")
    if isinstance(generated, str) and generated.strip("-"):
        return generated.rstrip("-")
    return name_stem(name)


def name_stem(name: str) -> str:
    """A name without its generated or numbered tail: ``bert-ft-00123-x7k2p`` -> ``bert-ft``.

    Trailing dash-separated parts holding a digit are dropped (at least one part stays).
    """
    parts = name.split("-")
    while len(parts) > 1 and _HAS_DIGIT.search(parts[-1]):
        parts.pop()
    return "-".join(parts)


def _ray_workload(entry: dict[str, Any]) -> str:
    metadata = entry.get("metadata")
    if isinstance(metadata, dict):
        for candidate in RAY_WORKLOAD_FIELDS:
            if metadata.get(candidate):
                return str(metadata[candidate])
    entrypoint = str(entry.get("entrypoint") or "")
    return " ".join(entrypoint.split()[:2]) or "ray job"


def parse_time(value: Any) -> float | None:
    """An RFC 3339 timestamp (``2026-11-26T08:14:03Z``) as seconds since the epoch."""
    if not isinstance(value, str) or not value:
        return None
    try:
        stamp = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.timezone.utc)
    return stamp.timestamp()
