"""Ray jobs on a cluster, after the fact: stopping them for sure, deleting their
records, finding a session's leftovers; and Ray's own log lines, routed into ours.

A probe job is found by its metadata (``clusterbisect.session``,
``clusterbisect.probe``), which every submission carries. ``cleanup`` is the backend's
registry hook: ``clusterbisect cleanup --backend ray [--session ID]`` and ``resume``
call it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from clusterbisect.config import RayConnection
from clusterbisect.errors import BackendError, InputError
from clusterbisect.extras import require
from clusterbisect.log import get_logger
from clusterbisect.runners.ray.cluster import reap, recorded

log = get_logger(__name__)

FINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
SESSION_KEY = "clusterbisect.session"
PROBE_KEY = "clusterbisect.probe"


def status_text(value: Any) -> str:
    """A Ray ``JobStatus`` (or its string) as text."""
    return str(getattr(value, "value", value))


def connect(address: str, headers: dict[str, str] | None = None) -> Any:
    """A Jobs API client for ``address``, with Ray's log lines routed into ours."""
    require("ray", "the Ray backend")
    from ray.job_submission import JobSubmissionClient

    route_ray_logging()
    try:
        return JobSubmissionClient(address, headers=headers or None)
    except Exception as err:  # ConnectionError, RuntimeError, ValueError from Ray
        raise BackendError(f"cannot reach the Ray Jobs API at {address}: {err}") from err


def stop_and_delete(
    client: Any,
    submission_ids: Iterable[str],
    grace_s: float,
    poll_s: float = 0.25,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[list[str], list[str]]:
    """Stop the jobs, wait (up to ``grace_s``) until Ray says each is final, delete
    their records. Returns (deleted, still running after the grace)."""
    waiting = set(submission_ids)
    for submission_id in waiting:
        with contextlib.suppress(Exception):  # already final, or already gone
            client.stop_job(submission_id)
    deleted: list[str] = []
    deadline = time.monotonic() + grace_s
    while waiting:
        for submission_id in sorted(waiting):
            try:
                final = status_text(client.get_job_status(submission_id)) in FINAL
            except Exception:
                waiting.discard(submission_id)  # no such job (any more)
                continue
            if final:
                waiting.discard(submission_id)
                if delete_record(client, submission_id):
                    deleted.append(submission_id)
        if not waiting or time.monotonic() >= deadline:
            break
        sleep(poll_s)
    if waiting:
        log.warning("ray.jobs_not_stopped", jobs=sorted(waiting))
    return deleted, sorted(waiting)


def delete_record(client: Any, submission_id: str) -> bool:
    """Delete a final job's record from the cluster (its logs are ours by now)."""
    try:
        return bool(client.delete_job(submission_id))
    except Exception as err:
        log.warning("ray.delete_failed", job=submission_id, error=str(err))
        return False


def session_jobs(client: Any, session_id: str | None) -> list[Any]:
    """The cluster's clusterbisect jobs: those of ``session_id``, or all of them."""
    jobs = []
    for job in client.list_jobs():
        owner = (job.metadata or {}).get(SESSION_KEY)
        if owner and (session_id is None or owner == session_id) and job.submission_id:
            jobs.append(job)
    return jobs


def cleanup(
    session_id: str | None = None,
    *,
    options: RayConnection | None = None,
    private_dir: Path | None = None,
    grace_s: float = 30.0,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Stop and delete what clusterbisect left on Ray (the registry's cleanup hook).

    - ``private_dir`` (a session's ``STATE_DIR/ray``): the local Ray a killed run left
      running, stopped by its recorded PID;
    - the cluster at ``options.address`` (or ``RAY_ADDRESS``): every job whose metadata
      names ``session_id`` (every clusterbisect job without one) is stopped, and its
      record deleted.

    With ``dry_run`` nothing is stopped or deleted: ``found`` lists what would be, and
    ``sessions`` the sessions it belongs to.
    """
    address = (options.address if options else None) or os.environ.get("RAY_ADDRESS")
    if not address and private_dir is None:
        raise InputError(
            "needs the Ray cluster's Jobs API address (--ray-address or RAY_ADDRESS); "
            "a session's own local Ray is found through its state directory (--state-dir)",
            field="--ray-address",
        )
    report: dict[str, Any] = {"backend": "ray", "address": address, "session_id": session_id}
    jobs = []
    client = None
    if address:
        client = connect(address)
        try:
            jobs = session_jobs(client, session_id)
        except Exception as err:
            raise BackendError(f"cannot list the jobs at {address}: {err}") from err
    report["sessions"] = sorted({str(j.metadata[SESSION_KEY]) for j in jobs})
    if dry_run:
        local = recorded(private_dir) if private_dir is not None else None
        report["found"] = {
            "jobs": sorted(j.submission_id for j in jobs),
            "local_ray": [local["pid"]] if local and local["running"] else [],
        }
        report["summary"] = _found_summary(report)
        return report
    report["local_ray"] = reap(private_dir) if private_dir is not None else None
    report["stopped"] = sorted(j.submission_id for j in jobs if status_text(j.status) not in FINAL)
    report["deleted"], report["not_stopped"] = [], []
    if client is not None:
        deleted, running = stop_and_delete(client, [j.submission_id for j in jobs], grace_s)
        report["deleted"], report["not_stopped"] = sorted(deleted), running
    report["summary"] = _summary(report)
    return report


def _found_summary(plan: dict[str, Any]) -> str:
    parts = []
    if plan["found"]["local_ray"]:
        parts.append(f"the session's local Ray (PID {plan['found']['local_ray'][0]}) runs")
    if plan["address"]:
        sessions = plan["sessions"]
        parts.append(
            f"Ray at {plan['address']} holds {len(plan['found']['jobs'])} probe job(s) of "
            f"{len(sessions)} session(s): {', '.join(sessions[:10])}"
            + (" ..." if len(sessions) > 10 else "")
        )
    return "; ".join(parts) if parts else "nothing to clean up"


def _summary(report: dict[str, Any]) -> str:
    parts = []
    local = report["local_ray"]
    if local is not None:
        state = "stopped" if local["was_running"] else "had already stopped"
        parts.append(f"the session's local Ray (PID {local['pid']}) {state}")
    if report["address"]:
        whose = f"session {report['session_id']}" if report["session_id"] else "clusterbisect"
        line = (
            f"Ray at {report['address']}: {len(report['stopped'])} running {whose} job(s) "
            f"stopped, {len(report['deleted'])} job record(s) deleted"
        )
        if report["not_stopped"]:
            line += f"; still running: {', '.join(report['not_stopped'])}"
        parts.append(line)
    return "; ".join(parts) + "." if parts else "Nothing to clean up."


# --- Ray's log lines ---------------------------------------------------------------------


class _ToOurLog(logging.Handler):
    """Hands each record of Ray's loggers to our structlog logger, at debug level."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        log.debug(message, logger=record.name, ray_level=record.levelname)


def route_ray_logging() -> None:
    """Route the ``ray`` logger (package uploads, ``dashboard_sdk`` lines, warnings)
    into the tool's logging at debug level: never on stdout, never in the progress.

    Ray gives its logger a stderr handler when it is imported; that handler goes.
    """
    ray_logger = logging.getLogger("ray")
    if any(isinstance(h, _ToOurLog) for h in ray_logger.handlers):
        return
    for handler in list(ray_logger.handlers):
        ray_logger.removeHandler(handler)
    ray_logger.addHandler(_ToOurLog())
    ray_logger.propagate = False
    ray_logger.setLevel(logging.INFO)
