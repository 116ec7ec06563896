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
from clusterbisect.redact import redact_value, setting_is_secret
from clusterbisect.runners.base import NotCarried
from clusterbisect.runners.kubernetes import operators
from clusterbisect.settings import PathSegment, flatten
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
    metadata: dict[str, Any] = {
        "name": name,
        "labels": dict(ours),
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
    """Selector labels of a long-running workload: kept off probe pods (see SERVICE_KINDS)."""
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


# --- what a probe Job cannot test ---------------------------------------------------


def untestable(
    spec: Spec,
    changes: list[Change],
    options: RenderOptions,
    paths: dict[str, tuple[PathSegment, ...]] | None = None,
) -> dict[str, str]:
    """Changes that would not reach the probe pod, as ``{key: reason}``.

    ``paths`` maps keys to document paths when a change does not carry its own.
    """
    probed = Probed.of(spec, options)
    reasons: dict[str, str] = {}
    for change in changes:
        path = tuple(change.path) or (paths or {}).get(change.key, ())
        reason = probed.why(path) if path else probed.why_by_key(change.key)
        if reason:
            reasons[change.key] = reason
    return reasons


def not_carried(spec: Spec, options: RenderOptions) -> list[NotCarried]:
    """The good spec's settings a probe does not carry, with the reason: job-level
    settings, the templates not probed (one entry each), what the probe Job replaces,
    and a command that cannot run as a world of one. Secret values are redacted."""
    probed = Probed.of(spec, options)
    out: list[NotCarried] = []
    others_seen: set[str] = set()
    for setting in flatten(spec).values():
        other = probed.other_template(setting.path)
        if other is not None:
            if other.key_prefix not in others_seen:
                others_seen.add(other.key_prefix)
                name = other.key_prefix.removesuffix(".") or other.role
                out.append(NotCarried(name, "(pod template)", probed.why_other(other)))
            continue
        reason = probed.why(setting.path)
        if reason:
            secret = setting_is_secret(setting.env_name, setting.path)
            out.append(
                NotCarried(
                    setting.key, redact_value(setting.value) if secret else setting.value, reason
                )
            )
    world = probed.world_of_one()
    if world is not None:
        out.append(world)
    return out


# Why a job-level field does not reach a probe, by the field's name.
_WORLD_OF_ONE = "a probe is one pod, a world of one"
_RUNS_ONCE = "a probe runs once: no retries, no failure or success policy of the job"
_SCHEDULING = (
    "gang scheduling, queues and pod groups belong to the job's scheduler; "
    "the probe pod is scheduled on its own"
)
JOB_LEVEL_REASONS: dict[str, str] = {
    **dict.fromkeys(
        (
            "replicas",
            "parallelism",
            "completions",
            "minReplicas",
            "maxReplicas",
            "numOfHosts",
            "size",
            "numNodes",
            "minAvailable",
            "elasticPolicy",
            "subGroupPolicy",
        ),
        _WORLD_OF_ONE,
    ),
    **dict.fromkeys(
        (
            "backoffLimit",
            "backoffLimitPerIndex",
            "maxFailedIndexes",
            "maxRetry",
            "maxRestarts",
            "restartPolicy",
            "podFailurePolicy",
            "successPolicy",
            "failurePolicy",
            "policies",
            "cleanPodPolicy",
        ),
        _RUNS_ONCE,
    ),
    **dict.fromkeys(
        (
            "schedulerName",
            "queue",
            "schedulingPolicy",
            "podGroupPolicy",
            "priorityClassName",
            "minResources",
            "networkTopology",
        ),
        _SCHEDULING,
    ),
    "activeDeadlineSeconds": "the probe's own deadline replaces it (--timeout)",
    "ttlSecondsAfterFinished": "probe Jobs are deleted when they end",
    "suspend": "probes are never suspended",
    "network": "the probe pod gets no headless Service or subdomain of the job",
    "networkConfig": "the probe pod gets no headless Service or subdomain of the job",
    "startupPolicy": _WORLD_OF_ONE,
    "rolloutStrategy": "a probe is a Job, never rolled out",
}


@dataclass
class Probed:
    """What a probe of ``spec`` runs, and why a setting would not reach it."""

    spec: Spec
    ref: PodTemplateRef
    refs: list[PodTemplateRef]
    main: str
    options: RenderOptions
    dropped_labels: set[str]

    @classmethod
    def of(cls, spec: Spec, options: RenderOptions) -> Probed:
        ref = probe_template(spec, options.template)
        template = copy.deepcopy(template_of(spec, ref)) or {"spec": {}}
        operators.overlay_trainer(spec, ref, template["spec"])
        main = main_container_name(spec, template, options.container)
        refs = pod_templates(spec, options.template)
        return cls(spec, ref, refs, main, options, selector_labels(spec))

    @property
    def where(self) -> str:
        return where_probes_run(self.spec, self.ref)

    def other_template(self, path: tuple[PathSegment, ...]) -> PodTemplateRef | None:
        """The template, other than the probed one, that ``path`` is in."""
        for other in self.refs:
            if other != self.ref and path[: len(other.path)] == tuple(other.path):
                return other
        return None

    def why_other(self, other: PodTemplateRef) -> str:
        return (
            f"belongs to the {other.role or 'other'} pod template; probes run {self.where} "
            f"(--template {other.role} probes that one)"
        )

    def why(self, path: tuple[PathSegment, ...]) -> str | None:
        """Why the setting at ``path`` does not reach the probe pod, or None."""
        spec, ref = self.spec, self.ref
        base = tuple(ref.path)
        if spec.kind != "Pod" or base:
            inside = path[: len(base)] == base
        else:
            inside = path[:1] in (("spec",), ("metadata",))
        if not inside:
            return self.why_outside(path)
        rest = path[len(base) :]
        if rest[:2] == ("metadata", "labels") and len(rest) > 2:
            label = rest[2]
            if label in self.dropped_labels:
                return (
                    "a selector label of the workload; probe pods drop it so they join no Service"
                )
            return "a controller-managed label" if label in CONTROLLER_LABELS else None
        if rest[:1] == ("metadata",) and rest[1:2] != ("annotations",):
            return "pod metadata that a probe Job generates itself"
        if rest == ("spec", "restartPolicy"):
            return "probe Jobs always run with restartPolicy Never"
        if rest[:2] == ("spec", "containers") and len(rest) > 3 and rest[2] == ("name", self.main):
            return _why_overridden(str(rest[3]), self.options)
        return None

    def why_outside(self, path: tuple[PathSegment, ...]) -> str | None:
        """Why a setting outside the probed pod template does not reach the probe."""
        spec = self.spec
        other = self.other_template(path)
        if other is not None:
            return self.why_other(other)
        if operators.carries(spec, self.ref, path):
            return None
        if path[:1] == ("metadata",):
            return f"{spec.kind} metadata does not reach the probe pod"
        fields = [s for s in path if isinstance(s, str)]
        reason = next(
            (JOB_LEVEL_REASONS[f] for f in reversed(fields) if f in JOB_LEVEL_REASONS), None
        )
        if reason:
            return f"a {spec.kind}-level setting: {reason}"
        return f"a {spec.kind}-level setting; probe Jobs run {self.where} only"

    def why_by_key(self, key: str) -> str | None:
        spec, ref = self.spec, self.ref
        for other in self.refs:
            if other != ref and other.key_prefix and key.startswith(other.key_prefix):
                return self.why_other(other)
        if ref.key_prefix and not key.startswith(ref.key_prefix):
            return f"a {spec.kind}-level setting; probe Jobs run {self.where} only"
        if key.startswith("metadata.") and spec.kind != "Pod":
            return f"{spec.kind} metadata does not reach the probe pod"
        return None

    def world_of_one(self) -> NotCarried | None:
        """The main container's command, when it cannot run as a world of one."""
        if self.options.command is not None or self.options.probe_name:
            return None
        template = copy.deepcopy(template_of(self.spec, self.ref)) or {"spec": {}}
        operators.overlay_trainer(self.spec, self.ref, template["spec"])
        for container in template["spec"].get("containers") or []:
            if container.get("name") != self.main:
                continue
            argv = [
                str(a) for a in [*(container.get("command") or []), *(container.get("args") or [])]
            ]
            found = operators.world_of_one(argv)
            if found:
                return NotCarried(
                    f"{self.ref.key_prefix}containers[{self.main}].command",
                    found,
                    f"the command fixes {found} but a probe is one pod, a world of one "
                    "(its operator env says 1 node): it would wait for peers that never "
                    "come. Give the probe a command for one node (--command, --args or "
                    "the workload after --)",
                )
        return None


def _why_overridden(field: str, options: RenderOptions) -> str | None:
    """Why the main container's ``field`` is not tested: --command, --args or --probe
    replace it."""
    if field == "command" and (options.command is not None or options.probe_name):
        return "the main container's command is replaced by --command/--probe"
    replaced = options.args is not None or options.command is not None or options.probe_name
    if field == "args" and replaced:
        return "the main container's args are replaced by --args/--command/--probe"
    return None
