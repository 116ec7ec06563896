"""Small hand-built fleets for the triage tests: Jobs and Pods as ``kubectl`` exports them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TRAINER = "containers[trainer]."


def job(
    name: str,
    outcome: str = "succeeded",
    *,
    env: dict[str, str] | None = None,
    image: str = "registry.example.com/train:1",
    namespace: str = "ml",
    app: str = "train",
    uid: str | None = None,
    created: str = "2026-11-20T10:00:00Z",
    reason: str | None = None,
) -> dict[str, Any]:
    """A Job with one ``trainer`` container; ``outcome``: succeeded, failed or running."""
    uid = uid or f"uid-{name}"
    conditions: list[dict[str, Any]] = []
    if outcome == "succeeded":
        conditions = [{"type": "Complete", "status": "True"}]
    elif outcome == "failed":
        conditions = [
            {"type": "Failed", "status": "True", "reason": reason or "BackoffLimitExceeded"}
        ]
    status: dict[str, Any] = {"startTime": created}
    if conditions:
        status["conditions"] = conditions
    else:
        status["active"] = 1
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "labels": {"app": app},
            "creationTimestamp": created,
            "resourceVersion": "1",
        },
        "spec": {
            "backoffLimit": 0,
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}},
            "template": {
                "metadata": {"labels": {"app": app, "job-name": name, "controller-uid": uid}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "trainer",
                            "image": image,
                            "command": ["python", "train.py"],
                            "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
                        }
                    ],
                },
            },
        },
        "status": status,
    }


def pod(
    owner: dict[str, Any],
    *,
    exit_code: int = 0,
    reason: str | None = None,
    message: str | None = None,
    suffix: str = "x7k2p",
    owner_reference: bool = True,
) -> dict[str, Any]:
    """The pod of Job ``owner``, ended with ``exit_code`` (and reason, message)."""
    meta = owner["metadata"]
    name = f"{meta['name']}-{suffix}"
    terminated: dict[str, Any] = {
        "exitCode": exit_code,
        "reason": reason or ("Completed" if exit_code == 0 else "Error"),
        "finishedAt": "2026-11-20T11:00:00Z",
    }
    if message is not None:
        terminated["message"] = message
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": meta["namespace"],
        "uid": f"pod-{name}",
        "labels": {"job-name": meta["name"], "controller-uid": meta["uid"]},
    }
    if owner_reference:
        metadata["ownerReferences"] = [
            {"kind": "Job", "name": meta["name"], "uid": meta["uid"], "controller": True}
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": owner["spec"]["template"]["spec"],
        "status": {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "containerStatuses": [{"name": "trainer", "state": {"terminated": terminated}}],
        },
    }


def export(path: Path, objects: list[dict[str, Any]]) -> str:
    """Write ``objects`` as ``kubectl get jobs,pods -o json`` does; the path as a string."""
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    return str(path)


NCCL = (
    "Traceback (most recent call last):\n"
    '  File "train.py", line 12, in <module>\n'
    "RuntimeError: NCCL error on rank {rank} at 0x7f{rank}a3b2c1 (pod {pod})"
)


def failed_with(j: dict[str, Any], rank: int = 0, text: str = NCCL) -> dict[str, Any]:
    """The failed pod of ``j`` with the NCCL failure (rank and addresses vary)."""
    name = f"{j['metadata']['name']}-x7k2p"
    return pod(j, exit_code=1, message=text.format(rank=rank, pod=name))
