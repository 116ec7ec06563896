"""Workload kinds: where each kind keeps its pod templates, and which one a probe runs.

A kind is known by its ``kind`` *and* its API group: a ``batch.volcano.sh`` Job keeps
its templates under ``spec.tasks[]``, a ``batch/v1`` Job under ``spec.template``
(:func:`identify`). Each template is a :class:`PodTemplateRef`: where it sits in the
document, the role it plays (a replica type, a task, a replicated job, a worker
group, the leader) and the prefix of its settings' keys.

Which template a probe runs (:func:`choose`): the one named with ``--template``, else
the one the kind says coordinates the others (a JobSet's ``coordinator``, a Volcano
plugin's ``--master``, a TrainJob's trainer step), else the first role called
coordinator, chief, master, launcher, driver, leader or head, else the first worker,
else the first template.

Kinds that run no pod template of their own (Argo Workflows, Spark applications) are
refused with a message that says what they are and what to pass instead
(:func:`refusal`). Everything here is pure: documents in, references out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clusterbisect.errors import InputError

# --- references into a document --------------------------------------------------------


@dataclass(frozen=True)
class PodTemplateRef:
    """Where a pod template sits in ``Spec.document`` and how its settings are keyed.

    ``path`` leads to a mapping with ``metadata`` and ``spec`` (for a Pod, ``()``: the
    object itself). ``role`` names the replica type or group (``""`` for a Job,
    ``"Worker"``, ``"head"``); ``key_prefix`` starts every key of the template's
    settings (``""``, ``"replicas[Worker]."``, ``"head."``, ``"workers[gpu]."``).
    ``element`` is the path of the named member that holds the template (a replica
    spec, a task, a replicated job), keyed like the template: present on one side
    only, it is one change.
    """

    role: str
    path: tuple[Any, ...]
    key_prefix: str
    element: tuple[Any, ...] | None = None


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


# --- which kind ------------------------------------------------------------------------

# The API groups of the kinds with a known layout ("" is the core group). An object of
# a known kind from another group is not that kind (it is read as an unknown kind).
GROUPS: dict[str, frozenset[str]] = {
    "Pod": frozenset({""}),
    "Job": frozenset({"batch"}),
    "CronJob": frozenset({"batch"}),
    "Deployment": frozenset({"apps", "extensions"}),
    "StatefulSet": frozenset({"apps"}),
    "DaemonSet": frozenset({"apps", "extensions"}),
    "ReplicaSet": frozenset({"apps", "extensions"}),
    "PyTorchJob": frozenset({"kubeflow.org"}),
    "TFJob": frozenset({"kubeflow.org"}),
    "MPIJob": frozenset({"kubeflow.org"}),
    "XGBoostJob": frozenset({"kubeflow.org"}),
    "PaddleJob": frozenset({"kubeflow.org"}),
    "MXJob": frozenset({"kubeflow.org"}),
    "JAXJob": frozenset({"kubeflow.org"}),
    "RayJob": frozenset({"ray.io"}),
    "RayCluster": frozenset({"ray.io"}),
    "JobSet": frozenset({"jobset.x-k8s.io"}),
    "LeaderWorkerSet": frozenset({"leaderworkerset.x-k8s.io"}),
    "TrainJob": frozenset({"trainer.kubeflow.org"}),
    "TrainingRuntime": frozenset({"trainer.kubeflow.org"}),
    "ClusterTrainingRuntime": frozenset({"trainer.kubeflow.org"}),
}
VOLCANO_JOB = "VolcanoJob"  # a batch.volcano.sh Job (its kind is just "Job")
VOLCANO_GROUP = "batch.volcano.sh"
TRAINER_GROUP = "trainer.kubeflow.org"
RUNTIME_KINDS = frozenset({"TrainingRuntime", "ClusterTrainingRuntime"})
# The key under which a TrainJob's spec carries its runtime (see ``bind_runtime``).
RUNTIME_FIELD = "runtime"


def api_group(document: dict[str, Any]) -> str | None:
    """The API group of ``apiVersion`` ("" for the core group), None when absent."""
    version = document.get("apiVersion")
    if not isinstance(version, str) or not version:
        return None
    return version.rpartition("/")[0]


def identify(document: dict[str, Any], kind: str | None = None) -> str:
    """The workload kind the layout follows: ``VolcanoJob`` for a Volcano Job, the kind
    for a known kind of its own group (or without ``apiVersion``), else
    ``Kind.group`` (an unknown kind, whose templates are searched for)."""
    kind = kind if kind is not None else str(document.get("kind") or "")
    group = api_group(document)
    if kind == "Job" and group == VOLCANO_GROUP:
        return VOLCANO_JOB
    known = GROUPS.get(kind)
    if known is None or group is None or group in known:
        return kind
    return f"{kind}.{group}"


# --- refused kinds ---------------------------------------------------------------------

ARGO_KINDS = frozenset({"Workflow", "WorkflowTemplate", "ClusterWorkflowTemplate", "CronWorkflow"})
SPARK_KINDS = frozenset({"SparkApplication", "ScheduledSparkApplication"})


def refusal(document: dict[str, Any]) -> str | None:
    """Why an object that looks like a workload cannot be probed, and what to pass
    instead; None for every other object."""
    kind = str(document.get("kind") or "")
    group = api_group(document) or ""
    if kind in ARGO_KINDS and group.startswith("argoproj.io"):
        return (
            f"a {kind} is an Argo Workflow: its steps are containers that the Argo "
            "controller runs one after another, not a pod template a probe can run. "
            "Pass the failing step instead: its pod (kubectl get pod POD -o yaml), or a "
            "Job that runs that step's container"
        )
    if kind in SPARK_KINDS and group.startswith("sparkoperator.k8s.io"):
        return (
            f"a {kind} is a Spark application: the Spark operator runs spark-submit, "
            "which starts the driver and then the executors; there is no pod template "
            "a probe can run on its own. Pass the driver pod instead "
            "(kubectl get pod APP-driver -o yaml), or a Job running spark-submit "
            "in local mode with the application's image and conf"
        )
    return None


# --- templates of each kind ------------------------------------------------------------

_SIMPLE = frozenset({"Job", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet"})
_KUBEFLOW = frozenset(
    {"PyTorchJob", "TFJob", "MPIJob", "XGBoostJob", "PaddleJob", "MXJob", "JAXJob"}
)


def template_refs(document: dict[str, Any], kind: str) -> list[PodTemplateRef]:
    """The pod templates of an object of ``kind``, in document order."""
    which = identify(document, kind)
    spec = document.get("spec")
    spec = spec if isinstance(spec, dict) else {}
    if which == "Pod":
        return [PodTemplateRef("", (), "")]
    if which in _SIMPLE:
        return [PodTemplateRef("", ("spec", "template"), "")]
    if which == "CronJob":
        return [PodTemplateRef("", ("spec", "jobTemplate", "spec", "template"), "")]
    finder = _FINDERS.get(which)
    if finder is not None:
        return finder(document, spec)
    replica_refs = _kubeflow_refs(spec)
    if replica_refs or which in _KUBEFLOW:
        return replica_refs
    return generic_refs(document)


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
        for role in replicas:
            element = ("spec", field, role)
            refs.append(
                PodTemplateRef(str(role), (*element, "template"), f"replicas[{role}].", element)
            )
    return refs


def _ray_refs(document: dict[str, Any], spec: dict[str, Any]) -> list[PodTemplateRef]:
    base: tuple[Any, ...] = (
        ("spec", "rayClusterSpec") if document.get("kind") == "RayJob" else ("spec",)
    )
    cluster = resolve(document, base)
    refs: list[PodTemplateRef] = []
    if not isinstance(cluster, dict):
        return refs
    if isinstance(cluster.get("headGroupSpec"), dict):
        refs.append(PodTemplateRef("head", (*base, "headGroupSpec", "template"), "head."))
    for group in _named(cluster.get("workerGroupSpecs"), "groupName"):
        element = (*base, "workerGroupSpecs", ("groupName", group))
        refs.append(PodTemplateRef(group, (*element, "template"), f"workers[{group}].", element))
    return refs


def _replicated_job_refs(
    replicated: Any, base: tuple[Any, ...], prefix: str
) -> list[PodTemplateRef]:
    """A JobSet's replicated jobs (also inside a training runtime's JobSet template)."""
    refs = []
    for name in _named(replicated, "name"):
        element = (*base, "replicatedJobs", ("name", name))
        refs.append(
            PodTemplateRef(
                name, (*element, "template", "spec", "template"), f"{prefix}jobs[{name}].", element
            )
        )
    return refs


def _jobset_refs(document: dict[str, Any], spec: dict[str, Any]) -> list[PodTemplateRef]:
    return _replicated_job_refs(spec.get("replicatedJobs"), ("spec",), "")


def _volcano_refs(document: dict[str, Any], spec: dict[str, Any]) -> list[PodTemplateRef]:
    refs = []
    for name in _named(spec.get("tasks"), "name"):
        element = ("spec", "tasks", ("name", name))
        refs.append(PodTemplateRef(name, (*element, "template"), f"tasks[{name}].", element))
    return refs


def _lws_refs(document: dict[str, Any], spec: dict[str, Any]) -> list[PodTemplateRef]:
    base = ("spec", "leaderWorkerTemplate")
    group = resolve(document, base)
    if not isinstance(group, dict):
        return []
    refs = []
    if isinstance(group.get("leaderTemplate"), dict):
        refs.append(PodTemplateRef("leader", (*base, "leaderTemplate"), "leader."))
    if isinstance(group.get("workerTemplate"), dict):
        refs.append(PodTemplateRef("worker", (*base, "workerTemplate"), "worker."))
    return refs


def _runtime_refs(document: dict[str, Any], spec: dict[str, Any]) -> list[PodTemplateRef]:
    base = ("spec", "template", "spec")
    return _replicated_job_refs(resolve(document, (*base, "replicatedJobs")), base, "")


def _trainjob_refs(document: dict[str, Any], spec: dict[str, Any]) -> list[PodTemplateRef]:
    base = (RUNTIME_FIELD, "spec", "template", "spec")
    replicated = resolve(document, (*base, "replicatedJobs"))
    return _replicated_job_refs(replicated, base, f"{RUNTIME_FIELD}.")


_FINDERS: dict[str, Callable[[dict[str, Any], dict[str, Any]], list[PodTemplateRef]]] = {
    "RayJob": _ray_refs,
    "RayCluster": _ray_refs,
    "JobSet": _jobset_refs,
    VOLCANO_JOB: _volcano_refs,
    "LeaderWorkerSet": _lws_refs,
    "TrainingRuntime": _runtime_refs,
    "ClusterTrainingRuntime": _runtime_refs,
    "TrainJob": _trainjob_refs,
}


def generic_refs(document: dict[str, Any]) -> list[PodTemplateRef]:
    """Pod templates of an unknown kind: any ``template`` mapping with containers."""
    found: list[tuple[Any, ...]] = []

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "template" and is_pod_template(v):
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


def is_pod_template(node: Any) -> bool:
    return (
        isinstance(node, dict)
        and isinstance(node.get("spec"), dict)
        and isinstance(node["spec"].get("containers"), list)
    )


# --- which template a probe runs -------------------------------------------------------

# Roles that coordinate the others, by preference; matched without case, whole names
# first, then as a part of a name (``mpimaster``, ``pytorch-job-master``).
PRIMARY_ROLES = ("coordinator", "chief", "master", "launcher", "driver", "leader", "head")
TRAINER_ANCESTOR = "trainer.kubeflow.org/trainjob-ancestor-step"


def default_role(document: dict[str, Any], kind: str, refs: list[PodTemplateRef]) -> str | None:
    """The role a probe runs when none is asked for (see the module's docstring)."""
    if not refs:
        return None
    roles = [r.role for r in refs]
    named = _declared_role(document, kind, refs)
    if named in roles:
        return named
    lowered = [r.lower() for r in roles]
    for wanted in PRIMARY_ROLES:
        if wanted in lowered:
            return roles[lowered.index(wanted)]
    for wanted in PRIMARY_ROLES:
        for role, low in zip(roles, lowered, strict=True):
            if wanted in low:
                return role
    for role, low in zip(roles, lowered, strict=True):
        if "worker" in low:
            return role
    return roles[0]


def _declared_role(document: dict[str, Any], kind: str, refs: list[PodTemplateRef]) -> str | None:
    """The role the object itself names as its coordinator, if any."""
    which = identify(document, kind)
    if which == "JobSet":
        coordinator = resolve(document, ("spec", "coordinator", "replicatedJob"))
        return str(coordinator) if coordinator else None
    if which == VOLCANO_JOB:
        plugins = resolve(document, ("spec", "plugins"))
        return volcano_master(plugins) if isinstance(plugins, dict) else None
    if which in ("TrainJob", *RUNTIME_KINDS):
        for ref in refs:
            element = resolve(document, ref.element or ())
            labels = resolve(element, ("template", "metadata", "labels"))
            if isinstance(labels, dict) and labels.get(TRAINER_ANCESTOR) == "trainer":
                return ref.role
        return "node"
    return None


def plugin_flags(arguments: Any) -> dict[str, str]:
    """``--name=value`` arguments of a Volcano job plugin, as a mapping."""
    flags: dict[str, str] = {}
    for arg in arguments if isinstance(arguments, list) else []:
        text = str(arg).lstrip("-")
        name, sep, value = text.partition("=")
        if sep:
            flags[name] = value
    return flags


def volcano_master(plugins: dict[str, Any]) -> str | None:
    """The task a Volcano distributed-framework plugin treats as the coordinator."""
    for plugin, flag, default in (
        ("pytorch", "master", "master"),
        ("mpi", "master", "master"),
        ("tensorflow", "chief", "chief"),
    ):
        if plugin in plugins:
            return plugin_flags(plugins[plugin]).get(flag, default)
    return None


def choose(
    document: dict[str, Any], kind: str, refs: list[PodTemplateRef], wanted: str | None, source: str
) -> PodTemplateRef:
    """The template a probe runs: ``wanted`` (``--template``; any case), else the
    default. Raises ``InputError`` naming the templates when ``wanted`` is not one."""
    if not refs:
        raise InputError(
            f"no pod template found in this {kind} (expected e.g. spec.template)",
            source=source,
            field="spec",
        )
    if wanted:
        for ref in refs:
            if ref.role == wanted:
                return ref
        matches = [r for r in refs if r.role.lower() == wanted.lower()]
        if len(matches) == 1:
            return matches[0]
        names = ", ".join(r.role or "(the only one)" for r in refs)
        raise InputError(
            f"no pod template {wanted!r} in this {kind} (templates: {names})",
            source=source,
            field="--template",
        )
    role = default_role(document, kind, refs)
    return next(r for r in refs if r.role == role)


# --- a TrainJob and its runtime --------------------------------------------------------


def runtime_ref(trainjob: dict[str, Any]) -> tuple[str, str]:
    """The (kind, name) of the training runtime a TrainJob uses."""
    ref = resolve(trainjob, ("spec", "runtimeRef"))
    ref = ref if isinstance(ref, dict) else {}
    return str(ref.get("kind") or "ClusterTrainingRuntime"), str(ref.get("name") or "")


def is_trainjob(obj: dict[str, Any]) -> bool:
    return obj.get("kind") == "TrainJob" and api_group(obj) in (None, TRAINER_GROUP)


def bind_runtimes(objects: list[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    """Each TrainJob among ``objects`` with its training runtime (from the same file)
    under ``runtime``: the runtime's JobSet template holds the pod templates the
    Trainer controller runs. A bound runtime is no longer an object of its own.

    Raises ``InputError`` when a TrainJob's runtime is not in the file.
    """
    trainjobs = [o for o in objects if is_trainjob(o)]
    if not trainjobs:
        return objects
    used: set[int] = set()
    bound: dict[int, dict[str, Any]] = {}
    for job in trainjobs:
        kind, name = runtime_ref(job)
        runtime = next(
            (
                o
                for o in objects
                if o.get("kind") == kind
                and isinstance(o.get("metadata"), dict)
                and o["metadata"].get("name") == name
            ),
            None,
        )
        if runtime is None:
            job_name = resolve(job, ("metadata", "name")) or "?"
            raise InputError(
                f"TrainJob '{job_name}' runs on {kind} '{name}', which is not in this file: "
                f"the runtime holds the pod templates a probe runs. Add it as a second "
                f"document (kubectl get {kind.lower()} {name} -o yaml)",
                source=source,
                field="spec.runtimeRef",
            )
        used.add(id(runtime))
        bound[id(job)] = {
            **job,
            RUNTIME_FIELD: {"kind": kind, "spec": runtime.get("spec") or {}},
        }
    return [bound.get(id(o), o) for o in objects if id(o) not in used]
