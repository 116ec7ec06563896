"""Connecting like kubectl does, and API calls with retries and readable errors.

The ``kubernetes`` package is imported inside functions only, so importing this module
(and ``--dry-run`` without a cluster) stays cheap.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clusterbisect.config import KubeConnection, KubernetesOptions, with_tuning
from clusterbisect.errors import BackendError, InputError
from clusterbisect.extras import require
from clusterbisect.log import get_logger

log = get_logger(__name__)

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


@dataclass
class KubernetesSettings(KubernetesOptions):
    """The user's options (``config.KubernetesOptions``) and the backend's own tuning."""

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


def settings_of(options: KubeConnection | None) -> KubernetesSettings:
    """``options`` (the connection, or all the backend's options) with its tuning."""
    return with_tuning(options, KubernetesSettings)


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
    kubeconfig: str | None = None,
    context: str | None = None,
    namespace: str | None = None,
    hint: str = "",
) -> Connection:
    """Connect like kubectl: kubeconfig files (or in-cluster config in a pod).

    The namespace is ``namespace``, else the context's, else the pod's own namespace
    in-cluster, else ``default``. ``hint`` ends the error when there is no
    configuration at all (what the caller could do instead).
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
        "~/.kube/config) and not running in a pod" + (f"; {hint}" if hint else "")
    )


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


def connection_errors() -> tuple[type[BaseException], ...]:
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
            except connection_errors() as err:
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

    def create(
        self,
        fn: Callable[..., Any],
        body: dict[str, Any],
        resource: str,
        *,
        passthrough: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> Any:
        """Create ``body`` in the namespace with ``fn`` (a ``create_namespaced_*``)."""
        namespace = self.conn.namespace
        return self.call(
            fn, namespace, body, verb="create", resource=resource, passthrough=passthrough, **kwargs
        )

    def delete(self, fn: Callable[..., Any], name: str, resource: str, **kwargs: Any) -> bool:
        """Delete ``name`` with ``fn`` (a ``delete_namespaced_*``); False if it was gone."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.call(
                fn,
                name,
                self.conn.namespace,
                verb="delete",
                resource=resource,
                passthrough=(404,),
                **kwargs,
            )
        except ApiException:
            return False
        return True

    def delete_job(self, name: str) -> bool:
        """Delete a probe Job and its pods; False if it was already gone."""
        return self.delete(
            self.conn.batch.delete_namespaced_job,
            name,
            "jobs.batch",
            propagation_policy="Background",
        )
