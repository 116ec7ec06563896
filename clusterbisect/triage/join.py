"""Which job a pod belongs to, and how its containers ended. Pure.

A pod belongs to the job named by its controller ``ownerReferences`` (by uid, else by
kind and name), else by the labels the controllers set: ``batch.kubernetes.io/job-name``
and ``job-name`` (Job), ``training.kubeflow.org/job-name`` (Kubeflow),
``jobset.sigs.k8s.io/jobset-name`` (JobSet), ``ray.io/cluster`` (the RayJob whose
cluster it is). A pod with no owner and none of these labels is a job of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from clusterbisect.triage.model import Job, Termination

# Labels naming the job a pod belongs to, with the kinds of job they name.
JOB_LABELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("batch.kubernetes.io/job-name", ("Job",)),
    ("job-name", ("Job",)),
    (
        "training.kubeflow.org/job-name",
        ("PyTorchJob", "TFJob", "MPIJob", "XGBoostJob", "PaddleJob", "MXJob", "JAXJob"),
    ),
    ("jobset.sigs.k8s.io/jobset-name", ("JobSet",)),
)
RAY_CLUSTER_LABEL = "ray.io/cluster"


def meta_of(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def owners(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The owner references, the controller first."""
    refs = meta.get("ownerReferences")
    if not refs:
        return []
    refs = [r for r in refs if isinstance(r, dict)]
    return sorted(refs, key=lambda r: not r.get("controller")) if len(refs) > 1 else refs


def has_job_owner_or_label(meta: dict[str, Any]) -> bool:
    """Whether a pod is part of something else (it is not a bare pod)."""
    labels = meta.get("labels") or {}
    return (
        bool(owners(meta))
        or any(label in labels for label, _ in JOB_LABELS)
        or (RAY_CLUSTER_LABEL in labels)
    )


@dataclass
class JobIndex:
    """Jobs by uid, by ``(namespace, kind, name)`` and by Ray cluster name."""

    by_uid: dict[str, Job] = field(default_factory=dict)
    by_name: dict[tuple[str, str, str], Job] = field(default_factory=dict)
    by_ray_cluster: dict[tuple[str, str], Job] = field(default_factory=dict)

    def add(
        self, job: Job, uid: str | None = None, kind: str | None = None, name: str | None = None
    ) -> None:
        """Index ``job`` (optionally under another object's uid, kind and name)."""
        if uid or job.uid:
            self.by_uid[str(uid or job.uid)] = job
        self.by_name[(job.namespace, kind or job.kind, name or job.name)] = job

    def owner_of(self, meta: dict[str, Any], namespace: str) -> Job | None:
        """The job an object (pod or child job) belongs to, or None."""
        for ref in owners(meta):
            job = self.by_uid.get(str(ref.get("uid")))
            if job is None:
                job = self.by_name.get((namespace, str(ref.get("kind")), str(ref.get("name"))))
            if job is not None:
                return job
        labels = meta.get("labels") or {}
        for label, kinds in JOB_LABELS:
            name = labels.get(label)
            if name:
                for kind in kinds:
                    job = self.by_name.get((namespace, kind, str(name)))
                    if job is not None:
                        return job
        cluster = labels.get(RAY_CLUSTER_LABEL)
        if cluster:
            return self.by_ray_cluster.get((namespace, str(cluster)))
        return None


def terminations(
    pod: dict[str, Any], logs: dict[tuple[str, str, str], str] | None = None
) -> Iterator[Termination]:
    """How the pod's containers ended (init containers first), failed ones only.

    ``state.terminated``, else ``lastState.terminated`` for a container restarted in
    place (``restartPolicy: OnFailure``, now waiting in CrashLoopBackOff).
    """
    meta = meta_of(pod)
    name, namespace = str(meta.get("name") or ""), str(meta.get("namespace") or "")
    status = pod.get("status")
    if not isinstance(status, dict):
        return
    for field_name in ("initContainerStatuses", "containerStatuses"):
        for cs in status.get(field_name) or []:
            if not isinstance(cs, dict):
                continue
            done = (cs.get("state") or {}).get("terminated") or (
                (cs.get("lastState") or {}).get("terminated")
            )
            if not isinstance(done, dict):
                continue
            container = str(cs.get("name") or "")
            code = done.get("exitCode")
            termination = Termination(
                pod=name,
                container=container,
                exit_code=code if isinstance(code, int) else None,
                reason=done.get("reason") or None,
                message=done.get("message") or None,
                finished_at=done.get("finishedAt") or None,
                log_tail=(logs or {}).get((namespace, name, container)),
            )
            if termination.failed:
                yield termination
    # The pod as a whole: evicted, preempted, past its deadline.
    if status.get("phase") == "Failed" and status.get("reason"):
        yield Termination(
            pod=name,
            container="",
            exit_code=None,
            reason=str(status["reason"]),
            message=status.get("message") or None,
        )
