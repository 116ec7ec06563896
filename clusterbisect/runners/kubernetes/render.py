"""Render probes as Kubernetes Jobs: pure data in, manifests out (no API calls).

A probe Job is the primary pod template of the probe's spec (the good spec with the
probe's changes applied), wrapped in a ``batch/v1`` Job that runs once: no retries,
``restartPolicy: Never``, a deadline, a TTL, and a pod failure policy that ignores
disruptions so an eviction is never read as the failure. Every object carries the
``app.kubernetes.io/managed-by=clusterbisect`` label plus the session and probe ids,
which is how ``cleanup`` finds leftovers.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
import secrets
from dataclasses import dataclass
from typing import Any

from clusterbisect.diff import Change
from clusterbisect.errors import InputError
from clusterbisect.runners.kubernetes import isolation, operators
from clusterbisect.specs.kubernetes import PodTemplateRef, pod_templates, resolve
from clusterbisect.specs.model import KUBERNETES, Spec
from clusterbisect.specs.noise import LABEL_NOISE

# --- labels and annotations --------------------------------------------------------

LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "clusterbisect"
LABEL_SESSION = "clusterbisect.io/session"
LABEL_PROBE = "clusterbisect.io/probe"
LABEL_JOB = "clusterbisect.io/job"  # on the pods: which probe Job they belong to
ANN_CHANGES = "clusterbisect.io/changes"
ANN_CHANGE_COUNT = "clusterbisect.io/change-count"
ANN_PURPOSE = "clusterbisect.io/purpose"
ANN_SOURCE = "clusterbisect.io/source"
ANN_TEMPLATE = "clusterbisect.io/template"
ANN_OPERATOR_ENV = "clusterbisect.io/operator-env"
ANN_VOLUMES = "clusterbisect.io/volumes"  # the volumes a probe does not share as they are
DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"

# The changes annotation stays well below the 256 KiB limit on all annotations.
MAX_CHANGES_ANNOTATION = 64 * 1024

PROBE_VOLUME = "clusterbisect-probes"
PROBE_MOUNT = "/clusterbisect/probes"

NAME_MAX = 63  # a Job's name becomes a pod label value, so 63, not 253

# Labels a controller stamps on the pods it owns (the list the spec loader drops as
# noise). Copied onto a probe they would make another controller's selector (or our
# own Job's) match the wrong pods.
CONTROLLER_LABELS = LABEL_NOISE

# Long-running workloads whose selector labels usually also select Services: probe
# pods must not carry them, or they would receive production traffic.
SERVICE_KINDS = frozenset(
    {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "ReplicationController"}
)
WORKLOAD_KINDS = frozenset({"Job", *SERVICE_KINDS})

_DNS_INVALID = re.compile(r"[^a-z0-9-]+")
_LABEL_INVALID = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class RenderOptions:
    """What the user asked to change about every probe Job."""

    namespace: str | None = None
    container: str | None = None  # the main container; default: the spec's main container
    command: list[str] | None = None  # replaces the main container's command
    args: list[str] | None = None  # replaces its args
    probe_name: str | None = None  # run probes/NAME.py from a ConfigMap
    probe_configmap: str | None = None  # that ConfigMap's name
    ttl: int = 3600
    default_timeout_s: float = 3600.0
    template: str | None = None  # --template: the role probes run; default: the kind's
    volumes: str = isolation.READ_ONLY  # persistent volumes: read-only, scratch or shared
    admission_labels: tuple[str, ...] = isolation.ADMISSION_LABELS  # copied onto the Job


# --- names -------------------------------------------------------------------------


def short_hash(text: str, length: int = 6) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def random_suffix(length: int = 8) -> str:
    """Lower-case hex, so a generated name stays DNS-1123."""
    return secrets.token_hex(4)[:length]


def dns_label(text: str, max_len: int = NAME_MAX, keep: str = "end") -> str:
    """A DNS-1123 label from ``text``: lower case, ``[a-z0-9-]``, alphanumeric ends."""
    slug = _DNS_INVALID.sub("-", text.lower()).strip("-")
    if len(slug) > max_len:
        slug = slug[-max_len:] if keep == "end" else slug[:max_len]
        slug = slug.strip("-")
    return slug or "x"


def label_value(text: str) -> str:
    """A valid label value (<= 63 chars of ``[A-Za-z0-9._-]``, alphanumeric ends).

    A value that had to be altered gets a hash of the original, so two different
    inputs never collapse onto the same label.
    """
    clean = _LABEL_INVALID.sub("-", text).strip("-._")
    if clean == text and len(clean) <= NAME_MAX:
        return clean
    return (clean[: NAME_MAX - 7].rstrip("-._") + "-" + short_hash(text)).lstrip("-._")


def job_name(session_id: str, probe_id: str, suffix: str | None = None) -> str:
    """``cb-<session>-<probe>-<random>``: unique even when a probe id is run again."""
    suffix = suffix or random_suffix()
    probe = dns_label(probe_id, 12)
    room = NAME_MAX - len("cb---") - len(probe) - len(suffix)
    session = dns_label(session_id, room, keep="end")
    return f"cb-{session}-{probe}-{suffix}"


def configmap_name(session_id: str, probe_name: str, script: str) -> str:
    """The ConfigMap holding ``probes/NAME.py`` for one session (content-addressed)."""
    digest = short_hash(script, 6)
    name = dns_label(probe_name, 16)
    room = NAME_MAX - len("cb--probe--") - len(name) - len(digest)
    return f"cb-{dns_label(session_id, room)}-probe-{name}-{digest}"


def session_selector(session_id: str | None = None) -> str:
    """The label selector of everything clusterbisect made (in one session, if given)."""
    selector = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
    if session_id:
        selector += f",{LABEL_SESSION}={label_value(session_id)}"
    return selector


# --- pod templates -----------------------------------------------------------------


def probe_template(spec: Spec, wanted: str | None = None) -> PodTemplateRef:
    """The template a probe runs: ``wanted`` (``--template``), else the kind's default
    (the coordinator, the chief, the launcher, ..., else the first worker: see
    ``specs/kinds.py``)."""
    if spec.format != KUBERNETES:
        raise InputError(
            f"the kubernetes backend runs Kubernetes objects, not a {spec.kind}",
            source=spec.source,
        )
    refs = [r for r in pod_templates(spec, wanted) if isinstance(template_of(spec, r), dict)]
    if not refs:
        raise InputError(
            f"no pod template found in this {spec.kind} (expected e.g. spec.template)",
            source=spec.source,
            field="spec",
        )
    return refs[0]


def where_probes_run(spec: Spec, ref: PodTemplateRef) -> str:
    """``the Worker template of the TFJob``, for reasons and reports."""
    if ref.role:
        return f"the {ref.role} template of the {spec.kind}"
    return f"the {spec.kind}'s pod template"


def template_of(spec: Spec, ref: PodTemplateRef) -> dict[str, Any] | None:
    """The pod template (``{"metadata", "spec"}``) at ``ref``."""
    node = resolve(spec.document, ref.path)
    if not isinstance(node, dict):
        return None
    if "containers" in node:  # a path to the pod spec itself
        return {"metadata": {}, "spec": node}
    if isinstance(node.get("spec"), dict):
        return node
    return None


def main_container_name(spec: Spec, template: dict[str, Any], wanted: str | None) -> str:
    """``wanted``, else the default-container annotation, else the spec's main container."""
    names = [c.get("name", "") for c in template["spec"].get("containers") or []]
    if not names:
        raise InputError(
            "the pod template has no containers", source=spec.source, field="containers"
        )
    if wanted:
        if wanted not in names:
            raise InputError(
                f"no container {wanted!r} in the pod template (containers: {', '.join(names)})",
                source=spec.source,
                field="--container",
            )
        return wanted
    annotated = (template.get("metadata") or {}).get("annotations", {}) or {}
    default = annotated.get(DEFAULT_CONTAINER_ANNOTATION)
    if default in names:
        return str(default)
    return str(names[0])


# --- rendering ---------------------------------------------------------------------


def render_job(
    probe_id: str,
    session_id: str,
    spec: Spec,
    changes: list[Change],
    options: RenderOptions,
    *,
    name: str | None = None,
    timeout_s: float | None = None,
    workload: list[str] | None = None,
    purpose: str | None = None,
) -> dict[str, Any]:
    """The probe Job for ``spec`` (already carrying the probe's changes).

    ``workload`` is the argv given after ``--``; ``options.command`` wins over it.
    """
    ref = probe_template(spec, options.template)
    template = copy.deepcopy(template_of(spec, ref))
    assert template is not None
    pod = template["spec"]
    operators.overlay_trainer(spec, ref, pod)
    main = main_container_name(spec, template, options.container)
    name = name or job_name(session_id, probe_id)

    pod["restartPolicy"] = "Never"  # required by podFailurePolicy; the probe runs once
    pod.pop("ephemeralContainers", None)  # cannot be set when a pod is created
    _override_workload(pod, main, options, workload)
    container = next(c for c in pod["containers"] if c.get("name") == main)
    injected = operators.add_operator_env(spec, ref, container)
    volumes = _isolate(spec, pod, options)

    ours = {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_SESSION: label_value(session_id),
        LABEL_PROBE: label_value(probe_id),
    }
    source_meta = template.get("metadata") or {}
    dropped = set(CONTROLLER_LABELS) | selector_labels(spec)
    pod_labels = {k: v for k, v in (source_meta.get("labels") or {}).items() if k not in dropped}
    pod_meta: dict[str, Any] = {"labels": {**pod_labels, **ours, LABEL_JOB: name}}
    if source_meta.get("annotations"):
        pod_meta["annotations"] = dict(source_meta["annotations"])

    timeout = timeout_s if timeout_s and timeout_s > 0 else options.default_timeout_s
    admission = {**((spec.document.get("metadata") or {}).get("labels") or {}), **pod_labels}
    metadata: dict[str, Any] = {
        "name": name,
        "labels": {**isolation.admission_labels(admission, options.admission_labels), **ours},
        "annotations": {
            **changes_annotation(changes),
            ANN_SOURCE: spec.source[:1024],
            ANN_TEMPLATE: f"{spec.kind}{'/' + ref.role if ref.role else ''}",
        },
    }
    if purpose:
        metadata["annotations"][ANN_PURPOSE] = purpose
    if injected:
        metadata["annotations"][ANN_OPERATOR_ENV] = ",".join(injected)
    if volumes:
        metadata["annotations"][ANN_VOLUMES] = "; ".join(volumes)
    if options.namespace:
        metadata["namespace"] = options.namespace
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            **operators.job_fields(spec, ref),
            "backoffLimit": 0,
            "activeDeadlineSeconds": max(1, math.ceil(timeout)),
            "ttlSecondsAfterFinished": int(options.ttl),
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    }
                ]
            },
            "template": {"metadata": pod_meta, "spec": pod},
        },
    }


def _isolate(spec: Spec, pod: dict[str, Any], options: RenderOptions) -> list[str]:
    """What the probe pod must not share with production (isolation.py); the volumes
    it changed, for the report."""
    changed = []
    if spec.kind == "StatefulSet":
        changed += isolation.claim_template_volumes(spec.document, pod, options.volumes)
    isolation.drop_computed_priority(pod)
    isolation.copy_priority_class(spec.document, pod)
    return changed + isolation.protect_volumes(pod, options.volumes)


def _override_workload(
    pod: dict[str, Any], main: str, options: RenderOptions, workload: list[str] | None
) -> None:
    container = next(c for c in pod["containers"] if c.get("name") == main)
    command = options.command if options.command is not None else workload
    if options.probe_name:
        script = f"{PROBE_MOUNT}/{options.probe_name}.py"
        command = [*(command or ["python3"]), script]
        mounts = container.setdefault("volumeMounts", [])
        mounts.append({"name": PROBE_VOLUME, "mountPath": PROBE_MOUNT, "readOnly": True})
        pod.setdefault("volumes", []).append(
            {"name": PROBE_VOLUME, "configMap": {"name": options.probe_configmap or "missing"}}
        )
    if command:
        container["command"] = list(command)
        if options.args is None:
            container.pop("args", None)  # a new workload does not inherit the old flags
    if options.args is not None:
        container["args"] = list(options.args)


def selector_labels(spec: Spec) -> set[str]:
    """Selector labels of a long-running workload: kept off probe pods (see SERVICE_KINDS).
    A Pod has no selector: any of its labels may be a Service's, so all are kept off."""
    if spec.kind == "Pod":
        labels = (spec.document.get("metadata") or {}).get("labels") or {}
        return {k for k in labels if k not in CONTROLLER_LABELS}
    if spec.kind not in SERVICE_KINDS:
        return set()
    selector = (spec.document.get("spec") or {}).get("selector") or {}
    labels = selector.get("matchLabels", selector) if isinstance(selector, dict) else {}
    return {k for k, v in labels.items() if isinstance(v, str)}


def changes_annotation(changes: list[Change]) -> dict[str, str]:
    """The applied changes as JSON (secrets redacted by ``Change.to_dict``)."""
    data = [c.to_dict() for c in changes]
    text = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    if len(text) > MAX_CHANGES_ANNOTATION:
        keys = [c.key for c in changes]
        text = json.dumps(keys, separators=(",", ":"))
        while len(text) > MAX_CHANGES_ANNOTATION and keys:
            keys = keys[: len(keys) // 2]
            text = json.dumps(
                [*keys, f"... {len(changes) - len(keys)} more"], separators=(",", ":")
            )
    return {ANN_CHANGES: text, ANN_CHANGE_COUNT: str(len(changes))}


def render_configmap(
    session_id: str, probe_name: str, script: str, namespace: str | None
) -> dict[str, Any]:
    """The ConfigMap that mounts ``probes/NAME.py`` into every probe pod."""
    metadata: dict[str, Any] = {
        "name": configmap_name(session_id, probe_name, script),
        "labels": {
            LABEL_MANAGED_BY: MANAGED_BY,
            LABEL_SESSION: label_value(session_id),
        },
    }
    if namespace:
        metadata["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata,
        "data": {f"{probe_name}.py": script},
    }
