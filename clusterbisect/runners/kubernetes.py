"""The Kubernetes backend: probe Jobs created, watched, classified and always cleaned up.

Rendering is pure and lives in ``k8s_render``; this module owns the API lifecycle:
connecting like kubectl does, creating Jobs (and the ``--probe`` ConfigMap), watching
them with a resourceVersion (re-listing on ``410 Gone``), reading the verdict from
the Job's conditions and the pod's terminated state, reading bounded logs, and
deleting everything with ``propagationPolicy=Background``: on completion, timeout,
error and Ctrl-C/SIGTERM. Nothing is printed on stdout.

The ``kubernetes`` package is imported inside functions only, so importing this module
(and ``--dry-run`` without a cluster) stays cheap.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clusterbisect.diff import Change
from clusterbisect.errors import BackendError, InputError, Interrupted
from clusterbisect.extras import require
from clusterbisect.interrupts import sigterm_as_interrupt
from clusterbisect.log import get_logger
from clusterbisect.outcome import RunResult
from clusterbisect.redact import redact_manifest, secret_env_names
from clusterbisect.runners import k8s_render as render
from clusterbisect.runners.base import Probe
from clusterbisect.specs.model import Spec

log = get_logger(__name__)

DRY_RUN_MODES = ("none", "client", "server")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
# Waiting reasons that mean the workload will not start without outside help.
IMAGE_ERRORS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
CONFIG_ERRORS = frozenset({"CreateContainerConfigError", "CreateContainerError"})
PERMANENT_ERRORS = frozenset({"InvalidImageName", "ErrImageNeverPull"})  # no grace needed
SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


@dataclass
class KubernetesOptions:
    """Connection and rendering options of the Kubernetes backend (JSON-serialisable)."""

    state_dir: Path | None = None
    container: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    dry_run: str = "none"  # none | client | server
    command: list[str] | None = None
    args: list[str] | None = None
    probe: str | None = None  # run probes/NAME.py, mounted from a ConfigMap
    probes_dir: str | None = None  # where probes/ lives (default: the repository's)
    ttl: int = 3600  # ttlSecondsAfterFinished: a backstop if cleanup never runs
    default_timeout_s: float = 3600.0  # activeDeadlineSeconds when the probe has no timeout
    pending_grace_s: float = 120.0  # Unschedulable / no pod created for this long: infra error
    image_pull_grace_s: float = 60.0  # image pull or container config errors for this long
    poll_s: float = 5.0  # how often pods are checked; also the watch's server-side timeout
    deadline_slack_s: float = 120.0  # our own watchdog beyond activeDeadlineSeconds
    max_log_bytes: int = 1 << 20
    log_tail_lines: int = 20000
    retries: int = 5
    retry_base_s: float = 0.5

    def __post_init__(self) -> None:
        if self.dry_run is True:
            self.dry_run = "client"
        elif not self.dry_run:
            self.dry_run = "none"
        if self.dry_run not in DRY_RUN_MODES:
            raise InputError(
                f"expected one of {', '.join(DRY_RUN_MODES)}, got {self.dry_run!r}",
                field="--dry-run",
            )
        if self.state_dir is not None:
            self.state_dir = Path(self.state_dir)
        if isinstance(self.command, str):
            import shlex

            self.command = shlex.split(self.command)
        if isinstance(self.args, str):
            import shlex

            self.args = shlex.split(self.args)
        if self.probe is not None and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", self.probe):
            raise InputError(f"not a probe name: {self.probe!r}", field="--probe")


# --- connection --------------------------------------------------------------------


@dataclass
class Connection:
    """An API client bound to one cluster, context and namespace."""

    api_client: Any
    namespace: str
    context: str | None = None
    in_cluster: bool = False
    host: str = ""
    _apis: dict[str, Any] = field(default_factory=dict, repr=False)

    def api(self, name: str) -> Any:
        """``BatchV1Api``, ``CoreV1Api``, ... bound to this connection (made once)."""
        if name not in self._apis:
            from kubernetes import client

            self._apis[name] = getattr(client, name)(self.api_client)
        return self._apis[name]

    @property
    def batch(self) -> Any:
        return self.api("BatchV1Api")

    @property
    def core(self) -> Any:
        return self.api("CoreV1Api")


def kubeconfig_paths(kubeconfig: str | None = None) -> list[Path]:
    """The kubeconfig files kubectl reads: --kubeconfig, else $KUBECONFIG, else ~/.kube/config."""
    if kubeconfig:
        return [Path(kubeconfig).expanduser()]
    env = os.environ.get("KUBECONFIG")
    if env:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    return [Path("~/.kube/config").expanduser()]


def context_namespace(kubeconfig: str | None = None, context: str | None = None) -> str | None:
    """The namespace set on the (current or named) kubeconfig context, without connecting."""
    files = [p for p in kubeconfig_paths(kubeconfig) if p.is_file()]
    if not files:
        return None
    try:
        _, ctx = _find_context(files, context)
    except InputError:
        return None
    return (ctx.get("context") or {}).get("namespace")


def _find_context(files: list[Path], context: str | None) -> tuple[str, dict[str, Any]]:
    require("kubernetes", "reading a kubeconfig")
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    joined = os.pathsep.join(str(p) for p in files)
    try:
        contexts, active = config.list_kube_config_contexts(joined)
    except (ConfigException, yaml.YAMLError, OSError, TypeError, KeyError) as err:
        raise InputError(f"unreadable kubeconfig ({err})", source=joined) from err
    if context:
        for ctx in contexts or []:
            if ctx.get("name") == context:
                return joined, ctx
        names = ", ".join(c.get("name", "?") for c in contexts or []) or "none"
        raise InputError(
            f"no context {context!r} (contexts: {names})", source=joined, field="--context"
        )
    if not active:
        raise InputError(
            "no current-context; pass --context", source=joined, field="current-context"
        )
    return joined, active


def connect(
    kubeconfig: str | None = None, context: str | None = None, namespace: str | None = None
) -> Connection:
    """Connect like kubectl: kubeconfig files (or in-cluster config in a pod).

    The namespace is ``namespace``, else the context's, else the pod's own namespace
    in-cluster, else ``default``.
    """
    require("kubernetes", "the Kubernetes backend")
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    if kubeconfig and not Path(kubeconfig).expanduser().is_file():
        raise InputError("kubeconfig file not found", source=kubeconfig, field="--kubeconfig")
    files = [p for p in kubeconfig_paths(kubeconfig) if p.is_file()]
    configuration = client.Configuration()
    if files:
        joined, ctx = _find_context(files, context)
        try:
            config.load_kube_config(
                config_file=joined,
                context=ctx.get("name"),
                client_configuration=configuration,
                persist_config=False,
            )
        except (ConfigException, OSError, TypeError, KeyError, ValueError) as err:
            raise InputError(
                f"cannot use context {ctx.get('name')!r} ({err})", source=joined
            ) from err
        ns = namespace or (ctx.get("context") or {}).get("namespace") or "default"
        return Connection(
            client.ApiClient(configuration), ns, ctx.get("name"), False, configuration.host
        )
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            config.load_incluster_config(client_configuration=configuration)
        except ConfigException as err:
            raise BackendError(f"in-cluster configuration failed: {err}") from err
        ns = namespace
        if not ns:
            with contextlib.suppress(OSError):
                ns = Path(SA_NAMESPACE_FILE).read_text().strip()
        return Connection(
            client.ApiClient(configuration), ns or "default", None, True, configuration.host
        )
    raise BackendError(
        "no Kubernetes configuration: no kubeconfig found (--kubeconfig, $KUBECONFIG, "
        "~/.kube/config) and not running in a pod; a client --dry-run needs no cluster"
    )


# --- API errors and retries --------------------------------------------------------


def _server_message(err: Any) -> str:
    body = getattr(err, "body", None)
    if body:
        with contextlib.suppress(ValueError, TypeError):
            data = json.loads(body)
            if isinstance(data, dict) and data.get("message"):
                return str(data["message"])
    return str(getattr(err, "reason", "") or err)


def api_error(err: Any, verb: str, resource: str, namespace: str | None) -> BackendError:
    """A user-facing error for a failed API call; a 403 names the missing permission."""
    status = getattr(err, "status", None)
    where = f" in namespace {namespace!r}" if namespace else ""
    message = _server_message(err)
    details = {"status": status, "verb": verb, "resource": resource, "namespace": namespace}
    if status == 403:
        return BackendError(
            f"forbidden: missing permission to {verb} {resource}{where} "
            f"(grant verb {verb!r} on {resource!r}, e.g. with manifests/rbac.yaml); "
            f"the API server said: {message}",
            details=details,
        )
    if status == 401:
        return BackendError(
            f"unauthorized: the API server rejected the credentials ({message})", details=details
        )
    return BackendError(
        f"cannot {verb} {resource}{where}: HTTP {status}: {message}", details=details
    )


def _retry_after(err: Any) -> float | None:
    headers = getattr(err, "headers", None) or {}
    try:
        value = headers.get("Retry-After") or headers.get("retry-after")
        return float(value) if value is not None else None
    except (TypeError, ValueError, AttributeError):
        return None


def _connection_errors() -> tuple[type[BaseException], ...]:
    import urllib3

    return (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)


class Api:
    """API calls with retries on 429, 5xx and connection errors, and readable errors."""

    def __init__(
        self,
        conn: Connection,
        retries: int = 5,
        retry_base_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.conn = conn
        self.retries = retries
        self.retry_base_s = retry_base_s
        self.sleep = sleep

    def call(
        self,
        fn: Callable[..., Any],
        *args: Any,
        verb: str,
        resource: str,
        passthrough: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> Any:
        """Call ``fn``; ApiExceptions with a ``passthrough`` status are re-raised as is."""
        from kubernetes.client.exceptions import ApiException

        attempt = 0
        while True:
            try:
                return fn(*args, **kwargs)
            except ApiException as err:
                if err.status in passthrough:
                    raise
                if err.status in RETRY_STATUSES and attempt < self.retries:
                    delay = _retry_after(err) or self.retry_base_s * 2**attempt
                    log.info(
                        "k8s.retry", verb=verb, resource=resource, status=err.status, delay_s=delay
                    )
                    self.sleep(min(delay, 30.0))
                    attempt += 1
                    continue
                raise api_error(err, verb, resource, self.conn.namespace) from err
            except _connection_errors() as err:
                if attempt < self.retries:
                    delay = self.retry_base_s * 2**attempt
                    log.info(
                        "k8s.retry", verb=verb, resource=resource, error=str(err), delay_s=delay
                    )
                    self.sleep(min(delay, 30.0))
                    attempt += 1
                    continue
                raise BackendError(
                    f"cannot reach the Kubernetes API at {self.conn.host or '?'} to {verb} "
                    f"{resource}: {err}"
                ) from err

    def delete_job(self, name: str) -> bool:
        """Delete a probe Job and its pods; False if it was already gone."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.call(
                self.conn.batch.delete_namespaced_job,
                name,
                self.conn.namespace,
                propagation_policy="Background",
                verb="delete",
                resource="jobs.batch",
                passthrough=(404,),
            )
        except ApiException:
            return False
        return True


# --- watching ----------------------------------------------------------------------


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


def _pod_sort_key(pod: Any) -> tuple[float, str]:
    created = getattr(pod.metadata, "creation_timestamp", None)
    stamp = created.timestamp() if created is not None and hasattr(created, "timestamp") else 0.0
    return stamp, pod.metadata.name or ""


def _disrupted(pod: Any) -> bool:
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


class KubernetesRunner:
    """Runs probes as Kubernetes Jobs in one namespace."""

    name = "kubernetes"

    def __init__(
        self,
        options: KubernetesOptions | None = None,
        *,
        connection: Connection | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.options = options or KubernetesOptions()
        self._conn = connection
        self._api: Api | None = None
        self.clock = clock
        self.sleep = sleep
        self.spec: Spec | None = None
        self._script: str | None = None
        self._configmap: str | None = None  # created in the cluster, to delete on close
        self._live: dict[str, _Tracked] = {}
        self._last_pod_check = float("-inf")

    # --- setup ----------------------------------------------------------------------

    def bind(self, spec: Spec) -> None:
        """Tell the runner the good spec, so ``untestable`` knows its pod templates."""
        render.primary_template(spec)  # fails early on a spec without a pod template
        self.spec = spec

    def _good_spec(self) -> Spec | None:
        if self.spec is None:
            # Built by the generic runner factory: find the good spec in the session.
            from clusterbisect.session import Session

            session = Session.find(self.options.state_dir)
            if session is not None:
                self.spec = session.spec("good")
        return self.spec

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
        if self.options.dry_run == "client":
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
            container=self.options.container,
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
        spec = self._good_spec()
        if spec is None:
            log.warning("k8s.untestable_without_spec", changes=len(changes))
            return {}
        paths: dict[str, Any] = {}
        if any(not c.path for c in changes):
            import clusterbisect.settings as settings

            flatten = getattr(settings, "flatten", None)
            if flatten is not None:
                with contextlib.suppress(NotImplementedError):
                    paths = {k: s.path for k, s in flatten(spec).items()}
        options = self._static_render_options()
        return render.untestable(spec, changes, options, paths)

    def _static_render_options(self) -> render.RenderOptions:
        return render.RenderOptions(
            container=self.options.container,
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
            purpose=str(probe.extra.get("purpose")) if probe.extra.get("purpose") else None,
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
        if self.options.dry_run == "server":
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
        if self.spec is None:
            self.spec = probes[0].spec
        if self.options.dry_run != "none":
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
        mode = "server" if self.options.dry_run == "server" else "client"
        out_dir = self._manifest_dir(probes[0] if probes else None)
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

    def _manifest_dir(self, probe: Probe | None) -> Path | None:
        root = self.options.state_dir
        if root is None and probe is not None:
            root = probe.log_path.parent.parent
        if root is None:
            return None
        out = root / "manifests"
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
        return render.main_container_name(probe.spec, template, self.options.container)

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
            except _connection_errors() as err:  # includes a watch that timed out client-side
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
            exit_code, term_reason = _terminated(pod, item.main)
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
        exit_code, reason = _terminated(pod, item.main)
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
        kept = [p for p in pods if not _disrupted(p)] or pods
        return sorted(kept, key=_pod_sort_key)[-1]

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
            mine = [p for p in by_job.get(item.name, []) if not _disrupted(p)]
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
            pod = sorted(mine, key=_pod_sort_key)[-1]
            item.pod_name = pod.metadata.name
            if _main_done_sidecars_running(pod, item.main):
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


def _main_done_sidecars_running(pod: Any, main: str) -> bool:
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


def _terminated(pod: Any, main: str) -> tuple[int | None, str | None]:
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
            return term.exit_code, f"init container {status.name}: {term.reason or 'Error'}"
    reason = getattr(pod.status, "reason", None)
    return None, reason


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


# --- factory, cleanup, live input --------------------------------------------------


def make_runner(options: KubernetesOptions) -> KubernetesRunner:
    """The runner for ``options``; nothing connects until a probe is run or sent."""
    return KubernetesRunner(options)


def cleanup(
    session_id: str | None = None,
    conn: Connection | None = None,
    *,
    options: KubernetesOptions | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Delete everything clusterbisect left in the namespace (one session, or all).

    Jobs go with propagationPolicy=Background (their pods with them); ConfigMaps and
    orphaned probe pods are deleted too.
    """
    options = options or KubernetesOptions()
    conn = conn or connect(options.kubeconfig, options.context, options.namespace)
    api = Api(conn, options.retries, options.retry_base_s, sleep)
    selector = render.session_selector(session_id)
    jobs = _list_labelled(api, conn.batch.list_namespaced_job, conn, selector, "jobs.batch")
    deleted_jobs = [j.metadata.name for j in jobs if api.delete_job(j.metadata.name)]
    job_names = {j.metadata.name for j in jobs}
    pods = _list_labelled(api, conn.core.list_namespaced_pod, conn, selector, "pods")
    orphans = [
        pod.metadata.name
        for pod in pods
        # a pod owned by one of those Jobs is garbage-collected with it
        if not any(
            o.kind == "Job" and o.name in job_names for o in pod.metadata.owner_references or []
        )
    ]
    deleted_pods = _delete_each(api, conn.core.delete_namespaced_pod, conn, orphans, "pods")
    maps = _list_labelled(api, conn.core.list_namespaced_config_map, conn, selector, "configmaps")
    deleted_maps = _delete_each(
        api,
        conn.core.delete_namespaced_config_map,
        conn,
        [cm.metadata.name for cm in maps],
        "configmaps",
    )
    return {
        "namespace": conn.namespace,
        "session": session_id,
        "selector": selector,
        "deleted": {"jobs": deleted_jobs, "pods": deleted_pods, "configmaps": deleted_maps},
    }


def _list_labelled(
    api: Api, list_fn: Callable[..., Any], conn: Connection, selector: str, resource: str
) -> list[Any]:
    """The objects of one resource in the namespace that carry ``selector``."""
    found = api.call(
        list_fn, conn.namespace, label_selector=selector, verb="list", resource=resource
    )
    return list(found.items)


def _delete_each(
    api: Api, delete_fn: Callable[..., Any], conn: Connection, names: list[str], resource: str
) -> list[str]:
    """Delete each named object; the names actually deleted (one that fails is skipped)."""
    from kubernetes.client.exceptions import ApiException

    deleted = []
    for name in names:
        with contextlib.suppress(ApiException):
            api.call(
                delete_fn,
                name,
                conn.namespace,
                verb="delete",
                resource=resource,
                passthrough=(404,),
            )
            deleted.append(name)
    return deleted


# Live input: KIND/NAME or k8s://NAMESPACE/KIND/NAME.
_TYPED_KINDS: dict[str, tuple[str, str, str]] = {
    # alias -> (API class, read method, resource for messages)
    "job": ("BatchV1Api", "read_namespaced_job", "jobs.batch"),
    "cronjob": ("BatchV1Api", "read_namespaced_cron_job", "cronjobs.batch"),
    "pod": ("CoreV1Api", "read_namespaced_pod", "pods"),
    "deployment": ("AppsV1Api", "read_namespaced_deployment", "deployments.apps"),
    "statefulset": ("AppsV1Api", "read_namespaced_stateful_set", "statefulsets.apps"),
    "daemonset": ("AppsV1Api", "read_namespaced_daemon_set", "daemonsets.apps"),
    "replicaset": ("AppsV1Api", "read_namespaced_replica_set", "replicasets.apps"),
}
_CUSTOM_KINDS: dict[str, tuple[str, str, str]] = {
    # alias -> (group, version, plural)
    "pytorchjob": ("kubeflow.org", "v1", "pytorchjobs"),
    "tfjob": ("kubeflow.org", "v1", "tfjobs"),
    "mpijob": ("kubeflow.org", "v2beta1", "mpijobs"),
    "xgboostjob": ("kubeflow.org", "v1", "xgboostjobs"),
    "paddlejob": ("kubeflow.org", "v1", "paddlejobs"),
    "jaxjob": ("kubeflow.org", "v1", "jaxjobs"),
    "rayjob": ("ray.io", "v1", "rayjobs"),
    "raycluster": ("ray.io", "v1", "rayclusters"),
    "jobset": ("jobset.x-k8s.io", "v1alpha2", "jobsets"),
}
_ALIASES = {
    "cj": "cronjob",
    "po": "pod",
    "deploy": "deployment",
    "sts": "statefulset",
    "ds": "daemonset",
    "rs": "replicaset",
}
_REF = re.compile(
    r"^(?:k8s://(?P<ns>[a-z0-9-]+)/)?(?P<kind>[A-Za-z.]+)/(?P<name>[a-z0-9][a-z0-9.-]*)$"
)


def _kind_alias(kind: str) -> str:
    kind = kind.lower().split(".", 1)[0]  # jobs.batch -> jobs
    kind = _ALIASES.get(kind, kind)
    if kind not in _TYPED_KINDS and kind not in _CUSTOM_KINDS and kind.endswith("s"):
        kind = kind[:-1]
    return kind


def is_live_ref(text: str) -> bool:
    """True for ``k8s://NS/KIND/NAME``, and for ``KIND/NAME`` that is not a file on disk."""
    match = _REF.match(text)
    if not match:
        return False
    if text.startswith("k8s://"):
        return True
    if Path(text).exists():
        return False
    kind = _kind_alias(match["kind"])
    return kind in _TYPED_KINDS or kind in _CUSTOM_KINDS


def fetch_live_document(ref: str, conn: Connection) -> dict[str, Any]:
    """The live object ``ref`` names, as a plain manifest (camelCase keys)."""
    match = _REF.match(ref)
    if not match:
        raise InputError("expected KIND/NAME or k8s://NAMESPACE/KIND/NAME", source=ref)
    namespace = match["ns"] or conn.namespace
    kind, name = _kind_alias(match["kind"]), match["name"]
    api = Api(conn)
    if kind in _TYPED_KINDS:
        cls, method, resource = _TYPED_KINDS[kind]
        obj = _read(api, getattr(conn.api(cls), method), name, namespace, resource, ref)
        document = conn.api_client.sanitize_for_serialization(obj)
    elif kind in _CUSTOM_KINDS:
        group, version, plural = _CUSTOM_KINDS[kind]
        custom = conn.api("CustomObjectsApi").get_namespaced_custom_object
        document = _read(
            api, custom, name, namespace, f"{plural}.{group}", ref, group, version, plural
        )
    else:
        known = ", ".join(sorted({*_TYPED_KINDS, *_CUSTOM_KINDS}))
        raise InputError(f"unsupported kind {match['kind']!r} (supported: {known})", source=ref)
    if not isinstance(document, dict):
        raise BackendError(f"{ref}: the API server returned no object")
    return document


def _read(
    api: Api,
    fn: Callable[..., Any],
    name: str,
    namespace: str,
    resource: str,
    ref: str,
    *prefix: str,
) -> Any:
    from kubernetes.client.exceptions import ApiException

    try:
        if prefix:
            return api.call(
                fn, *prefix, namespace, name, verb="get", resource=resource, passthrough=(404,)
            )
        return api.call(fn, name, namespace, verb="get", resource=resource, passthrough=(404,))
    except ApiException as err:
        raise InputError(f"not found in namespace {namespace!r}", source=ref) from err


def live_spec_text(ref: str, conn: Connection) -> str:
    """The live object as YAML, e.g. to store as a session input."""
    return yaml.safe_dump(fetch_live_document(ref, conn), sort_keys=False)


def load_live_spec(ref: str, conn: Connection) -> Spec:
    """Fetch ``ref`` with ``conn`` and load it like a file, noise stripped by the spec loader."""
    from clusterbisect.specs import load_spec

    text = live_spec_text(ref, conn)
    with tempfile.TemporaryDirectory(prefix="clusterbisect-live-") as tmp:
        path = Path(tmp) / "live.yaml"
        path.write_text(text, encoding="utf-8")
        spec = load_spec(str(path))
    spec.source = ref
    return spec
