"""The Kubernetes runner: probe Jobs created, watched, classified and always cleaned up.

Rendering is pure and lives in ``render``; this module owns the API lifecycle:
creating Jobs (and the ``--probe`` ConfigMap), watching them with a resourceVersion
(re-listing on ``410 Gone``), reading the verdict from the Job's conditions and the
pod's terminated state, reading bounded logs, and deleting everything with
``propagationPolicy=Background``: on completion, timeout, error and Ctrl-C/SIGTERM.
Nothing is printed on stdout.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clusterbisect.config import KubernetesOptions
from clusterbisect.diff import Change
from clusterbisect.errors import BackendError, InputError, Interrupted
from clusterbisect.extras import require
from clusterbisect.interrupts import sigterm_as_interrupt
from clusterbisect.log import get_logger
from clusterbisect.outcome import RunResult
from clusterbisect.redact import redact_manifest, secret_env_names
from clusterbisect.runners.base import DRY_RUN_MODES, Probe, RunnerContext
from clusterbisect.runners.kubernetes import render
from clusterbisect.runners.kubernetes.client import (
    RETRY_STATUSES,
    Api,
    Connection,
    api_error,
    connect,
    connection_errors,
    context_namespace,
    settings_of,
)
from clusterbisect.runners.kubernetes.status import (
    PERMANENT_ERRORS,
    disrupted,
    job_verdict,
    main_done_sidecars_running,
    pending_problem,
    pod_sort_key,
    terminated_state,
)
from clusterbisect.settings import flatten

log = get_logger(__name__)


@dataclass
class _Tracked:
    """One probe Job in flight."""

    probe: Probe
    name: str
    created: float
    deadline: float
    main: str
    result: RunResult | None = None
    pod_name: str | None = None
    seen: dict[str, float] = field(default_factory=dict)  # waiting reason -> first seen


class KubernetesRunner:
    """Runs probes as Kubernetes Jobs in one namespace."""

    name = "kubernetes"

    def __init__(
        self,
        context: RunnerContext | None = None,
        options: KubernetesOptions | None = None,
        *,
        connection: Connection | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.context = context or RunnerContext()
        self.options = settings_of(options)
        self.mode = self.context.dry_run or "none"  # none | client | server
        if self.mode not in ("none", *DRY_RUN_MODES):
            raise InputError(
                f"expected one of {', '.join(DRY_RUN_MODES)}, got {self.mode!r}",
                field="--dry-run",
            )
        if self.context.good is not None:
            render.primary_template(self.context.good)  # a spec without a pod template
        self._conn = connection
        self._api: Api | None = None
        self.clock = clock
        self.sleep = sleep
        self._script: str | None = None
        self._configmap: str | None = None  # created in the cluster, to delete on close
        self._live: dict[str, _Tracked] = {}
        self._last_pod_check = float("-inf")

    # --- setup ----------------------------------------------------------------------

    def connection(self) -> Connection:
        """The cluster connection, made on first use (a client dry run never makes one)."""
        if self._conn is None:
            self._conn = connect(
                self.options.kubeconfig, self.options.context, self.options.namespace
            )
        return self._conn

    @property
    def api(self) -> Api:
        if self._api is None:
            self._api = Api(
                self.connection(), self.options.retries, self.options.retry_base_s, self.sleep
            )
        return self._api

    def namespace(self) -> str | None:
        """The probe namespace: -n, else the context's; None when unknown (client dry run)."""
        if self.options.namespace:
            return self.options.namespace
        if self._conn is not None:
            return self._conn.namespace
        if self.mode == "client":
            return context_namespace(self.options.kubeconfig, self.options.context)
        return self.connection().namespace

    def probe_script(self) -> str | None:
        """The text of ``probes/NAME.py`` for ``--probe NAME``."""
        if not self.options.probe:
            return None
        if self._script is None:
            root = (
                Path(self.options.probes_dir) if self.options.probes_dir else _default_probes_dir()
            )
            path = root / f"{self.options.probe}.py"
            if not path.is_file():
                found = sorted(p.stem for p in root.glob("*.py") if not p.stem.startswith("_"))
                names = ", ".join(found) or "none"
                raise InputError(
                    f"no probe {self.options.probe!r} in {root} (probes: {names})",
                    field="--probe",
                )
            self._script = path.read_text(encoding="utf-8")
        return self._script

    def render_options(self, session_id: str) -> render.RenderOptions:
        """How probe Jobs of ``session_id`` are rendered."""
        script = self.probe_script()
        return render.RenderOptions(
            namespace=self.namespace(),
            container=self.context.container,
            command=self.options.command,
            args=self.options.args,
            probe_name=self.options.probe,
            probe_configmap=(
                render.configmap_name(session_id, self.options.probe or "", script)
                if script is not None
                else None
            ),
            ttl=self.options.ttl,
            default_timeout_s=self.options.default_timeout_s,
        )

    # --- the Runner protocol --------------------------------------------------------

    def untestable(self, changes: list[Change]) -> dict[str, str]:
        """Changes outside the probe's pod template (other roles, object-level fields)."""
        spec = self.context.good
        if spec is None:
            log.warning("k8s.untestable_without_spec", changes=len(changes))
            return {}
        paths: dict[str, Any] = {}
        if any(not c.path for c in changes):
            paths = {k: s.path for k, s in flatten(spec).items()}
        options = self._static_render_options()
        return render.untestable(spec, changes, options, paths)

    def _static_render_options(self) -> render.RenderOptions:
        return render.RenderOptions(
            container=self.context.container,
            command=self.options.command,
            args=self.options.args,
            probe_name=self.options.probe,
        )

    def manifests(self, probe: Probe, name: str | None = None) -> list[dict[str, Any]]:
        """What ``probe`` creates, unredacted: [ConfigMap (with --probe)], Job."""
        options = self.render_options(probe.session_id)
        job = render.render_job(
            probe.probe_id,
            probe.session_id,
            probe.spec,
            probe.changes,
            options,
            name=name,
            timeout_s=probe.timeout_s,
            workload=probe.command,
            purpose=probe.purpose or None,
        )
        script = self.probe_script()
        if script is None or self.options.probe is None:
            return [job]
        configmap = render.render_configmap(
            probe.session_id, self.options.probe, script, options.namespace
        )
        return [configmap, job]

    def render(self, probe: Probe) -> dict[str, Any]:
        """The probe's manifest as data (secret values redacted), ready to write as YAML.

        With ``--probe`` it is a ``v1 List`` of the ConfigMap and the Job. With
        ``dry_run="server"`` the manifests are first sent with ``dryRun=All``; a
        rejection raises ``BackendError`` with the API server's reason.
        """
        manifests = self.manifests(probe)
        if self.mode == "server":
            # --dry-run=server: what is planned must also pass admission, quota and RBAC.
            verdict = self._server_dry_run(manifests)
            if not verdict["accepted"]:
                raise BackendError(
                    f"server dry run rejected probe {probe.probe_id}: {verdict['error']}",
                    details={"probe_id": probe.probe_id},
                )
        shown = _redacted(manifests, probe)
        if len(shown) == 1:
            return shown[0]
        return {"apiVersion": "v1", "kind": "List", "items": shown}

    def run(self, probes: list[Probe]) -> list[RunResult]:
        """Create one Job per probe, watch them all, return results in order."""
        if not probes:
            return []
        if self.mode != "none":
            plan = self.dry_run(probes)
            return [
                RunResult(
                    exit_code=None,
                    infra_error=f"dry run ({plan['mode']}): not launched",
                    details=entry,
                )
                for entry in plan["probes"]
            ]
        require("kubernetes", "the Kubernetes backend")
        with sigterm_as_interrupt():
            try:
                self._ensure_configmap(probes[0].session_id)
                tracked = [self._start(probe) for probe in probes]
                self._watch(tracked)
            except KeyboardInterrupt:
                deleted = self._abort()
                raise Interrupted(
                    f"interrupted; deleted {deleted} probe job(s) with their pods",
                    details={"deleted": deleted},
                ) from None
            except BaseException:
                self._abort()
                raise
        results = []
        for item in tracked:
            assert item.result is not None
            results.append(item.result)
        return results

    def close(self) -> None:
        """Delete anything still in flight and the ``--probe`` ConfigMap."""
        if self._conn is None:
            return
        self._abort()
        self._delete_configmap()

    # --- dry runs -------------------------------------------------------------------

    def dry_run(self, probes: list[Probe]) -> dict[str, Any]:
        """Write each probe's manifest under the state dir; with ``server`` also send it
        with ``dryRun=All`` so admission, quota and RBAC are checked."""
        mode = "server" if self.mode == "server" else "client"
        out_dir = self._manifest_dir()
        entries: list[dict[str, Any]] = []
        for probe in probes:
            manifests = self.manifests(probe)
            path = out_dir / f"{probe.probe_id}.yaml" if out_dir else None
            if path is not None:
                shown = _redacted(manifests, probe)
                path.write_text(yaml.safe_dump_all(shown, sort_keys=False), encoding="utf-8")
            entry: dict[str, Any] = {
                "probe_id": probe.probe_id,
                "job": manifests[-1]["metadata"]["name"],
                "namespace": self.namespace(),
                "changes": [c.key for c in probe.changes],
                "manifest": str(path) if path else None,
            }
            if mode == "server":
                entry.update(self._server_dry_run(manifests))
            entries.append(entry)
        return {
            "mode": mode,
            "namespace": self.namespace(),
            "ok": all(e.get("accepted", True) for e in entries),
            "probes": entries,
        }

    def _manifest_dir(self) -> Path | None:
        """The session's ``manifests/`` folder (made on first use), or None without one."""
        out = self.context.manifests_dir
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        return out

    def _server_dry_run(self, manifests: list[dict[str, Any]]) -> dict[str, Any]:
        """Send ``manifests`` with dryRun=All; a rejection is reported, not raised."""
        conn = self.connection()
        for manifest in manifests:
            if manifest["kind"] == "ConfigMap":
                fn, resource = conn.core.create_namespaced_config_map, "configmaps"
            else:
                fn, resource = conn.batch.create_namespaced_job, "jobs.batch"
            try:
                self.api.call(
                    fn, conn.namespace, manifest, dry_run="All", verb="create", resource=resource
                )
            except BackendError as err:
                return {"accepted": False, "error": err.message}
        return {"accepted": True}

    # --- lifecycle ------------------------------------------------------------------

    def _ensure_configmap(self, session_id: str) -> None:
        script = self.probe_script()
        if script is None or self.options.probe is None or self._configmap:
            return
        from kubernetes.client.exceptions import ApiException

        conn = self.connection()
        body = render.render_configmap(session_id, self.options.probe, script, conn.namespace)
        # A 409 means the same content-addressed ConfigMap exists from an earlier run.
        with contextlib.suppress(ApiException):
            self.api.call(
                conn.core.create_namespaced_config_map,
                conn.namespace,
                body,
                verb="create",
                resource="configmaps",
                passthrough=(409,),
            )
        self._configmap = body["metadata"]["name"]

    def _delete_configmap(self) -> None:
        if not self._configmap:
            return
        from kubernetes.client.exceptions import ApiException

        conn = self.connection()
        with contextlib.suppress(ApiException, BackendError):
            self.api.call(
                conn.core.delete_namespaced_config_map,
                self._configmap,
                conn.namespace,
                verb="delete",
                resource="configmaps",
                passthrough=(404,),
            )
        self._configmap = None

    def _start(self, probe: Probe) -> _Tracked:
        """Create the probe's Job; a name clash (409) gets a fresh name."""
        from kubernetes.client.exceptions import ApiException

        conn = self.connection()
        for _ in range(3):
            job = self.manifests(probe)[-1]
            name = job["metadata"]["name"]
            try:
                self.api.call(
                    conn.batch.create_namespaced_job,
                    conn.namespace,
                    job,
                    verb="create",
                    resource="jobs.batch",
                    passthrough=(409,),
                )
            except ApiException:
                continue
            now = self.clock()
            deadline = now + job["spec"]["activeDeadlineSeconds"] + self.options.deadline_slack_s
            main = self._main_container(probe, job)
            tracked = _Tracked(probe, name, now, deadline, main)
            self._live[name] = tracked
            log.info("k8s.job_created", job=name, probe=probe.probe_id, namespace=conn.namespace)
            return tracked
        raise BackendError(
            f"could not create a probe job for {probe.probe_id}: names kept clashing"
        )

    def _main_container(self, probe: Probe, job: dict[str, Any]) -> str:
        ref = render.primary_template(probe.spec)
        template = render.template_of(probe.spec, ref) or job["spec"]["template"]
        return render.main_container_name(probe.spec, template, self.context.container)

    def _watch(self, tracked: list[_Tracked]) -> None:
        """Watch the session's Jobs until each probe has a result."""
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        conn = self.connection()
        pending = {t.name: t for t in tracked if t.result is None}
        selector = render.session_selector(tracked[0].probe.session_id)
        version: str | None = None
        failures = 0
        while pending:
            if version is None:  # (re-)list: the initial state, and after 410 Gone
                listed = self.api.call(
                    conn.batch.list_namespaced_job,
                    conn.namespace,
                    label_selector=selector,
                    verb="list",
                    resource="jobs.batch",
                )
                version = listed.metadata.resource_version
                names = set()
                for job in listed.items:
                    names.add(job.metadata.name)
                    self._on_job(job, pending)
                for name in [n for n in pending if n not in names]:
                    self._finish_gone(pending, name)
            self._check_pods(pending)
            self._check_deadlines(pending)
            if not pending:
                break
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
                failures = 0
            except ApiException as err:
                if err.status == 410:  # our resourceVersion is too old: list again
                    log.info("k8s.watch_gone", resource_version=version)
                    version = None
                    continue
                if err.status in RETRY_STATUSES and failures < self.options.retries:
                    failures += 1
                    self.sleep(self.options.retry_base_s * 2**failures)
                    continue
                raise api_error(err, "watch", "jobs.batch", conn.namespace) from err
            except connection_errors() as err:  # includes a watch that timed out client-side
                failures += 1
                if failures > self.options.retries:
                    raise BackendError(f"lost the watch on probe jobs: {err}") from err
                self.sleep(self.options.retry_base_s * 2**failures)
            finally:
                watcher.stop()

    def _on_job(self, job: Any, pending: dict[str, _Tracked]) -> None:
        item = pending.get(job.metadata.name)
        if item is None:
            return
        verdict = job_verdict(job)
        if verdict is None:
            return
        outcome, reason = verdict
        self._finish(pending, item, outcome, reason)

    def _finish_gone(self, pending: dict[str, _Tracked], name: str) -> None:
        item = pending.get(name)
        if item is not None:
            self._settle(
                pending,
                item,
                RunResult(exit_code=None, infra_error=f"probe job {name} was deleted"),
            )

    def _finish(
        self, pending: dict[str, _Tracked], item: _Tracked, outcome: str, reason: str | None
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

    def _finish_from_pod(self, pending: dict[str, _Tracked], item: _Tracked, pod: Any) -> None:
        exit_code, reason = terminated_state(pod, item.main)
        result = RunResult(
            exit_code=exit_code,
            output=self._read_logs(item),
            reason=reason,
            details={"job": item.name, "pod": item.pod_name, "job_reason": "MainContainerExited"},
        )
        self._settle(pending, item, result)

    def _settle(self, pending: dict[str, _Tracked], item: _Tracked, result: RunResult) -> None:
        result.duration_s = self.clock() - item.created
        result.log_path = str(item.probe.log_path)
        result.details.setdefault("job", item.name)
        result.details.setdefault("namespace", self.connection().namespace)
        if not item.probe.log_path.exists():
            _write_log(item.probe.log_path, result.output, self.options.max_log_bytes)
        item.result = result
        pending.pop(item.name, None)
        self.api.delete_job(item.name)
        self._live.pop(item.name, None)
        log.info(
            "k8s.probe_done",
            job=item.name,
            exit_code=result.exit_code,
            reason=result.reason,
            infra_error=result.infra_error,
        )

    def _latest_pod(self, name: str) -> Any:
        conn = self.connection()
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

    def _read_logs(self, item: _Tracked) -> str:
        """The main container's log tail, bounded, written to the probe's log file."""
        from kubernetes.client.exceptions import ApiException

        conn = self.connection()
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
        _write_log(item.probe.log_path, text, self.options.max_log_bytes)
        return text[-self.options.max_log_bytes :]

    def _check_pods(self, pending: dict[str, _Tracked]) -> None:
        """Pods stuck Pending (image, config, scheduling) become infra errors after a grace."""
        now = self.clock()
        if not pending or now - self._last_pod_check < self.options.poll_s:
            return
        self._last_pod_check = now
        conn = self.connection()
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

    def _check_deadlines(self, pending: dict[str, _Tracked]) -> None:
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

    def _abort(self) -> int:
        """Delete every Job still in flight (Background: their pods go too)."""
        deleted = 0
        for name in list(self._live):
            try:
                if self.api.delete_job(name):
                    deleted += 1
            except BackendError as err:
                log.warning("k8s.cleanup_failed", job=name, error=err.message)
            self._live.pop(name, None)
        if deleted:
            log.warning("k8s.jobs_deleted", count=deleted)
        self._delete_configmap()
        return deleted


def _redacted(manifests: list[dict[str, Any]], probe: Probe) -> list[dict[str, Any]]:
    """Copies of ``manifests`` for display: secret env values hidden."""
    names = secret_env_names(probe.changes)
    return [redact_manifest(m, names) for m in manifests]


def _write_log(path: Path, text: str, limit: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode("utf-8", errors="replace")
    if len(data) > limit:
        data = b"[... log truncated to its last %d bytes ...]\n" % limit + data[-limit:]
    path.write_bytes(data)


def _default_probes_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "probes"


def make_runner(context: RunnerContext, options: KubernetesOptions) -> KubernetesRunner:
    """The runner (the registry's factory); nothing connects until a probe is run or sent."""
    return KubernetesRunner(context, options)
