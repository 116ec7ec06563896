"""Reading a probe's verdict from the objects the cluster reports: Job conditions, pod
phases, waiting reasons, terminated states and the events that say why a pod is stuck.
Pure: it reads API objects, calls nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Waiting reasons that mean the workload will not start without outside help.
IMAGE_ERRORS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)


CONFIG_ERRORS = frozenset({"CreateContainerConfigError", "CreateContainerError"})


PERMANENT_ERRORS = frozenset({"InvalidImageName", "ErrImageNeverPull"})  # no grace needed


def _true_conditions(job: Any) -> dict[str, Any]:
    status = getattr(job, "status", None)
    return {c.type: c for c in (getattr(status, "conditions", None) or []) if c.status == "True"}


def job_verdict(job: Any) -> tuple[str, str | None] | None:
    """``("succeeded"|"failed", reason)`` from the Job's conditions, None while running.

    New clusters (1.31+) set SuccessCriteriaMet / FailureTarget first; old ones only
    Complete / Failed. Either is final.
    """
    conditions = _true_conditions(job)
    for kind in ("FailureTarget", "Failed"):
        if kind in conditions:
            return "failed", conditions[kind].reason
    for kind in ("SuccessCriteriaMet", "Complete"):
        if kind in conditions:
            return "succeeded", conditions[kind].reason
    return None


def pod_sort_key(pod: Any) -> tuple[float, str]:
    created = getattr(pod.metadata, "creation_timestamp", None)
    stamp = created.timestamp() if created is not None and hasattr(created, "timestamp") else 0.0
    return stamp, pod.metadata.name or ""


def disrupted(pod: Any) -> bool:
    conditions = getattr(pod.status, "conditions", None) or []
    return any(c.type == "DisruptionTarget" and c.status == "True" for c in conditions)


def _statuses(pod: Any, init: bool = False) -> list[Any]:
    status = pod.status
    return list((status.init_container_statuses if init else status.container_statuses) or [])


# How long each kind of stuck waits before the probe is given up (KubernetesSettings):
NOW = "now"  # it cannot get better (an invalid image name)
CONFIG = "config"  # image, container config, admission: image_pull_grace_s
PENDING = "pending"  # scheduling, quota, gates: pending_grace_s
MOUNT = "mount"  # volumes that do not mount: mount_grace_s


@dataclass(frozen=True)
class Stuck:
    """Why a probe's pod does not run (or was never made), and which grace applies."""

    reason: str
    message: str
    grace: str


def pending_problem(pod: Any) -> Stuck | None:
    """Why a Pending pod is stuck on an image, a container's config or scheduling."""
    if getattr(pod.status, "phase", None) != "Pending":
        return None
    for status in _statuses(pod, init=True) + _statuses(pod):
        waiting = getattr(status.state, "waiting", None) if status.state else None
        if waiting and waiting.reason in IMAGE_ERRORS | CONFIG_ERRORS:
            message = f"container {status.name}: {waiting.reason}: {waiting.message or ''}"
            grace = NOW if waiting.reason in PERMANENT_ERRORS else CONFIG
            return Stuck(waiting.reason, message.strip(), grace)
    for condition in getattr(pod.status, "conditions", None) or []:
        scheduled = condition.type == "PodScheduled" and condition.status == "False"
        if scheduled and condition.reason in ("Unschedulable", "SchedulingGated"):
            message = f"{condition.reason}: {condition.message or ''}".strip()
            return Stuck(condition.reason, message, PENDING)
    return None


def creating(pod: Any) -> bool:
    """The pod is scheduled and its containers wait in ContainerCreating (or an init
    container in PodInitializing): where a volume that cannot be mounted keeps it."""
    if getattr(pod.status, "phase", None) != "Pending" or not getattr(pod.spec, "node_name", None):
        return False
    for status in _statuses(pod, init=True) + _statuses(pod):
        waiting = getattr(status.state, "waiting", None) if status.state else None
        if waiting and waiting.reason in ("ContainerCreating", "PodInitializing"):
            return True
    return not (_statuses(pod) or _statuses(pod, init=True))


def mount_problem(events: list[Any]) -> Stuck | None:
    """FailedMount (or FailedAttachVolume) among a pod's events: the latest message."""
    failed = [e for e in events if e.reason in ("FailedMount", "FailedAttachVolume")]
    if not failed:
        return None
    latest = sorted(failed, key=_event_time)[-1]
    return Stuck(latest.reason, f"{latest.reason}: {latest.message or ''}".strip(), MOUNT)


# What the Job controller's FailedCreate events say, and how each is named.
_CREATE_REFUSALS = (
    ("exceeded quota", "ExceededQuota", PENDING),
    ("violates PodSecurity", "PodSecurity", CONFIG),
    ("error looking up service account", "ServiceAccountMissing", CONFIG),
    ('serviceaccount "', "ServiceAccountMissing", CONFIG),
)


def create_problem(events: list[Any]) -> Stuck | None:
    """Why the Job controller cannot create the probe's pod (its FailedCreate events):
    a quota, Pod Security admission, a missing ServiceAccount, another refusal."""
    failed = [e for e in events if e.reason == "FailedCreate"]
    if not failed:
        return None
    latest = sorted(failed, key=_event_time)[-1]
    message = latest.message or ""
    for needle, reason, grace in _CREATE_REFUSALS:
        if needle.lower() in message.lower():
            return Stuck(reason, f"FailedCreate ({reason}): {message}", grace)
    return Stuck("FailedCreate", f"FailedCreate: {message}", CONFIG)


def _event_time(event: Any) -> float:
    for name in ("last_timestamp", "event_time", "first_timestamp"):
        stamp = getattr(event, name, None)
        if stamp is not None and hasattr(stamp, "timestamp"):
            return float(stamp.timestamp())
    created = getattr(getattr(event, "metadata", None), "creation_timestamp", None)
    return float(created.timestamp()) if created is not None else 0.0


def disruption(pod: Any) -> str | None:
    """The reason of a pod's DisruptionTarget condition (an eviction, a preemption), or
    None when it was not disrupted."""
    for condition in getattr(pod.status, "conditions", None) or []:
        if condition.type == "DisruptionTarget" and condition.status == "True":
            return str(condition.reason or "DisruptionTarget")
    return None


def main_done_sidecars_running(pod: Any, main: str) -> bool:
    """The main container has exited while other (non-native sidecar) containers run on."""
    if getattr(pod.status, "phase", None) != "Running":
        return False
    main_done, others_running = False, False
    for status in _statuses(pod):
        state = status.state
        if status.name == main:
            main_done = bool(state and state.terminated)
        elif state and state.running:
            others_running = True
    return main_done and others_running


def terminated_state(pod: Any, main: str) -> tuple[int | None, str | None]:
    """Exit code and reason of the main container, or of a failed init container."""
    for status in _statuses(pod):
        if status.name == main:
            state = status.state
            term = getattr(state, "terminated", None) if state else None
            if term is None:
                last = getattr(status, "last_state", None)
                term = getattr(last, "terminated", None) if last else None
            if term is not None:
                return term.exit_code, term.reason
    for status in _statuses(pod, init=True):
        term = getattr(status.state, "terminated", None) if status.state else None
        if term is not None and term.exit_code:
            lines = [ln for ln in (getattr(term, "message", None) or "").splitlines() if ln.strip()]
            said = f": {lines[-1].strip()[:300]}" if lines else ""
            return term.exit_code, f"init container {status.name}: {term.reason or 'Error'}{said}"
    reason = getattr(pod.status, "reason", None)
    return None, reason
