"""Probe Jobs in flight: created, watched until each has a result, and deleted.

The runner renders a probe's Job; :class:`ProbeJobs` creates it and follows it with a
watch on the session's Jobs (a resourceVersion, re-listing on ``410 Gone``), checks
the pods for what a Job's conditions do not say (stuck Pending, a main container that
exited while sidecars run on), keeps our own deadline, reads the main container's log,
settles each probe into a ``RunResult`` and deletes its Job
(``propagationPolicy=Background``), and deletes whatever is still in flight when asked
(:meth:`ProbeJobs.abort`: interruption, error, close). A probe's Secret (its secret
values, ``secretref.py``) is created before its Job and deleted with it
(``probe_secret.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusterbisect.errors import BackendError
from clusterbisect.files import private_dir, write_private
from clusterbisect.log import get_logger
from clusterbisect.outcome import RunResult
from clusterbisect.runners.base import Probe
from clusterbisect.runners.kubernetes import render
from clusterbisect.runners.kubernetes.client import (
    RETRY_STATUSES,
    Api,
    KubernetesSettings,
    api_error,
    connection_errors,
)
from clusterbisect.runners.kubernetes.probe_secret import ProbeSecrets
from clusterbisect.runners.kubernetes.status import (
    PERMANENT_ERRORS,
    disrupted,
    job_verdict,
    main_done_sidecars_running,
    pending_problem,
    pod_sort_key,
    terminated_state,
)

log = get_logger(__name__)


@dataclass
class Tracked:
    """One probe Job in flight."""

    probe: Probe
    name: str
    created: float
    deadline: float
    main: str
    result: RunResult | None = None
    pod_name: str | None = None
    seen: dict[str, float] = field(default_factory=dict)  # waiting reason -> first seen
    secret: str | None = None  # the probe's Secret, deleted with its Job


class ProbeJobs:
    """The probe Jobs of one runner that are in flight, in one namespace."""

    def __init__(
        self,
        api: Api,
        options: KubernetesSettings,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api = api
        self.conn = api.conn
        self.options = options
        self.clock = clock
        self.sleep = sleep
        self.live: dict[str, Tracked] = {}
        self.secrets = ProbeSecrets(api)
        self._last_pod_check = float("-inf")

    def start(
        self, probe: Probe, render_job: Callable[[], list[dict[str, Any]]], main: str
    ) -> Tracked:
        """Create the probe's Job (``render_job()`` renders what it needs, its Secret,
        then the Job last, with a fresh name each time); a name clash (409) gets a
        fresh name."""
        from kubernetes.client.exceptions import ApiException

        conn = self.conn
        for _ in range(3):
            *needs, job = render_job()
            name = job["metadata"]["name"]
            secret = None
            try:
                secret = self.secrets.create(needs)
                created = self.api.create(
                    conn.batch.create_namespaced_job, job, "jobs.batch", passthrough=(409,)
                )
            except ApiException:
                self.secrets.delete(secret)
                continue
            except BaseException:
                self.secrets.delete(secret)
                raise
            self.secrets.adopt(secret, created)
            now = self.clock()
            deadline = now + job["spec"]["activeDeadlineSeconds"] + self.options.deadline_slack_s
            tracked = Tracked(probe, name, now, deadline, main, secret=secret)
            self.live[name] = tracked
            log.info("k8s.job_created", job=name, probe=probe.probe_id, namespace=conn.namespace)
            return tracked
        raise BackendError(
            f"could not create a probe job for {probe.probe_id}: names kept clashing"
        )

    def watch(self, tracked: list[Tracked]) -> None:
        """Watch the session's Jobs until each probe has a result."""
        from kubernetes.client.exceptions import ApiException

        pending = {t.name: t for t in tracked if t.result is None}
        selector = render.session_selector(tracked[0].probe.session_id)
        version: str | None = None
        failures = 0
        while pending:
            if version is None:  # (re-)list: the initial state, and after 410 Gone
                version = self._relist(pending, selector)
            self.check_pods(pending)
            self.check_deadlines(pending)
            if not pending:
                break
            try:
                version = self._follow(pending, selector, version)
                failures = 0
            except ApiException as err:
                if err.status == 410:  # our resourceVersion is too old: list again
                    log.info("k8s.watch_gone", resource_version=version)
                    version = None
                    continue
                if err.status not in RETRY_STATUSES or failures >= self.options.retries:
                    raise api_error(err, "watch", "jobs.batch", self.conn.namespace) from err
                failures += 1
                self.sleep(self.options.retry_base_s * 2**failures)
            except connection_errors() as err:  # includes a watch that timed out client-side
                failures += 1
                if failures > self.options.retries:
                    raise BackendError(f"lost the watch on probe jobs: {err}") from err
                self.sleep(self.options.retry_base_s * 2**failures)

    def _relist(self, pending: dict[str, Tracked], selector: str) -> str:
        """List the session's Jobs, settle what they say, and return the list's version."""
        conn = self.conn
        listed = self.api.call(
            conn.batch.list_namespaced_job,
            conn.namespace,
            label_selector=selector,
            verb="list",
            resource="jobs.batch",
        )
        names = set()
        for job in listed.items:
            names.add(job.metadata.name)
            self._on_job(job, pending)
        for name in [n for n in pending if n not in names]:
            self._finish_gone(pending, name)
        return str(listed.metadata.resource_version)

    def _follow(self, pending: dict[str, Tracked], selector: str, version: str) -> str:
        """Follow the Jobs' events from ``version`` for a while (pods and deadlines are
        checked between watches); the last version seen."""
        from kubernetes import watch

        conn = self.conn
        watcher = watch.Watch()
        timeout = max(1, int(self.options.poll_s))
        try:
            for event in watcher.stream(
                conn.batch.list_namespaced_job,
                conn.namespace,
                label_selector=selector,
                resource_version=version,
                timeout_seconds=timeout,
                allow_watch_bookmarks=True,
                _request_timeout=timeout + 30,
            ):
                kind = event.get("type")
                raw = event.get("raw_object") or {}
                if kind == "BOOKMARK":
                    version = (raw.get("metadata") or {}).get("resourceVersion") or version
                    continue
                job = event["object"]
                version = job.metadata.resource_version or version
                if kind == "DELETED":
                    self._finish_gone(pending, job.metadata.name)
                else:
                    self._on_job(job, pending)
                if not pending or self.clock() - self._last_pod_check >= self.options.poll_s:
                    break  # check pods and deadlines between events too
        finally:
            watcher.stop()
        return version

    def _on_job(self, job: Any, pending: dict[str, Tracked]) -> None:
        item = pending.get(job.metadata.name)
        if item is None:
            return
        verdict = job_verdict(job)
        if verdict is None:
            return
        outcome, reason = verdict
        self._finish(pending, item, outcome, reason)

    def _finish_gone(self, pending: dict[str, Tracked], name: str) -> None:
        item = pending.get(name)
        if item is not None:
            self._settle(
                pending,
                item,
                RunResult(exit_code=None, infra_error=f"probe job {name} was deleted"),
            )

    def _finish(
        self, pending: dict[str, Tracked], item: Tracked, outcome: str, reason: str | None
    ) -> None:
        """Read the pod's terminated state and logs, then delete the Job."""
        pod = self._latest_pod(item.name)
        exit_code, term_reason = None, None
        if pod is not None:
            item.pod_name = pod.metadata.name
            exit_code, term_reason = terminated_state(pod, item.main)
        timed_out = reason == "DeadlineExceeded"
        if outcome == "succeeded" and exit_code is None:
            exit_code = 0
        if outcome == "failed" and exit_code == 0 and not timed_out:
            exit_code = None  # a failed Job whose main container exited 0: a sidecar or init failed
        output = self._read_logs(item) if pod is not None else ""
        result = RunResult(
            exit_code=exit_code,
            output=output,
            timed_out=timed_out,
            reason="DeadlineExceeded"
            if timed_out
            else (term_reason or (reason if outcome == "failed" else None)),
            details={"job": item.name, "pod": item.pod_name, "job_reason": reason},
        )
        self._settle(pending, item, result)

    def _finish_from_pod(self, pending: dict[str, Tracked], item: Tracked, pod: Any) -> None:
        exit_code, reason = terminated_state(pod, item.main)
        result = RunResult(
            exit_code=exit_code,
            output=self._read_logs(item),
            reason=reason,
            details={"job": item.name, "pod": item.pod_name, "job_reason": "MainContainerExited"},
        )
        self._settle(pending, item, result)

    def _settle(self, pending: dict[str, Tracked], item: Tracked, result: RunResult) -> None:
        result.duration_s = self.clock() - item.created
        result.log_path = str(item.probe.log_path)
        result.details.setdefault("job", item.name)
        result.details.setdefault("namespace", self.conn.namespace)
        if not item.probe.log_path.exists():
            write_log(item.probe.log_path, result.output, self.options.max_log_bytes)
        item.result = result
        pending.pop(item.name, None)
        self.api.delete_job(item.name)
        self.secrets.delete(item.secret)
        self.live.pop(item.name, None)
        log.info(
            "k8s.probe_done",
            job=item.name,
            exit_code=result.exit_code,
            reason=result.reason,
            infra_error=result.infra_error,
        )

    def _latest_pod(self, name: str) -> Any:
        conn = self.conn
        pods = self.api.call(
            conn.core.list_namespaced_pod,
            conn.namespace,
            label_selector=f"{render.LABEL_JOB}={name}",
            verb="list",
            resource="pods",
        ).items
        if not pods:
            return None
        # Disrupted pods are ignored by the Job (podFailurePolicy), so prefer the others.
        kept = [p for p in pods if not disrupted(p)] or pods
        return sorted(kept, key=pod_sort_key)[-1]

    def _read_logs(self, item: Tracked) -> str:
        """The main container's log tail, bounded, written to the probe's log file."""
        from kubernetes.client.exceptions import ApiException

        conn = self.conn
        try:
            text = self.api.call(
                conn.core.read_namespaced_pod_log,
                item.pod_name,
                conn.namespace,
                container=item.main,
                limit_bytes=self.options.max_log_bytes,
                tail_lines=self.options.log_tail_lines,
                verb="get",
                resource="pods/log",
                passthrough=(400, 404),
            )
        except ApiException as err:
            text = ""
            log.info("k8s.no_logs", pod=item.pod_name, status=err.status)
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        text = str(text or "")
        write_log(item.probe.log_path, text, self.options.max_log_bytes)
        return text[-self.options.max_log_bytes :]

    def check_pods(self, pending: dict[str, Tracked]) -> None:
        """Pods stuck Pending (image, config, scheduling) become infra errors after a grace."""
        now = self.clock()
        if not pending or now - self._last_pod_check < self.options.poll_s:
            return
        self._last_pod_check = now
        conn = self.conn
        pods = self.api.call(
            conn.core.list_namespaced_pod,
            conn.namespace,
            label_selector=render.session_selector(next(iter(pending.values())).probe.session_id),
            verb="list",
            resource="pods",
        ).items
        by_job: dict[str, list[Any]] = {}
        for pod in pods:
            by_job.setdefault((pod.metadata.labels or {}).get(render.LABEL_JOB, ""), []).append(pod)
        for item in list(pending.values()):
            mine = [p for p in by_job.get(item.name, []) if not disrupted(p)]
            if not mine:
                if now - item.created >= self.options.pending_grace_s:
                    self._settle(
                        pending,
                        item,
                        RunResult(
                            exit_code=None,
                            infra_error=(
                                f"no pod was created for {item.name} within "
                                f"{self.options.pending_grace_s:g} s (quota, admission, a webhook?)"
                            ),
                        ),
                    )
                continue
            pod = sorted(mine, key=pod_sort_key)[-1]
            item.pod_name = pod.metadata.name
            if main_done_sidecars_running(pod, item.main):
                # A plain sidecar (a log shipper) would keep the pod, and the Job,
                # running forever: the main container's exit is the probe's result.
                self._finish_from_pod(pending, item, pod)
                continue
            problem = pending_problem(pod)
            if problem is None:
                item.seen.clear()
                continue
            reason, message = problem
            first = item.seen.setdefault(reason, now)
            if reason in PERMANENT_ERRORS:
                grace = 0.0
            elif reason == "Unschedulable":
                grace = self.options.pending_grace_s
            else:
                grace = self.options.image_pull_grace_s
            if now - first >= grace:
                item.pod_name = pod.metadata.name
                self._settle(
                    pending,
                    item,
                    RunResult(
                        exit_code=None,
                        reason=reason,
                        infra_error=message,
                        details={"pod": pod.metadata.name},
                    ),
                )

    def check_deadlines(self, pending: dict[str, Tracked]) -> None:
        """Our watchdog, in case the Job controller never reports DeadlineExceeded."""
        now = self.clock()
        for item in list(pending.values()):
            if now >= item.deadline:
                output = self._read_logs(item) if item.pod_name else ""
                self._settle(
                    pending,
                    item,
                    RunResult(
                        exit_code=None, output=output, timed_out=True, reason="DeadlineExceeded"
                    ),
                )

    def abort(self) -> int:
        """Delete every Job still in flight (Background: their pods go too)."""
        deleted = 0
        for name in list(self.live):
            try:
                if self.api.delete_job(name):
                    deleted += 1
            except BackendError as err:
                log.warning("k8s.cleanup_failed", job=name, error=err.message)
            self.secrets.delete(self.live[name].secret)
            self.live.pop(name, None)
        if deleted:
            log.warning("k8s.jobs_deleted", count=deleted)
        return deleted


def write_log(path: Path, text: str, limit: int) -> None:
    """The probe's log as the workload wrote it (secrets and all: mode 0600)."""
    private_dir(path.parent)
    data = text.encode("utf-8", errors="replace")
    if len(data) > limit:
        data = b"[... log truncated to its last %d bytes ...]\n" % limit + data[-limit:]
    write_private(path, data)
