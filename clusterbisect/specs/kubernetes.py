"""Kubernetes objects as specs: pick the workload, strip noise, find its pod templates.

Supported kinds: Pod, Job, CronJob, Deployment, StatefulSet, DaemonSet, ReplicaSet,
Kubeflow training jobs (PyTorchJob, TFJob, MPIJob, ... with ``*ReplicaSpecs``),
KubeRay RayJob/RayCluster (head and worker groups), JobSet, Volcano Jobs
(``batch.volcano.sh``, tasks), LeaderWorkerSet (leader and worker templates) and
Kubeflow Trainer's TrainJob, given in one file with its (Cluster)TrainingRuntime. An
unknown kind is accepted when it holds a pod template (``template.spec.containers``)
somewhere. Where each kind keeps its templates, and which one a probe runs, is
``kinds.py``; Argo Workflows and Spark applications are refused there with what to
pass instead.

``metadata.name`` and ``metadata.namespace`` are identity, not settings: they are
removed from the document and kept in ``Spec.extra`` (``name``, ``namespace``).
"""

from __future__ import annotations

from typing import Any

from clusterbisect.errors import InputError
from clusterbisect.specs import kinds, noise
from clusterbisect.specs.kinds import PodTemplateRef, resolve
from clusterbisect.specs.model import KUBERNETES, Spec
from clusterbisect.specs.yamlio import YAMLError, load_yaml, plain

# Kinds with a fixed pod template location.
SIMPLE_TEMPLATE_KINDS = frozenset({"Job", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"})
KUBEFLOW_KINDS = frozenset(
    {"PyTorchJob", "TFJob", "MPIJob", "XGBoostJob", "PaddleJob", "MXJob", "JAXJob"}
)
WORKLOAD_KINDS = (
    frozenset(
        {
            "Pod",
            "CronJob",
            "RayJob",
            "RayCluster",
            "JobSet",
            "LeaderWorkerSet",
            "TrainJob",
            *kinds.RUNTIME_KINDS,
        }
    )
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
EXPECTED_WORKLOADS = (
    "Pod, Job, CronJob, Deployment, PyTorchJob, RayJob, JobSet, a Volcano Job, "
    "LeaderWorkerSet, TrainJob, ..."
)


def pod_templates(spec: Spec, wanted: str | None = None) -> list[PodTemplateRef]:
    """The pod templates of a Kubernetes spec, the probed one first: ``wanted``
    (a role, as ``--template`` names it), else the kind's default (``kinds.choose``)."""
    if spec.format != KUBERNETES:
        return []
    refs = template_refs(spec.document, spec.kind)
    if len(refs) < 2 and not wanted:
        return refs
    first = kinds.choose(spec.document, spec.kind, refs, wanted, spec.source)
    return [first, *(r for r in refs if r is not first)]


def template_refs(document: dict[str, Any], kind: str) -> list[PodTemplateRef]:
    """Pod template references for an object of ``kind``, in document order."""
    return kinds.template_refs(document, kind)


def _is_pod_template(node: Any) -> bool:
    return kinds.is_pod_template(node)


def layout(spec: Spec) -> tuple[Any, ...]:
    """What must match for two Kubernetes specs to be comparable."""
    which = kinds.identify(spec.document, spec.kind)
    if which in WORKLOAD_KINDS or which == kinds.VOLCANO_JOB:
        return (which, ())
    return (which, tuple(r.path for r in template_refs(spec.document, spec.kind)))


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
    objects = kinds.bind_runtimes(objects, source)
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
    # No workload: explain why, using the first object that says most.
    refused = next((r for r in map(kinds.refusal, objects) if r), None)
    if refused:
        raise InputError(refused, source=source)
    obj = objects[0]
    kind = obj.get("kind")
    if not isinstance(kind, str) or not kind:
        raise InputError("missing field 'kind' (expected a Kubernetes object)", source=source)
    if kind in WORKLOAD_KINDS:
        raise InputError(f"{_describe(obj)} has no pod template", source=source, field="kind")
    if kind in NON_WORKLOAD_KINDS:
        raise InputError(
            f"kind '{kind}' has no pod template; expected a workload ({EXPECTED_WORKLOADS})",
            source=source,
        )
    raise InputError(
        f"unknown kind '{kind}' with no pod template; expected a workload ({EXPECTED_WORKLOADS})",
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
    if not isinstance(kind, str) or kind in NON_WORKLOAD_KINDS or kinds.refusal(obj):
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
