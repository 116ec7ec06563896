"""Kubernetes objects as specs: pick the workload, strip noise, find its pod templates.

Supported kinds: Pod, Job, CronJob, Deployment, StatefulSet, DaemonSet, ReplicaSet,
Kubeflow training jobs (PyTorchJob, TFJob, MPIJob, ... with ``*ReplicaSpecs``),
KubeRay RayJob/RayCluster (head and worker groups) and JobSet. An unknown kind is
accepted when it holds a pod template (``template.spec.containers``) somewhere.

``metadata.name`` and ``metadata.namespace`` are identity, not settings: they are
removed from the document and kept in ``Spec.extra`` (``name``, ``namespace``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clusterbisect.errors import InputError
from clusterbisect.specs import noise
from clusterbisect.specs.model import KUBERNETES, Spec
from clusterbisect.specs.yamlio import YAMLError, load_yaml, plain

# Kinds with a fixed pod template location.
SIMPLE_TEMPLATE_KINDS = frozenset({"Job", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"})
KUBEFLOW_KINDS = frozenset(
    {"PyTorchJob", "TFJob", "MPIJob", "XGBoostJob", "PaddleJob", "MXJob", "JAXJob"}
)
WORKLOAD_KINDS = (
    frozenset({"Pod", "CronJob", "RayJob", "RayCluster", "JobSet"})
    | SIMPLE_TEMPLATE_KINDS
    | KUBEFLOW_KINDS
)
# Well-known kinds that never carry a pod template.
NON_WORKLOAD_KINDS = frozenset(
    {
        "ConfigMap",
        "Secret",
        "Service",
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
        "PersistentVolumeClaim",
        "PersistentVolume",
        "Ingress",
        "NetworkPolicy",
        "Node",
        "Event",
        "LimitRange",
        "ResourceQuota",
        "PriorityClass",
        "StorageClass",
        "CustomResourceDefinition",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "Endpoints",
    }
)
# Replica roles probed first when a job has several (the primary template).
PRIMARY_ROLES = ("Master", "Chief", "Launcher", "Driver", "Scheduler", "head")


@dataclass(frozen=True)
class PodTemplateRef:
    """Where a pod template sits in ``Spec.document`` and how its settings are keyed.

    ``path`` leads to a mapping with ``metadata`` and ``spec`` (for a Pod, ``()``: the
    object itself). ``role`` names the replica type or group (``""`` for a Job,
    ``"Worker"``, ``"head"``); ``key_prefix`` starts every key of the template's
    settings (``""``, ``"replicas[Worker]."``, ``"head."``, ``"workers[gpu]."``).
    """

    role: str
    path: tuple[Any, ...]
    key_prefix: str


def resolve(document: Any, path: tuple[Any, ...]) -> Any:
    """The value at ``path`` (str keys, ``(field, value)`` list selectors) or None."""
    node = document
    for seg in path:
        if isinstance(seg, tuple):
            if not isinstance(node, list):
                return None
            field, wanted = seg
            node = next(
                (el for el in node if isinstance(el, dict) and el.get(field) == wanted), None
            )
        elif isinstance(node, dict):
            node = node.get(seg)
        else:
            return None
        if node is None:
            return None
    return node


def pod_templates(spec: Spec) -> list[PodTemplateRef]:
    """The pod templates of a Kubernetes spec, the primary one first."""
    if spec.format != KUBERNETES:
        return []
    return template_refs(spec.document, spec.kind)


def template_refs(document: dict[str, Any], kind: str) -> list[PodTemplateRef]:
    """Pod template references for an object of ``kind`` (primary first)."""
    spec = document.get("spec")
    spec = spec if isinstance(spec, dict) else {}
    if kind == "Pod":
        return [PodTemplateRef("", (), "")]
    if kind in SIMPLE_TEMPLATE_KINDS:
        return [PodTemplateRef("", ("spec", "template"), "")]
    if kind == "CronJob":
        return [PodTemplateRef("", ("spec", "jobTemplate", "spec", "template"), "")]
    if kind in ("RayJob", "RayCluster"):
        base: tuple[Any, ...] = ("spec", "rayClusterSpec") if kind == "RayJob" else ("spec",)
        cluster = resolve(document, base)
        refs: list[PodTemplateRef] = []
        if isinstance(cluster, dict):
            if isinstance(cluster.get("headGroupSpec"), dict):
                refs.append(PodTemplateRef("head", (*base, "headGroupSpec", "template"), "head."))
            for group in _named(cluster.get("workerGroupSpecs"), "groupName"):
                refs.append(
                    PodTemplateRef(
                        group,
                        (*base, "workerGroupSpecs", ("groupName", group), "template"),
                        f"workers[{group}].",
                    )
                )
        return refs
    if kind == "JobSet":
        return [
            PodTemplateRef(
                name,
                ("spec", "replicatedJobs", ("name", name), "template", "spec", "template"),
                f"jobs[{name}].",
            )
            for name in _named(spec.get("replicatedJobs"), "name")
        ]
    replica_refs = _kubeflow_refs(spec)
    if replica_refs or kind in KUBEFLOW_KINDS:
        return replica_refs
    return _generic_refs(document)


def _named(items: Any, field: str) -> list[str]:
    if not isinstance(items, list):
        return []
    return [str(el[field]) for el in items if isinstance(el, dict) and field in el]


def _kubeflow_refs(spec: dict[str, Any]) -> list[PodTemplateRef]:
    refs = []
    for field, replicas in spec.items():
        if not (isinstance(field, str) and field.endswith("ReplicaSpecs")):
            continue
        if not isinstance(replicas, dict):
            continue
        roles = sorted(replicas, key=lambda r: (r not in PRIMARY_ROLES, list(replicas).index(r)))
        for role in roles:
            refs.append(
                PodTemplateRef(str(role), ("spec", field, role, "template"), f"replicas[{role}].")
            )
    return refs


def _generic_refs(document: dict[str, Any]) -> list[PodTemplateRef]:
    """Pod templates of an unknown kind: any ``template`` mapping with containers."""
    found: list[tuple[Any, ...]] = []

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "template" and _is_pod_template(v):
                    found.append((*path, k))
                elif k not in ("metadata", "status"):
                    walk(v, (*path, k))

    walk(document.get("spec"), ("spec",))
    if len(found) == 1:
        return [PodTemplateRef("", found[0], "")]
    return [
        PodTemplateRef(".".join(str(s) for s in p), p, f"templates[{'.'.join(str(s) for s in p)}].")
        for p in found
    ]


def _is_pod_template(node: Any) -> bool:
    return (
        isinstance(node, dict)
        and isinstance(node.get("spec"), dict)
        and isinstance(node["spec"].get("containers"), list)
    )


def layout(spec: Spec) -> tuple[Any, ...]:
    """What must match for two Kubernetes specs to be comparable."""
    refs = pod_templates(spec)
    generic = spec.kind not in WORKLOAD_KINDS
    return (spec.kind, tuple(r.path for r in refs) if generic else ())


# --- parsing -------------------------------------------------------------------------


def parse_documents(
    documents: list[Any], source: str, *, selector: str | None = None, fresh: bool = False
) -> Spec:
    """Pick the one workload object among ``documents`` and normalise it into a spec.

    ``fresh``: the documents were just parsed and nobody else holds them (no copy
    needed); otherwise the chosen object is copied first.
    """
    objects = _expand_lists(documents, source)
    if not objects:
        raise InputError("no Kubernetes object found (empty List)", source=source)
    if selector is not None:
        objects = [o for o in objects if _matches(o, selector)]
        if not objects:
            raise InputError(f"no object matches '#{selector}'", source=source)
    workloads = [o for o in objects if _has_templates(o)]
    if len(workloads) == 1:
        return _normalise(workloads[0] if fresh else plain(workloads[0]), source)
    if len(workloads) > 1:
        names = ", ".join(_describe(o) for o in workloads[:5])
        raise InputError(
            f"{len(workloads)} workload objects ({names}); pick one with FILE#NAME",
            source=source,
        )
    # No workload: explain why, using the first object.
    obj = objects[0]
    kind = obj.get("kind")
    if not isinstance(kind, str) or not kind:
        raise InputError("missing field 'kind' (expected a Kubernetes object)", source=source)
    if kind in WORKLOAD_KINDS:
        raise InputError(f"{_describe(obj)} has no pod template", source=source, field="kind")
    if kind in NON_WORKLOAD_KINDS:
        raise InputError(
            f"kind '{kind}' has no pod template; expected a workload "
            "(Pod, Job, CronJob, Deployment, PyTorchJob, RayJob, JobSet, ...)",
            source=source,
        )
    raise InputError(
        f"unknown kind '{kind}' with no pod template; expected a workload "
        "(Pod, Job, CronJob, Deployment, PyTorchJob, RayJob, JobSet, ...)",
        source=source,
    )


def _expand_lists(documents: list[Any], source: str) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for doc in documents:
        if not isinstance(doc, dict):
            raise InputError(
                f"expected a mapping (Kubernetes object), found a {type(doc).__name__}",
                source=source,
            )
        kind = doc.get("kind")
        if isinstance(kind, str) and kind.endswith("List") and isinstance(doc.get("items"), list):
            for item in doc["items"]:
                if isinstance(item, dict):
                    # List items from `kubectl get` carry kind; plain JobList items may not.
                    if "kind" not in item and kind != "List":
                        item = {"kind": kind[: -len("List")], **item}
                    objects.append(item)
        else:
            objects.append(doc)
    return objects


def _matches(obj: dict[str, Any], selector: str) -> bool:
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    name = meta.get("name") if isinstance(meta, dict) else None
    if "/" in selector:
        kind, _, wanted = selector.partition("/")
        return obj.get("kind") == kind and name == wanted
    return name == selector


def _describe(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return f"{obj.get('kind', '?')} '{name}'" if name else str(obj.get("kind", "?"))


def _has_templates(obj: dict[str, Any]) -> bool:
    kind = obj.get("kind")
    if not isinstance(kind, str) or kind in NON_WORKLOAD_KINDS:
        return False
    refs = template_refs(obj, kind)
    if kind == "Pod":
        return isinstance(obj.get("spec"), dict) and isinstance(obj["spec"].get("containers"), list)
    if not refs:
        # A RayJob may run on an existing cluster (clusterSelector): no template.
        return kind == "RayJob" and isinstance(obj.get("spec"), dict)
    return all(_is_pod_template(resolve(obj, r.path)) for r in refs)


def _normalise(obj: dict[str, Any], source: str) -> Spec:
    doc = obj  # fresh and unshared: edited in place
    kind = str(doc["kind"])
    api_version = doc.get("apiVersion")
    meta = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    extra: dict[str, Any] = {}
    for field in ("name", "namespace", "generateName"):
        if isinstance(meta, dict) and meta.get(field):
            extra[field] = meta[field]
    doc.pop("status", None)
    doc["metadata"] = noise.strip_metadata(meta)
    if not doc["metadata"]:
        doc.pop("metadata")
    _strip_nested(doc)
    for ref in template_refs(doc, kind):
        template = resolve(doc, ref.path)
        if isinstance(template, dict) and "spec" in template:
            template["spec"] = noise.strip_pod_spec(template["spec"])
    if kind == "RayJob":
        _check_runtime_env_yaml(doc, source)
    return Spec(
        format=KUBERNETES,
        kind=kind,
        source=source,
        document=doc,
        api_version=str(api_version) if api_version is not None else None,
        extra=extra,
    )


def _strip_nested(node: Any) -> None:
    """Strip noise from nested templates: their metadata and generated selectors."""
    if isinstance(node, dict):
        if "spec" in node and isinstance(node.get("metadata"), dict) and node is not None:
            stripped = noise.strip_metadata(node["metadata"])
            if stripped:
                node["metadata"] = stripped
            else:
                node.pop("metadata")
        if "template" in node and "selector" in node:
            selector = noise.strip_selector(node["selector"])
            if selector:
                node["selector"] = selector
            else:
                node.pop("selector")
        for key, value in node.items():
            if key == "volumeClaimTemplates" and isinstance(value, list):
                _strip_claim_templates(value)
            else:
                _strip_nested(value)
    elif isinstance(node, list):
        for value in node:
            _strip_nested(value)


def _strip_claim_templates(claims: list[Any]) -> None:
    """A StatefulSet's claim templates: noise goes, but the name stays (the pod's
    volumeMounts refer to it)."""
    for claim in claims:
        if isinstance(claim, dict) and isinstance(claim.get("metadata"), dict):
            name = claim["metadata"].get("name")
            claim["metadata"] = {
                **noise.strip_metadata(claim["metadata"]),
                **({"name": name} if name else {}),
            }


def _check_runtime_env_yaml(doc: dict[str, Any], source: str) -> None:
    spec = doc.get("spec")
    text = spec.get("runtimeEnvYAML") if isinstance(spec, dict) else None
    if text is None:
        return
    if not isinstance(text, str):
        raise InputError("expected a YAML string", source=source, field="spec.runtimeEnvYAML")
    try:
        parsed = load_yaml(text)
    except YAMLError as err:
        raise InputError(
            f"invalid YAML: {err}", source=source, field="spec.runtimeEnvYAML"
        ) from None
    if parsed is not None and not isinstance(parsed, dict):
        raise InputError(
            "expected a YAML mapping (runtime_env)", source=source, field="spec.runtimeEnvYAML"
        )
