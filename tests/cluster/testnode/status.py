"""Pod status as the kubelet writes it: container states, the phase, the conditions."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from .logs import timestamp


def now() -> str:
    """A status timestamp (RFC 3339, seconds, as metav1.Time serialises)."""
    return timestamp()[:19] + "Z"


@dataclass
class ContainerState:
    """The kubelet's view of one container (a containerStatuses entry)."""

    name: str
    image: str
    init: bool = False
    sidecar: bool = False  # an init container with restartPolicy: Always
    state: dict[str, Any] = field(
        default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}}
    )
    last_state: dict[str, Any] = field(default_factory=dict)
    restart_count: int = 0
    ready: bool = False
    container_id: str | None = None

    @property
    def kind(self) -> str:
        return next(iter(self.state))

    def terminated(self) -> dict[str, Any] | None:
        return self.state.get("terminated")

    def as_status(self) -> dict[str, Any]:
        digest = hashlib.sha256(self.image.encode()).hexdigest()
        status: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": f"{self.image.split('@')[0].split(':')[0]}@sha256:{digest}",
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.kind == "running",
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.container_id:
            status["containerID"] = self.container_id
        return status


def phase(
    spec: dict[str, Any], states: dict[str, ContainerState], terminal: bool, initialized: bool
) -> str:
    """The kubelet's getPhase, for the states of ``spec``'s containers."""
    pending_init = failed_init = 0
    for container in spec.get("initContainers") or []:
        state = states.get(container["name"])
        if state is None:
            pending_init += 1
        elif state.sidecar:
            if state.kind != "running" and not initialized:
                pending_init += 1
        elif state.kind == "running":
            pending_init += 1
        elif state.kind == "terminated":
            failed_init += state.state["terminated"]["exitCode"] != 0
        elif "terminated" in state.last_state:
            failed_init += state.last_state["terminated"]["exitCode"] != 0
        else:
            pending_init += 1
    unknown = running = waiting = stopped = succeeded = 0
    for container in spec.get("containers") or []:
        state = states.get(container["name"])
        if state is None:
            unknown += 1
        elif state.kind == "running":
            running += 1
        elif state.kind == "terminated":
            stopped += 1
            succeeded += state.state["terminated"]["exitCode"] == 0
        elif "terminated" in state.last_state:
            stopped += 1
        else:
            waiting += 1
    policy = spec.get("restartPolicy", "Always")
    if failed_init and policy == "Never":
        return "Failed"
    if pending_init or waiting:
        return "Pending"
    if running and not unknown:
        return "Running"
    if not running and stopped and not unknown:
        if terminal:
            return "Succeeded" if stopped == succeeded else "Failed"
        if policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        return "Failed" if policy == "Never" else "Running"
    return "Pending"


def _condition(
    kind: str, ok: bool, previous: dict[str, dict[str, Any]], reason: str = "", message: str = ""
) -> dict[str, Any]:
    status = "True" if ok else "False"
    before = previous.get(kind)
    changed = before is None or before.get("status") != status
    condition: dict[str, Any] = {
        "type": kind,
        "status": status,
        "lastProbeTime": None,
        "lastTransitionTime": now() if changed else before["lastTransitionTime"],  # type: ignore[index]
    }
    # None removes what an earlier status said (the patch is a strategic merge).
    condition["reason"] = reason or None
    condition["message"] = message or None
    return condition


def conditions(
    spec: dict[str, Any],
    states: dict[str, ContainerState],
    pod_phase: str,
    sandbox_ready: bool,
    previous: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """The conditions the kubelet owns (PodScheduled and others are left alone)."""
    before = {c["type"]: c for c in previous}
    completed = pod_phase in ("Succeeded", "Failed")
    incomplete = [
        c["name"] for c in spec.get("initContainers") or [] if not _init_done(states.get(c["name"]))
    ]
    unready = [c["name"] for c in spec.get("containers") or [] if not _ready(states.get(c["name"]))]
    unready += [
        c["name"]
        for c in spec.get("initContainers") or []
        if c.get("restartPolicy") == "Always" and not _ready(states.get(c["name"]))
    ]
    out = [_condition("PodReadyToStartContainers", sandbox_ready and not completed, before)]
    if completed and not incomplete:
        out.append(_condition("Initialized", True, before, "PodCompleted"))
    elif incomplete:
        message = f"containers with incomplete status: [{' '.join(incomplete)}]"
        out.append(_condition("Initialized", False, before, "ContainersNotInitialized", message))
    else:
        out.append(_condition("Initialized", True, before))
    for kind in ("Ready", "ContainersReady"):
        if completed:
            out.append(_condition(kind, False, before, "PodCompleted"))
        elif unready:
            message = f"containers with unready status: [{' '.join(unready)}]"
            reason = "ContainersNotReady"
            out.append(_condition(kind, False, before, reason, message))
        else:
            out.append(_condition(kind, True, before))
    return out


def _init_done(state: ContainerState | None) -> bool:
    if state is None:
        return False
    if state.sidecar:
        return state.kind == "running" or state.restart_count > 0
    term = state.terminated()
    return term is not None and term["exitCode"] == 0


def _ready(state: ContainerState | None) -> bool:
    return state is not None and state.ready


def sorted_statuses(
    spec: dict[str, Any], states: dict[str, ContainerState]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(initContainerStatuses in spec order, containerStatuses by name), as the kubelet
    orders them."""
    init = [
        states[c["name"]].as_status()
        for c in spec.get("initContainers") or []
        if c["name"] in states
    ]
    regular = [
        states[c["name"]].as_status() for c in spec.get("containers") or [] if c["name"] in states
    ]
    return init, sorted(regular, key=lambda s: s["name"])
