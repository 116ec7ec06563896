"""A job's outcome from its status: succeeded, failed, running (not finished) or unknown.

Pure: reads exported objects (camelCase, as ``kubectl get -o json`` prints them).

- Job: the conditions of old and new clusters. 1.31+ set SuccessCriteriaMet and
  FailureTarget before Complete and Failed; any of them is final.
- Kubeflow training jobs (PyTorchJob, TFJob, MPIJob, ...): the Succeeded / Failed
  conditions (Created, Running, Restarting and Suspended are not finished); a
  TrainJob's Complete / Failed.
- JobSet: Completed / Failed.
- RayJob: ``status.jobStatus`` (SUCCEEDED, FAILED), and a ``jobDeploymentStatus`` of
  Failed (the submission failed, or the deadline passed) with ``status.reason``.
- Pod (a bare pod is its own job): its phase.
- A Ray job listing entry: its status. STOPPED (stopped by someone) is unknown: it is
  neither a success nor the workload's failure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clusterbisect.specs.kubernetes import KUBEFLOW_KINDS
from clusterbisect.triage.model import FAILED, RUNNING, SUCCEEDED, UNKNOWN

_JOB_FAILED = ("FailureTarget", "Failed")
_JOB_SUCCEEDED = ("SuccessCriteriaMet", "Complete")
_KUBEFLOW_FAILED = ("Failed",)
_KUBEFLOW_SUCCEEDED = ("Succeeded", "Complete")
_JOBSET_FAILED = ("Failed",)
_JOBSET_SUCCEEDED = ("Completed",)
_RAY_STATUS = {
    "SUCCEEDED": SUCCEEDED,
    "FAILED": FAILED,
    "STOPPED": UNKNOWN,
    "PENDING": RUNNING,
    "RUNNING": RUNNING,
}
_POD_PHASES = {"Succeeded": SUCCEEDED, "Failed": FAILED, "Running": RUNNING, "Pending": RUNNING}


@dataclass(frozen=True)
class Verdict:
    """An outcome, with the reason and message the status gives for it."""

    outcome: str
    reason: str | None = None
    message: str | None = None


def outcome_of(obj: dict[str, Any]) -> Verdict:
    """The outcome of an exported job object (by its ``kind``) or Ray listing entry."""
    kind = obj.get("kind")
    status = obj.get("status")
    if kind is None:
        return ray_listing_outcome(obj)
    if not isinstance(status, dict) or not status:
        return Verdict(UNKNOWN)
    if kind == "Job":
        return _by_conditions(status, _JOB_FAILED, _JOB_SUCCEEDED)
    if kind in KUBEFLOW_KINDS or kind == "TrainJob":
        return _by_conditions(status, _KUBEFLOW_FAILED, _KUBEFLOW_SUCCEEDED)
    if kind == "JobSet":
        return _by_conditions(status, _JOBSET_FAILED, _JOBSET_SUCCEEDED)
    if kind == "RayJob":
        return rayjob_outcome(status)
    if kind == "Pod":
        return pod_outcome(status)
    return Verdict(UNKNOWN)


def _true_conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    conditions = status.get("conditions")
    if not isinstance(conditions, list):
        return {}
    return {
        str(c.get("type")): c
        for c in conditions
        if isinstance(c, dict) and str(c.get("status")) == "True"
    }


def _by_conditions(
    status: dict[str, Any], failed: tuple[str, ...], succeeded: tuple[str, ...]
) -> Verdict:
    true = _true_conditions(status)
    for kinds, outcome in ((failed, FAILED), (succeeded, SUCCEEDED)):
        for kind in kinds:
            if kind in true:
                return Verdict(
                    outcome, _text(true[kind].get("reason")), _text(true[kind].get("message"))
                )
    # Started, active, suspended or only created: not finished yet.
    return Verdict(RUNNING)


def rayjob_outcome(status: dict[str, Any]) -> Verdict:
    """A KubeRay RayJob: the Ray job's status, else a failed deployment."""
    reason = _text(status.get("reason"))
    message = _text(status.get("message"))
    job_status = status.get("jobStatus")
    outcome = _RAY_STATUS.get(str(job_status)) if job_status else None
    if outcome in (SUCCEEDED, FAILED):
        return Verdict(outcome, reason, message)
    deployment = status.get("jobDeploymentStatus")
    if deployment == "Failed":
        return Verdict(FAILED, reason or "DeploymentFailed", message)
    if deployment == "Complete" or outcome == UNKNOWN:
        return Verdict(UNKNOWN, reason or (str(job_status) if job_status else None), message)
    if outcome == RUNNING or deployment:
        return Verdict(RUNNING, reason, message)
    return Verdict(UNKNOWN, reason, message)


def pod_outcome(status: dict[str, Any]) -> Verdict:
    """A bare pod: its phase (Failed with the eviction or deadline reason, if any)."""
    outcome = _POD_PHASES.get(str(status.get("phase")), UNKNOWN)
    return Verdict(outcome, _text(status.get("reason")), _text(status.get("message")))


def ray_listing_outcome(entry: dict[str, Any]) -> Verdict:
    """An entry of a Ray job listing (``JobDetails``)."""
    status = entry.get("status")
    outcome = _RAY_STATUS.get(str(status).rsplit(".", 1)[-1], UNKNOWN) if status else UNKNOWN
    return Verdict(outcome, _text(entry.get("error_type")), _text(entry.get("message")))


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None
