"""Probe Jobs in flight: created, watched until each has a result, and deleted.

The runner renders a probe's Job; :class:`ProbeJobs` creates it (adopting the Job a
retried create finds already made) and follows it with a watch on the session's Jobs
(a resourceVersion, re-listing on ``410 Gone`` with a back-off, riding out an API
server restart), checks the pods for what a Job's conditions do not say (stuck
Pending or ContainerCreating, a pod refused at creation, a main container that exited
while sidecars run on, an evicted pod whose replacement is on its way), keeps our own
deadline, streams the main container's log, settles each probe into a ``RunResult``
and deletes its Job (``propagationPolicy=Background``), and deletes whatever is still
in flight when asked (:meth:`ProbeJobs.abort`: interruption, error, close). A
probe's Secret (its secret values, ``secretref.py``) is created before its Job and
deleted with it (``probe_secret.py``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clusterbisect.errors import BackendError
from clusterbisect.log import get_logger
from clusterbisect.outcome import RunResult
from clusterbisect.runners.base import Probe
from clusterbisect.runners.kubernetes import render, status
from clusterbisect.runners.kubernetes.client import (
    RETRY_STATUSES,
    Api,
    KubernetesSettings,
    api_error,
    backoff_of,
    connection_errors,
)
from clusterbisect.runners.kubernetes.logs import LogCapture, read_pod_log
from clusterbisect.runners.kubernetes.probe_secret import ProbeSecrets, secret_name

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
    seen: dict[str, float] = field(default_factory=dict)  # stuck reason -> first seen
    last_pod: float = 0.0  # when a pod of it (even a terminating one) was last seen
    disruptions: dict[str, str] = field(default_factory=dict)  # pod -> why it was disrupted
    adopted: bool = False
    suspended: bool = False  # the Job waits for admission (a queue such as Kueue)
    secret: str | None = None  # the probe's Secret, deleted with its Job


class ProbeJobs:
    """The probe Jobs of one runner that are in flight, in one namespace."""

    def __init__(
        self,
        api: Api,
        options: KubernetesSettings,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        pattern: re.Pattern[str] | None = None,
    ) -> None:
        self.api = api
        self.conn = api.conn
        self.options = options
        self.clock = clock
        self.sleep = sleep
        self.pattern = pattern  # the failure signature's regex, matched on whole logs
        self.live: dict[str, Tracked] = {}
        self.secrets = ProbeSecrets(api)
        self._last_pod_check = float("-inf")
        self._events_forbidden = False

    # --- creating ---------------------------------------------------------------------

    def start(
        self, probe: Probe, render_job: Callable[[], list[dict[str, Any]]], main: str
    ) -> Tracked:
        """Create the probe's Job (``render_job()`` renders what it needs, its Secret,
        then the Job last, with a fresh name each time). A create whose answer was lost
        (a dropped connection, a timeout, then a 409 on the retry) adopts the Job it
        made; only a real name clash gets a new name. The probe's Secret is deleted
        whenever its Job is not made."""
        for _ in range(3):
            *needs, job = render_job()
            secret = secret_name(needs)
            try:
                created, adopted = self._create(probe, needs, job)
            except BaseException:
                self.secrets.delete(secret)
                raise
            if created is None:  # a real name clash: try a fresh name
                self.secrets.delete(secret)
                continue
            self.secrets.adopt(secret, created)
            return self._track(probe, job, main, adopted, secret)
        raise BackendError(
            f"could not create a probe job for {probe.probe_id}: names kept clashing"
        )

    def _create(
        self, probe: Probe, needs: list[dict[str, Any]], job: dict[str, Any]
    ) -> tuple[Any, bool]:
        """Create the probe's Secret (if any) and Job: the Job as made and whether it
        was adopted, or (None, False) when its name belongs to another Job."""
        from kubernetes.client.exceptions import ApiException

        conn = self.conn
        name = job["metadata"]["name"]
        try:
            self.secrets.create(needs)
            created = self.api.create(
                conn.batch.create_namespaced_job, job, "jobs.batch", passthrough=(409,)
            )
        except ApiException:  # 409: a Job (or Secret) of that name exists: ours, or a clash
            own = self._find_own(probe, name)
            return own, own is not None
        except BackendError:  # the create may have been made all the same
            own = self._find_own(probe, name)
            if own is None:
                raise
            return own, True
        return created, False

    def _find_own(self, probe: Probe, name: str) -> Any:
        """The Job ``name`` if it exists with this probe's labels (found by label)."""
        conn = self.conn
        selector = (
            f"{render.session_selector(probe.session_id)},"
            f"{render.LABEL_PROBE}={render.label_value(probe.probe_id)}"
        )
        found = self.api.call(
            conn.batch.list_namespaced_job,
            conn.namespace,
            label_selector=selector,
            verb="list",
            resource="jobs.batch",
        ).items
        return next(
            (
                j
                for j in found or []
                if j.metadata.name == name and not j.metadata.deletion_timestamp
            ),
            None,
        )

    def _track(
        self, probe: Probe, job: dict[str, Any], main: str, adopted: bool, secret: str | None
    ) -> Tracked:
        name = job["metadata"]["name"]
        now = self.clock()
        deadline = now + job["spec"]["activeDeadlineSeconds"] + self.options.deadline_slack_s
        tracked = Tracked(
            probe, name, now, deadline, main, last_pod=now, adopted=adopted, secret=secret
        )
        self.live[name] = tracked
        event = "k8s.job_adopted" if adopted else "k8s.job_created"
        log.info(event, job=name, probe=probe.probe_id, namespace=self.conn.namespace)
        return tracked

    # --- watching ---------------------------------------------------------------------

    def watch(self, tracked: list[Tracked]) -> None:
        """Watch the session's Jobs until each probe has a result."""
        from kubernetes.client.exceptions import ApiException

        pending = {t.name: t for t in tracked if t.result is None}
        selector = render.session_selector(tracked[0].probe.session_id)
        version: str | None = None
        lost = backoff_of(self.options)
        gone = 0  # 410s in a row: the second and later wait before listing again
        while pending:
            if version is None:  # (re-)list: the initial state, and after 410 Gone
                version = self._relist(pending, selector)
            self.check_pods(pending)
            self.check_deadlines(pending)
            if not pending:
                break
            try:
                version = self._follow(pending, selector, version)
                lost.reset()
                gone = 0
            except ApiException as err:
                if err.status == 410:  # our resourceVersion is too old: list again
                    log.info("k8s.watch_gone", resource_version=version, in_a_row=gone + 1)
                    if gone:
                        self.sleep(self._gone_delay(gone))
                    gone += 1
                    version = None
                    continue
                delay = lost.next() if err.status in RETRY_STATUSES else None
                if delay is None:
                    raise api_error(err, "watch", "jobs.batch", self.conn.namespace) from err
                self.sleep(delay)
            except connection_errors() as err:  # also a watch that timed out client-side
                delay = lost.next()
                if delay is None:
                    raise BackendError(f"lost the watch on probe jobs: {err}") from err
                log.info("k8s.watch_lost", error=str(err), delay_s=delay)
                self.sleep(delay)

    def _gone_delay(self, in_a_row: int) -> float:
        base = self.options.retry_base_s or 0.0
        return float(min(base * 2 ** (in_a_row - 1), self.options.retry_cap_s))

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

    # --- settling ---------------------------------------------------------------------

    def _on_job(self, job: Any, pending: dict[str, Tracked]) -> None:
        item = pending.get(job.metadata.name)
        if item is None:
            return
        verdict = status.job_verdict(job)
        if verdict is None:
            item.suspended = bool(getattr(getattr(job, "spec", None), "suspend", False))
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
            exit_code, term_reason = status.terminated_state(pod, item.main)
        timed_out = reason == "DeadlineExceeded"
        if outcome == "succeeded" and exit_code is None:
            exit_code = 0
        if outcome == "failed" and exit_code == 0 and not timed_out:
            exit_code = None  # a failed Job whose main container exited 0: a sidecar or init failed
        result = RunResult(
            exit_code=exit_code,
            timed_out=timed_out,
            reason="DeadlineExceeded"
            if timed_out
            else (term_reason or (reason if outcome == "failed" else None)),
            details={"job": item.name, "pod": item.pod_name, "job_reason": reason},
        )
        self._settle(pending, item, result, read_log=pod is not None)

    def _finish_from_pod(self, pending: dict[str, Tracked], item: Tracked, pod: Any) -> None:
        exit_code, reason = status.terminated_state(pod, item.main)
        result = RunResult(
            exit_code=exit_code,
            reason=reason,
            details={"job": item.name, "pod": item.pod_name, "job_reason": "MainContainerExited"},
        )
        self._settle(pending, item, result, read_log=True)

    def _settle(
        self, pending: dict[str, Tracked], item: Tracked, result: RunResult, read_log: bool = False
    ) -> None:
        """The probe's result, with its log; its Job is deleted."""
        capture = self._read_log(item) if read_log and item.pod_name else LogCapture()
        result.output = capture.output()
        result.duration_s = self.clock() - item.created
        result.log_path = str(item.probe.log_path)
        result.details.setdefault("job", item.name)
        result.details.setdefault("namespace", self.conn.namespace)
        if capture.total > capture.tail_bytes:
            result.details["log_bytes"] = capture.total
        if item.disruptions:  # evicted or preempted, then run again by the Job
            result.details["disruptions"] = dict(item.disruptions)
        if item.adopted:
            result.details["adopted"] = True
        if capture.total or not item.probe.log_path.exists():
            capture.write(item.probe.log_path)
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
            disruptions=len(item.disruptions),
        )

    def _latest_pod(self, name: str) -> Any:
        pods = self._pods(f"{render.LABEL_JOB}={name}")
        if not pods:
            return None
        # Disrupted pods are ignored by the Job (podFailurePolicy), so prefer the others.
        kept = [p for p in pods if not status.disrupted(p)] or pods
        return sorted(kept, key=status.pod_sort_key)[-1]

    def _pods(self, selector: str) -> list[Any]:
        conn = self.conn
        return list(
            self.api.call(
                conn.core.list_namespaced_pod,
                conn.namespace,
                label_selector=selector,
                verb="list",
                resource="pods",
            ).items
        )

    def _read_log(self, item: Tracked) -> LogCapture:
        """The main container's whole log, streamed: its end, start and matching lines."""
        assert item.pod_name is not None
        return read_pod_log(self.api, item.pod_name, item.main, self.options, self.pattern)

    # --- pods: stuck, disrupted, or done while sidecars run ----------------------------

    def check_pods(self, pending: dict[str, Tracked]) -> None:
        """Look at the probes' pods every ``poll_s``: a stuck probe (its pod cannot
        start, or cannot be made) becomes an infrastructure error after its grace."""
        now = self.clock()
        if not pending or now - self._last_pod_check < self.options.poll_s:
            return
        self._last_pod_check = now
        session = next(iter(pending.values())).probe.session_id
        by_job: dict[str, list[Any]] = {}
        for pod in self._pods(render.session_selector(session)):
            by_job.setdefault((pod.metadata.labels or {}).get(render.LABEL_JOB, ""), []).append(pod)
        for item in list(pending.values()):
            pods = by_job.get(item.name, [])
            if pods:
                item.last_pod = now
            for pod in pods:
                why = status.disruption(pod)
                if why and pod.metadata.name not in item.disruptions:
                    item.disruptions[pod.metadata.name] = why
                    log.warning("k8s.pod_disrupted", pod=pod.metadata.name, reason=why)
            live = [p for p in pods if not status.disrupted(p)]
            if live:
                self._check_pod(pending, item, sorted(live, key=status.pod_sort_key)[-1], now)
            elif not pods:
                # No pod at all (a disrupted one still terminating counts as one: its
                # replacement comes once it is gone).
                self._check_no_pod(pending, item, now)

    def _check_pod(self, pending: dict[str, Tracked], item: Tracked, pod: Any, now: float) -> None:
        item.pod_name = pod.metadata.name
        if status.main_done_sidecars_running(pod, item.main):
            # A plain sidecar (a log shipper) would keep the pod, and the Job,
            # running forever: the main container's exit is the probe's result.
            self._finish_from_pod(pending, item, pod)
            return
        stuck = status.pending_problem(pod)
        if stuck is None and status.creating(pod):
            stuck = status.mount_problem(self._events(pod.metadata.name))
        self._judge(pending, item, stuck, now, pod.metadata.name)

    def _check_no_pod(self, pending: dict[str, Tracked], item: Tracked, now: float) -> None:
        if item.suspended:
            return  # queued for admission (Kueue): our deadline still applies
        waited = now - max(item.created, item.last_pod)
        if waited < min(self.options.poll_s * 2, self.options.pending_grace_s):
            return
        stuck = status.create_problem(self._events(item.name))
        if stuck is None and waited >= self.options.pending_grace_s:
            stuck = status.Stuck(
                "NoPod",
                f"no pod was created for {item.name} within "
                f"{self.options.pending_grace_s:g} s (quota, admission, a webhook?)",
                status.NOW,
            )
        self._judge(pending, item, stuck, now, None)

    def _judge(
        self,
        pending: dict[str, Tracked],
        item: Tracked,
        stuck: status.Stuck | None,
        now: float,
        pod: str | None,
    ) -> None:
        """Settle a stuck probe once its grace has passed since the problem was first seen."""
        if stuck is None:
            item.seen.clear()
            return
        first = item.seen.setdefault(stuck.reason, now)
        if now - first < self._grace(stuck.grace):
            return
        details: dict[str, object] = {"stuck": stuck.reason}
        if pod:
            details["pod"] = pod
        self._settle(
            pending,
            item,
            RunResult(
                exit_code=None,
                reason=stuck.reason,
                infra_error=stuck.message,
                details=details,
            ),
        )

    def _grace(self, kind: str) -> float:
        return {
            status.NOW: 0.0,
            status.CONFIG: self.options.image_pull_grace_s,
            status.PENDING: self.options.pending_grace_s,
            status.MOUNT: self.options.mount_grace_s,
        }[kind]

    def _events(self, name: str) -> list[Any]:
        """The events about the object ``name`` (a pod or a Job), newest last; none when
        the role may not list events (the reason is then not known, only the wait)."""
        from kubernetes.client.exceptions import ApiException

        if self._events_forbidden:
            return []
        conn = self.conn
        try:
            found = self.api.call(
                conn.core.list_namespaced_event,
                conn.namespace,
                field_selector=f"involvedObject.name={name}",
                verb="list",
                resource="events",
                passthrough=(403,),
            )
        except ApiException:
            self._events_forbidden = True
            log.warning("k8s.events_forbidden", namespace=conn.namespace)
            return []
        return list(found.items or [])

    def check_deadlines(self, pending: dict[str, Tracked]) -> None:
        """Our watchdog, in case the Job controller never reports DeadlineExceeded."""
        now = self.clock()
        for item in list(pending.values()):
            if now >= item.deadline:
                self._settle(
                    pending,
                    item,
                    RunResult(exit_code=None, timed_out=True, reason="DeadlineExceeded"),
                    read_log=True,
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
