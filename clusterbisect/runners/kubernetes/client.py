"""Connecting like kubectl does, and API calls with retries and readable errors.

The ``kubernetes`` package is imported inside functions only, so importing this module
(and ``--dry-run`` without a cluster) stays cheap.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
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
    mount_grace_s: float = 120.0  # ContainerCreating with FailedMount events for this long
    max_log_bytes: int = 1 << 20  # the end of a probe's log kept (and matched)
    log_head_bytes: int = 256 << 10  # the start of a long log also kept in its file
    log_tail_lines: int = 20000  # the fallback when the log cannot be streamed whole
    retries: int = 5  # retries of a failed call, at least ...
    retry_window_s: float = 120.0  # ... and for this long (an API server restart)
    retry_base_s: float = 0.5
    retry_cap_s: float = 10.0
    request_timeout_s: float = 60.0  # a create or list that hangs is retried after this


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


def _body_name(args: tuple[Any, ...]) -> str | None:
    for arg in args:
        if isinstance(arg, dict):
            return (arg.get("metadata") or {}).get("name")
    return None


def connection_errors() -> tuple[type[BaseException], ...]:
    import urllib3

    return (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)


@dataclass
class Backoff:
    """Delays between retries: doubling from ``base_s`` up to ``cap_s``; no more once
    ``retries`` were made *and* ``window_s`` of waiting is spent (so a short outage,
    such as an API server restart, is ridden out; a zero base only counts retries)."""

    base_s: float = 0.5
    retries: int = 5
    window_s: float = 0.0
    cap_s: float = 10.0
    attempt: int = 0
    waited_s: float = 0.0

    def next(self) -> float | None:
        """The delay before the next try, or None to give up."""
        more = self.attempt < self.retries or (self.base_s > 0 and self.waited_s < self.window_s)
        if not more:
            return None
        delay = min(self.base_s * 2**self.attempt, self.cap_s)
        self.attempt += 1
        self.waited_s += delay
        return delay

    def reset(self) -> None:
        self.attempt, self.waited_s = 0, 0.0


def backoff_of(options: KubernetesSettings) -> Backoff:
    """A fresh :class:`Backoff` with the options' retry tuning."""
    return Backoff(
        options.retry_base_s, options.retries, options.retry_window_s, options.retry_cap_s
    )


def unknown_field_error(err: Exception, resource: str, name: str | None) -> InputError | None:
    """Bad input from a client-side validation error of a request's body (kubernetes
    client 35+ validates bodies with pydantic); None for anything else, such as a wrong
    keyword argument, which is our own bug and is not hidden as bad input."""
    try:
        errors = err.errors()  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        return None
    about_body = [e for e in errors if len(e.get("loc") or ()) > 1 and isinstance(e["loc"][0], int)]
    if not about_body or len(about_body) != len(errors):
        return None
    parts = []
    for item in about_body:
        path = field_path(item["loc"][1:])
        if item.get("type") == "extra_forbidden":
            parts.append(f"unknown field {path}")
        else:
            parts.append(f"{path}: {item.get('msg', 'invalid')}")
    what = f"{resource} {name}" if name else resource
    return InputError(
        f"{'; '.join(parts)} (rejected by the Kubernetes client before sending {what}; "
        "the Kubernetes API has no such field, or not with this type)",
        field=field_path(about_body[0]["loc"][1:]),
        details={"resource": resource, "name": name, "fields": [e["loc"][1:] for e in errors]},
    )


def field_path(loc: Any) -> str:
    """``("spec", "containers", 0, "envv")`` as ``spec.containers[0].envv``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def strict_decoding_error(err: Any, resource: str) -> InputError | None:
    """Bad input from the API server's ``fieldValidation=Strict`` rejection (HTTP 400,
    "strict decoding error: unknown field ..."); None for any other error."""
    message = _server_message(err)
    if getattr(err, "status", None) != 400 or "strict decoding error" not in message:
        return None
    fields = re.findall(r'unknown field "([^"]+)"', message)
    return InputError(
        f"the API server refused {resource} with unknown fields: {message}",
        field=fields[0] if fields else None,
        details={"resource": resource, "fields": fields},
    )


class Api:
    """API calls with retries on 429, 5xx and connection errors, and readable errors."""

    def __init__(
        self,
        conn: Connection,
        retries: int = 5,
        retry_base_s: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        *,
        retry_window_s: float = 0.0,
        retry_cap_s: float = 10.0,
        request_timeout_s: float | None = None,
    ) -> None:
        self.conn = conn
        self.request_timeout_s = request_timeout_s
        self.retries = retries
        self.retry_base_s = retry_base_s
        self.retry_window_s = retry_window_s
        self.retry_cap_s = retry_cap_s
        self.sleep = sleep

    @classmethod
    def of(
        cls, conn: Connection, options: KubernetesSettings, sleep: Callable[[float], None]
    ) -> Api:
        """An ``Api`` with the options' retry tuning."""
        return cls(
            conn,
            options.retries,
            options.retry_base_s,
            sleep,
            retry_window_s=options.retry_window_s,
            retry_cap_s=options.retry_cap_s,
            request_timeout_s=options.request_timeout_s,
        )

    def backoff(self) -> Backoff:
        return Backoff(self.retry_base_s, self.retries, self.retry_window_s, self.retry_cap_s)

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

        backoff = self.backoff()
        while True:
            try:
                return fn(*args, **kwargs)
            except ApiException as err:
                if err.status in passthrough:
                    raise
                delay = backoff.next() if err.status in RETRY_STATUSES else None
                if delay is not None:
                    delay = _retry_after(err) or delay
                    log.info(
                        "k8s.retry", verb=verb, resource=resource, status=err.status, delay_s=delay
                    )
                    self.sleep(min(delay, 30.0))
                    continue
                bad_input = strict_decoding_error(err, resource)
                if bad_input is not None:
                    raise bad_input from None
                raise api_error(err, verb, resource, self.conn.namespace) from err
            except connection_errors() as err:
                delay = backoff.next()
                if delay is not None:
                    log.info(
                        "k8s.retry", verb=verb, resource=resource, error=str(err), delay_s=delay
                    )
                    self.sleep(delay)
                    continue
                raise BackendError(
                    f"cannot reach the Kubernetes API at {self.conn.host or '?'} to {verb} "
                    f"{resource}: {err}"
                ) from err
            except ValueError as err:  # pydantic's ValidationError (client 35+) is one
                bad_body = unknown_field_error(err, resource, _body_name(args))
                if bad_body is None:
                    raise
                raise bad_body from None

    def create(
        self,
        fn: Callable[..., Any],
        body: dict[str, Any],
        resource: str,
        *,
        passthrough: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> Any:
        """Create ``body`` in the namespace with ``fn`` (a ``create_namespaced_*``).

        With ``fieldValidation=Strict``: a field the API does not know is refused (bad
        input), never dropped silently. A create that hangs is given up after the
        request timeout and retried like a dropped connection.
        """
        namespace = self.conn.namespace
        kwargs.setdefault("field_validation", "Strict")
        if self.request_timeout_s:
            kwargs.setdefault("_request_timeout", self.request_timeout_s)
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


def model_problems(kind_model: str, body: dict[str, Any]) -> list[tuple[tuple[Any, ...], str]]:
    """What the client's model of ``kind_model`` (``V1Job``) finds wrong with ``body``,
    offline, as ``(path, message)``; nothing when the client does not validate (older
    than 35) or is not installed. The API server checks again (fieldValidation=Strict)."""
    try:
        from kubernetes import client
    except ImportError:
        return []
    model = getattr(client, kind_model, None)
    validate = getattr(model, "model_validate", None)
    if validate is None:
        return []
    try:
        validate(body)
    except ValueError as err:
        errors = getattr(err, "errors", None)
        if errors is None:
            return []
        return [
            (
                tuple(e.get("loc") or ()),
                "unknown field" if e.get("type") == "extra_forbidden" else str(e.get("msg")),
            )
            for e in errors()
        ]
    return []
