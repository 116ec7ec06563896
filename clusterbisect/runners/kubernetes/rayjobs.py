"""RayJob probes: a KubeRay RayJob is probed as a RayJob, as KubeRay runs it.

A RayJob's head pod runs no workload of its own: KubeRay starts a Ray cluster from
the head and worker templates, then a submitter (``ray job submit ... -- ENTRYPOINT``)
runs ``spec.entrypoint`` on it with ``spec.runtimeEnvYAML``. Run as a plain Job, the
head template would start Ray (or nothing) and never run the entrypoint. So each probe
is a RayJob of its own: the good spec plus the probe's changes, a fresh Ray cluster
per probe, run once (``backoffLimit: 0``, the submitter's too), shut down when it
finishes, with the probe's deadline and our labels (on the RayJob and its pod
templates, so ``cleanup`` finds everything).

This needs the RayJob CRD (KubeRay) on the cluster: :func:`check_crd` asks the API
server's discovery and, where the CRD is missing, says so and names ``--backend ray``
(a Ray job on a running Ray cluster). :class:`RayJobProbes` creates the RayJobs
(``fieldValidation=Strict``), polls their status until KubeRay reports a verdict, reads
the submitter pod's log (``ray job submit`` follows the driver's log), and deletes each
RayJob (its Ray cluster and submitter go with it) on completion, timeout, error and
interruption.

A probe's exit code is the submitter's: 0 when the Ray job succeeded, 1 when it
failed. The driver's own exit code is not reported by KubeRay, so ``--fail-exit-code``
cannot tell one non-zero exit from another here; match the log with ``--fail-on``.
"""

from __future__ import annotations

import copy
import math
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clusterbisect.diff import Change
from clusterbisect.errors import BackendError, InputError
from clusterbisect.log import get_logger
from clusterbisect.outcome import RunResult
from clusterbisect.runners.base import NotCarried, Probe
from clusterbisect.runners.kubernetes import render
from clusterbisect.runners.kubernetes.logs import LogCapture, read_pod_log
from clusterbisect.specs import kinds
from clusterbisect.specs.model import KUBERNETES, Spec

log = get_logger(__name__)

GROUP = "ray.io"
PLURAL = "rayjobs"
RESOURCE = "rayjobs.ray.io"
SUBMITTER = "ray-job-submitter"  # KubeRay's submitter container
SUBMITTER_LABEL = "ray.io/originated-from-cr-name"  # on the submitter's pods

# RayJob fields a probe sets itself (the value it sets, or None: removed), and why.
OVERRIDDEN: dict[str, tuple[Any, str]] = {
    "shutdownAfterJobFinishes": (True, "a probe's Ray cluster is shut down when it finishes"),
    "ttlSecondsAfterFinished": (0, "a probe's Ray cluster is deleted as soon as it finishes"),
    "activeDeadlineSeconds": (None, "the probe's own deadline replaces it (--timeout)"),
    "backoffLimit": (0, "a probe runs once, without retries"),
    "submitterConfig": (
        {"backoffLimit": 0},
        "a probe's submitter runs once, without retries",
    ),
    "suspend": (None, "probes are never suspended"),
    "deletionStrategy": (None, "clusterbisect deletes each probe RayJob when it ends"),
    "managedBy": (None, "probe RayJobs are run by KubeRay itself"),
    "jobId": (None, "each probe's Ray job gets its own id"),
}


def applies(spec: Spec | None) -> bool:
    """Whether ``spec`` is probed as RayJobs (a KubeRay RayJob)."""
    return (
        spec is not None
        and spec.format == KUBERNETES
        and kinds.identify(spec.document, spec.kind) == "RayJob"
    )


def group_version(spec: Spec) -> tuple[str, str]:
    version = str(spec.document.get("apiVersion") or f"{GROUP}/v1")
    group, _, ver = version.rpartition("/")
    return group or GROUP, ver


# --- rendering ----------------------------------------------------------------------------


def render_rayjob(
    probe_id: str,
    session_id: str,
    spec: Spec,
    changes: list[Change],
    options: render.RenderOptions,
    *,
    name: str | None = None,
    timeout_s: float | None = None,
    workload: list[str] | None = None,
    purpose: str | None = None,
) -> dict[str, Any]:
    """The probe RayJob for ``spec`` (already carrying the probe's changes).

    The entrypoint is the spec's, unless a workload is given (``--command`` or the argv
    after ``--``): it becomes the entrypoint, quoted with ``shlex.join``.
    """
    check_options(spec, options)
    doc = copy.deepcopy(spec.document)
    body = doc.setdefault("spec", {})
    command = options.command if options.command is not None else workload
    if command:
        body["entrypoint"] = shlex.join(command)
    if body.get("submissionMode") == "InteractiveMode":
        body["submissionMode"] = "K8sJobMode"  # nobody would submit the job
    if not body.get("entrypoint"):
        raise InputError(
            "the RayJob has no entrypoint; give it in the spec or after `--`",
            source=spec.source,
            field="spec.entrypoint",
        )
    timeout = timeout_s if timeout_s and timeout_s > 0 else options.default_timeout_s
    for field, (value, _) in OVERRIDDEN.items():
        body.pop(field, None)
        if value is not None:
            body[field] = copy.deepcopy(value)
    body["activeDeadlineSeconds"] = max(1, math.ceil(timeout))
    name = name or render.job_name(session_id, probe_id)
    ours = {
        render.LABEL_MANAGED_BY: render.MANAGED_BY,
        render.LABEL_SESSION: render.label_value(session_id),
        render.LABEL_PROBE: render.label_value(probe_id),
    }
    for ref in kinds.template_refs(doc, "RayJob"):
        template = kinds.resolve(doc, ref.path)
        if isinstance(template, dict):
            meta = template.setdefault("metadata", {})
            meta["labels"] = {**(meta.get("labels") or {}), **ours}
    source_meta = doc.get("metadata") or {}
    labels = {
        k: v
        for k, v in (source_meta.get("labels") or {}).items()
        if k not in render.CONTROLLER_LABELS
    }
    metadata: dict[str, Any] = {
        "name": name,
        "labels": {**labels, **ours},
        "annotations": {
            **(source_meta.get("annotations") or {}),
            **render.changes_annotation(changes),
            render.ANN_SOURCE: spec.source[:1024],
            render.ANN_TEMPLATE: "RayJob",
        },
    }
    if purpose:
        metadata["annotations"][render.ANN_PURPOSE] = purpose
    if options.namespace:
        metadata["namespace"] = options.namespace
    doc["metadata"] = metadata
    return doc


def check_options(spec: Spec, options: render.RenderOptions) -> None:
    """Options that have no meaning for a RayJob probe are refused, not ignored."""
    for given, flag, why in (
        (options.template, "--template", "a RayJob is probed whole, all its templates"),
        (options.args, "--args", "give the whole entrypoint with --command or after `--`"),
        (options.probe_name, "--probe", "give the entrypoint with --command or after `--`"),
    ):
        if given is not None:
            raise InputError(
                f"not supported for RayJob probes: {why}", source=spec.source, field=flag
            )


# --- what a RayJob probe cannot test --------------------------------------------------------


def untestable(
    changes: list[Change], command_given: bool, paths: dict[str, tuple[Any, ...]]
) -> dict[str, str]:
    """Changes a probe RayJob does not carry: the fields it sets itself, the RayJob's
    name and namespace, an entrypoint replaced by the workload."""
    reasons: dict[str, str] = {}
    for change in changes:
        path = tuple(change.path) or paths.get(change.key, ())
        reason = _why(path, command_given)
        if reason:
            reasons[change.key] = reason
    return reasons


def _why(path: tuple[Any, ...], command_given: bool) -> str | None:
    if path[:1] == ("spec",) and len(path) > 1:
        if path[1] in OVERRIDDEN:
            return OVERRIDDEN[path[1]][1]
        if path[1] == "entrypoint" and command_given:
            return "the workload (--command or after `--`) replaces the entrypoint"
    return None


def not_carried(spec: Spec, command_given: bool) -> list[NotCarried]:
    """The good RayJob's fields a probe replaces, with the reason."""
    body = spec.document.get("spec") or {}
    out = []
    for field, value in body.items():
        reason = _why(("spec", field), command_given)
        if reason and value != OVERRIDDEN.get(field, (object(),))[0]:
            out.append(NotCarried(f"spec.{field}", value, reason))
    if body.get("submissionMode") == "InteractiveMode":
        out.append(
            NotCarried(
                "spec.submissionMode",
                "InteractiveMode",
                "probes submit the entrypoint themselves (K8sJobMode)",
            )
        )
    if body.get("clusterSelector"):
        out.append(
            NotCarried(
                "spec.clusterSelector",
                body["clusterSelector"],
                "probes run on the selected existing Ray cluster, not a fresh one each",
            )
        )
    return out


# --- the verdict ----------------------------------------------------------------------------

FAILED_INFRA = {
    "SubmissionFailed": "the Ray job could not be submitted",
    "PreRunningDeadlineExceeded": "the Ray cluster did not start the job in time",
    "ValidationFailed": "KubeRay refused the RayJob",
    "JobDeploymentStatusTransitionGracePeriodExceeded": "KubeRay lost track of the job",
    "JobStatusCheckTimeoutExceeded": "KubeRay could not read the job's status",
}


def verdict(obj: dict[str, Any]) -> RunResult | None:
    """The probe's result from a RayJob's status, None while it runs (KubeRay 1.0+:
    ``jobDeploymentStatus``, ``jobStatus``, ``reason``, ``message``)."""
    status = obj.get("status") or {}
    deploy = status.get("jobDeploymentStatus") or ""
    job = status.get("jobStatus") or ""
    reason = status.get("reason") or ""
    message = status.get("message") or ""
    if deploy == "ValidationFailed" or reason == "ValidationFailed":
        return RunResult(None, infra_error=f"KubeRay refused the RayJob: {message}".strip())
    if deploy not in ("Complete", "Failed"):
        return None
    if reason == "DeadlineExceeded":
        return RunResult(None, timed_out=True, reason="DeadlineExceeded")
    if job == "SUCCEEDED":
        return RunResult(0, details={"job_status": job})
    if job == "FAILED" or reason == "AppFailed":
        return RunResult(1, reason="AppFailed", details={"job_status": job, "message": message})
    why = FAILED_INFRA.get(reason, f"the RayJob ended as {deploy} ({reason or job or '?'})")
    return RunResult(None, infra_error=f"{why}: {message}".strip(": "))


# --- the CRD --------------------------------------------------------------------------------


def check_crd(api: Any, spec: Spec) -> None:
    """Raise ``InputError`` when the cluster does not serve the spec's RayJob version."""
    from kubernetes.client.exceptions import ApiException

    group, version = group_version(spec)
    custom = api.conn.api("CustomObjectsApi")
    try:
        found = api.call(
            custom.get_api_resources,
            group,
            version,
            verb="get",
            resource=f"discovery {group}/{version}",
            passthrough=(404,),
        )
    except ApiException:
        found = None
    plurals = {r.name for r in getattr(found, "resources", None) or []}
    if PLURAL not in plurals:
        raise InputError(
            f"this cluster has no RayJob CRD ({PLURAL}.{group}/{version} is not served), "
            "so RayJob probes cannot run here: install KubeRay, or use --backend ray "
            "to run the RayJob's entrypoint as Ray jobs on a Ray cluster",
            source=spec.source,
            field="--backend",
        )


# --- probes in flight -----------------------------------------------------------------------


@dataclass
class Tracked:
    """One probe RayJob in flight."""

    probe: Probe
    name: str
    created: float
    deadline: float
    result: RunResult | None = None


class RayJobProbes:
    """The probe RayJobs of one runner that are in flight, in one namespace."""

    def __init__(
        self,
        api: Any,
        spec: Spec,
        options: Any,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        pattern: re.Pattern[str] | None = None,
    ) -> None:
        self.api = api
        self.pattern = pattern  # the failure signature, matched over the whole log
        self.conn = api.conn
        self.group, self.version = group_version(spec)
        self.custom = self.conn.api("CustomObjectsApi")
        self.options = options
        self.clock = clock
        self.sleep = sleep
        self.live: dict[str, Tracked] = {}

    def create(self, body: dict[str, Any], *, dry_run: str | None = None) -> Any:
        """Create ``body`` strictly (an unknown field is refused, not dropped)."""
        extra = {"dry_run": dry_run} if dry_run else {}
        return self.api.call(
            self.custom.create_namespaced_custom_object,
            self.group,
            self.version,
            self.conn.namespace,
            PLURAL,
            body,
            field_validation="Strict",
            verb="create",
            resource=RESOURCE,
            passthrough=(409,),
            **extra,
        )

    def start(self, probe: Probe, render_rayjob: Callable[[], dict[str, Any]]) -> Tracked:
        """Create the probe's RayJob; a name clash (409) gets a fresh name."""
        from kubernetes.client.exceptions import ApiException

        for _ in range(3):
            body = render_rayjob()
            name = body["metadata"]["name"]
            try:
                self.create(body)
            except ApiException:
                continue
            now = self.clock()
            deadline = now + body["spec"]["activeDeadlineSeconds"] + self.options.deadline_slack_s
            tracked = Tracked(probe, name, now, deadline)
            self.live[name] = tracked
            log.info("k8s.rayjob_created", rayjob=name, probe=probe.probe_id)
            return tracked
        raise BackendError(f"could not create a probe RayJob for {probe.probe_id}: names clashed")

    def watch(self, tracked: list[Tracked]) -> None:
        """Poll the RayJobs until each has a verdict (or passes our deadline)."""
        from kubernetes.client.exceptions import ApiException

        pending = {t.name: t for t in tracked if t.result is None}
        while pending:
            for item in list(pending.values()):
                try:
                    obj = self.api.call(
                        self.custom.get_namespaced_custom_object,
                        self.group,
                        self.version,
                        self.conn.namespace,
                        PLURAL,
                        item.name,
                        verb="get",
                        resource=RESOURCE,
                        passthrough=(404,),
                    )
                except ApiException:
                    gone = RunResult(None, infra_error="the RayJob was deleted")
                    self._settle(pending, item, gone, LogCapture())
                    continue
                result = verdict(obj)
                if result is None and self.clock() >= item.deadline:
                    result = RunResult(None, timed_out=True, reason="DeadlineExceeded")
                if result is not None:
                    self._settle(pending, item, result, self._submitter_log(item.name))
            if pending:
                self.sleep(self.options.poll_s)

    def _submitter_log(self, name: str) -> LogCapture:
        """The submitter pod's log, streamed whole (``ray job submit`` prints the
        driver's log): its end, its start and the lines matching the signature."""
        pods = self.api.call(
            self.conn.core.list_namespaced_pod,
            self.conn.namespace,
            label_selector=f"{SUBMITTER_LABEL}={name}",
            verb="list",
            resource="pods",
        ).items
        if not pods:
            return LogCapture()
        pod = sorted(pods, key=lambda p: str(p.metadata.creation_timestamp or ""))[-1]
        return read_pod_log(self.api, pod.metadata.name, SUBMITTER, self.options, self.pattern)

    def _settle(
        self, pending: dict[str, Tracked], item: Tracked, result: RunResult, capture: LogCapture
    ) -> None:
        result.output = capture.output()
        result.duration_s = self.clock() - item.created
        result.log_path = str(item.probe.log_path)
        result.details.setdefault("rayjob", item.name)
        result.details.setdefault("namespace", self.conn.namespace)
        if capture.total > capture.tail_bytes:
            result.details["log_bytes"] = capture.total
        if capture.total or not item.probe.log_path.exists():
            capture.write(item.probe.log_path)
        item.result = result
        pending.pop(item.name, None)
        self.delete(item.name)
        self.live.pop(item.name, None)

    def delete(self, name: str) -> bool:
        """Delete a probe RayJob (its Ray cluster and submitter go with it)."""
        return delete_rayjob(self.api, name, self.group, self.version)

    def abort(self) -> int:
        """Delete every RayJob still in flight."""
        deleted = 0
        for name in list(self.live):
            try:
                deleted += self.delete(name)
            except BackendError as err:
                log.warning("k8s.cleanup_failed", rayjob=name, error=err.message)
            self.live.pop(name, None)
        return deleted


def delete_rayjob(api: Any, name: str, group: str = GROUP, version: str = "v1") -> bool:
    """Delete a RayJob (Background: its Ray cluster and submitter go with it); False
    when it was gone already."""
    from kubernetes.client.exceptions import ApiException

    custom = api.conn.api("CustomObjectsApi")
    try:
        api.call(
            custom.delete_namespaced_custom_object,
            group,
            version,
            api.conn.namespace,
            PLURAL,
            name,
            propagation_policy="Background",
            verb="delete",
            resource=RESOURCE,
            passthrough=(404,),
        )
    except ApiException:
        return False
    return True


def leftovers(api: Any, selector: str) -> list[dict[str, Any]]:
    """The labelled probe RayJobs in the namespace (``ray.io/v1``), those not already
    being deleted; [] where the cluster has no RayJob CRD."""
    from kubernetes.client.exceptions import ApiException

    custom = api.conn.api("CustomObjectsApi")
    try:
        found = api.call(
            custom.list_namespaced_custom_object,
            GROUP,
            "v1",
            api.conn.namespace,
            PLURAL,
            label_selector=selector,
            verb="list",
            resource=RESOURCE,
            passthrough=(403, 404),
        )
    except ApiException as err:  # no RayJob CRD, or a Role from before RayJob probes
        log.info("k8s.no_rayjobs_to_clean", status=err.status)
        return []
    items = [i for i in found.get("items") or [] if isinstance(i, dict)]
    return [i for i in items if not (i.get("metadata") or {}).get("deletionTimestamp")]
