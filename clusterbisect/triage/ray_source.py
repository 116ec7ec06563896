"""Reading a Ray cluster's jobs into an ``Inventory`` (the edge).

``JobSubmissionClient(address).list_jobs()`` gives every job the cluster has run, with
its status, entrypoint, runtime_env and driver exit code; ``ray`` is imported only
here, when a Ray cluster is read. With ``logs`` > 0 the last lines of each failed
submitted job's logs are read too (``get_job_logs``), one call per failed job.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable
from typing import Any

from clusterbisect.errors import BackendError
from clusterbisect.extras import require
from clusterbisect.triage.model import FAILED, Inventory
from clusterbisect.triage.outcomes import ray_listing_outcome

MAX_LOG_CHARS = 256 * 1024


def read_ray(
    address: str,
    *,
    logs: int = 0,
    client_factory: Callable[[str], Any] | None = None,
) -> Inventory:
    """The jobs of the Ray cluster at ``address`` (``http://HOST:8265``), as an inventory."""
    if client_factory is None:
        require("ray", "reading jobs from a Ray cluster")
        from ray.job_submission import JobSubmissionClient

        client_factory = JobSubmissionClient
    source = f"ray {address}"
    try:
        client = client_factory(address)
        details = client.list_jobs()
    except Exception as err:  # ConnectionError, RuntimeError, ValueError from Ray
        raise BackendError(f"cannot list the jobs of the Ray cluster at {address}: {err}") from err
    inventory = Inventory(sources=[source])
    for detail in details:
        entry = job_entry(detail)
        inventory.ray_jobs.append((source, entry))
        submission = entry.get("submission_id")
        if logs and submission and ray_listing_outcome(entry).outcome == FAILED:
            text = _tail(client, str(submission), logs)
            if text:
                inventory.logs[("", str(submission), "")] = text
    return inventory


def job_entry(detail: Any) -> dict[str, Any]:
    """A ``JobDetails`` (pydantic model, dataclass or mapping) as a plain mapping."""
    if isinstance(detail, dict):
        data = dict(detail)
    elif hasattr(detail, "model_dump"):
        data = detail.model_dump()
    elif hasattr(detail, "dict"):
        data = detail.dict()
    elif dataclasses.is_dataclass(detail) and not isinstance(detail, type):
        data = dataclasses.asdict(detail)
    else:
        raise BackendError(f"unexpected job details from Ray: {type(detail).__name__}")
    return {k: _plain(v) for k, v in data.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _tail(client: Any, submission_id: str, lines: int) -> str | None:
    try:
        text = client.get_job_logs(submission_id)
    except Exception:  # the logs are gone (the job's node left): its message still says something
        return None
    if not isinstance(text, str):
        return None
    return "\n".join(text[-MAX_LOG_CHARS:].splitlines()[-lines:])
