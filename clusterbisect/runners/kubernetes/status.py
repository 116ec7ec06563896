"""Reading a probe's verdict from the objects the cluster reports: Job conditions, pod
phases, waiting reasons and terminated states. Pure: it reads API objects, calls nothing.
"""

from __future__ import annotations

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


def pending_problem(pod: Any) -> tuple[str, str] | None:
    """``(reason, message)`` when a Pending pod is stuck on an image, config or scheduling."""
    if getattr(pod.status, "phase", None) != "Pending":
        return None
    for status in _statuses(pod, init=True) + _statuses(pod):
        waiting = getattr(status.state, "waiting", None) if status.state else None
        if waiting and waiting.reason in IMAGE_ERRORS | CONFIG_ERRORS:
            return (
                waiting.reason,
                f"container {status.name}: {waiting.reason}: {waiting.message or ''}".strip(),
            )
    for condition in getattr(pod.status, "conditions", None) or []:
        if (
            condition.type == "PodScheduled"
            and condition.status == "False"
            and condition.reason == "Unschedulable"
        ):
            return "Unschedulable", f"Unschedulable: {condition.message or ''}".strip()
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
