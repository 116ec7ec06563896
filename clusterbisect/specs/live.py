"""Live input: a spec read from a cluster (``KIND/NAME`` or ``k8s://NAMESPACE/KIND/NAME``)."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from clusterbisect.config import KubeConnection
from clusterbisect.errors import BackendError, InputError
from clusterbisect.runners.kubernetes.client import Api, Connection, connect
from clusterbisect.specs.model import Spec

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


def source_text(source: str, connection: KubeConnection) -> str | None:
    """The YAML of the live object ``source`` names, fetched with ``connection``; None
    when ``source`` is a file (or names nothing live)."""
    if Path(source).exists() or "/" not in source or not is_live_ref(source):
        return None
    conn = connect(connection.kubeconfig, connection.context, connection.namespace)
    return live_spec_text(source, conn)
