"""Flatten a spec into keyed settings, and apply changes back onto a spec.

Keys are stable and readable: ``containers[trainer].env.NCCL_DEBUG``,
``containers[trainer].image``, ``runtime_env.pip.numpy``, ``env.OMP_NUM_THREADS``.
Lists of named things are matched by their key field, never by position
(``NAMED_LISTS``); any other list (``command``, ``args``, ``tolerations``) is one leaf.

An *element* is a member of a named list (a container, a volume, a worker group) or a
Kubeflow replica spec. An element present on one side only becomes one change holding
the whole element, so that applying any subset of changes gives a valid spec.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clusterbisect.specs import kubernetes as k8s
from clusterbisect.specs.model import ENV as ENV_FORMAT
from clusterbisect.specs.model import KUBERNETES, RAY_JOB, SNAPSHOT, Spec
from clusterbisect.specs.model import PIP as PIP_FORMAT
from clusterbisect.specs.noise import EMPTY_IS_ABSENT
from clusterbisect.specs.pip import requirement_key
from clusterbisect.specs.yamlio import YAMLError, dump_yaml, load_yaml, plain

# A path into Spec.document: a str is a mapping key; a ("name", "trainer") tuple is
# the element of a list whose key field ("name") equals "trainer".
PathSegment = str | tuple[str, Any]

# Setting categories, used to group the diff table and to decide what a backend can
# apply: env, image, pip, resources, scheduling, command, metadata, runtime, system, other.
ENV = "env"
IMAGE = "image"
PIP = "pip"
RESOURCES = "resources"
SCHEDULING = "scheduling"
COMMAND = "command"
METADATA = "metadata"
RUNTIME = "runtime"
SYSTEM = "system"
OTHER = "other"
CATEGORIES = (IMAGE, ENV, PIP, COMMAND, RESOURCES, SCHEDULING, RUNTIME, SYSTEM, METADATA, OTHER)

# Path segment meaning "the string here is YAML: parse it, go on inside, re-serialise"
# (KubeRay's ``spec.runtimeEnvYAML``).
YAML_SEGMENT: tuple[str, Any] = ("@yaml", "")
# Key field of a pip requirement inside a list of requirement strings.
PKG_FIELD = "@pkg"

# Named lists and the field that names their elements.
NAMED_LISTS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "env": "name",
    "volumes": "name",
    "imagePullSecrets": "name",
    "resourceClaims": "name",
    "ports": "containerPort",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "hostAliases": "ip",
    "workerGroupSpecs": "groupName",
    "replicatedJobs": "name",
    "tasks": "name",  # a Volcano Job's tasks
}
CONTAINER_LISTS = frozenset({"containers", "initContainers", "ephemeralContainers"})

_SCHEDULING_ANYWHERE = frozenset(
    {"nodeSelector", "affinity", "tolerations", "topologySpreadConstraints", "schedulingGates"}
)
_SCHEDULING_LAST = frozenset(
    {
        "priorityClassName",
        "schedulerName",
        "priority",
        "preemptionPolicy",
        "replicas",
        "parallelism",
        "completions",
        "minReplicas",
        "maxReplicas",
        "numOfHosts",
    }
)
_COMMAND_LAST = frozenset({"command", "args", "entrypoint", "workingDir"})
_RUNTIME_ANYWHERE = frozenset(
    {
        "runtime_env",
        "runtimeEnvYAML",
        "livenessProbe",
        "readinessProbe",
        "startupProbe",
        "lifecycle",
        "runPolicy",
    }
)
_RUNTIME_LAST = frozenset(
    {
        "restartPolicy",
        "backoffLimit",
        "activeDeadlineSeconds",
        "ttlSecondsAfterFinished",
        "terminationGracePeriodSeconds",
        "entrypoint_num_cpus",
        "entrypoint_num_gpus",
        "entrypoint_memory",
        "entrypoint_resources",
    }
)
_SYSTEM_ANYWHERE = frozenset(
    {
        "securityContext",
        "volumes",
        "volumeMounts",
        "volumeDevices",
        "hostNetwork",
        "hostIPC",
        "hostPID",
        "shareProcessNamespace",
        "dnsPolicy",
        "dnsConfig",
        "runtimeClassName",
        "hostAliases",
    }
)


@dataclass(frozen=True)
class Setting:
    """One leaf of a spec."""

    key: str
    path: tuple[PathSegment, ...]
    value: Any
    category: str
    container: str | None = None  # the container this setting belongs to, if any
    env_name: str | None = None  # for env settings: the variable's name


@dataclass(frozen=True)
class Element:
    """A named-list member or replica spec: one change when present on one side only."""

    key: str
    path: tuple[PathSegment, ...]
    category: str
    container: str | None = None


@dataclass
class Flattened:
    """Settings by key, plus the elements (by path) they sit in."""

    settings: dict[str, Setting] = field(default_factory=dict)
    elements: dict[tuple[PathSegment, ...], Element] = field(default_factory=dict)


def flatten(spec: Spec) -> dict[str, Setting]:
    """The spec's settings by key (noise already stripped at load time)."""
    return flatten_elements(spec).settings


def flatten_elements(spec: Spec) -> Flattened:
    """Settings and elements of ``spec`` (``diff`` needs both)."""
    return _Flattener(spec).run()


def category_of(path: tuple[PathSegment, ...], fmt: str) -> str:
    """The category of the setting at ``path`` in a spec of format ``fmt``."""
    fields = [s for s in path if isinstance(s, str)]
    if not fields:
        return OTHER
    if fmt == ENV_FORMAT:
        return ENV
    if fmt == PIP_FORMAT:
        return PIP
    top, last = fields[0], fields[-1]
    if fmt == SNAPSHOT:
        return {"env": ENV, "packages": PIP, "python": RUNTIME}.get(top, SYSTEM)
    names = set(fields)
    for category, applies in _CATEGORY_RULES:
        if applies(top, last, names):
            return category
    return OTHER


# The first rule that applies to a Kubernetes or Ray setting gives its category:
# (category, test of the first field, the last field and every field of its path).
_CATEGORY_RULES: tuple[tuple[str, Callable[[str, str, set[str]], bool]], ...] = (
    (ENV, lambda top, last, names: bool(names & {"env", "env_vars", "envFrom"})),
    (PIP, lambda top, last, names: "pip" in names),
    (
        IMAGE,
        lambda top, last, names: (
            last in ("image", "imagePullPolicy") or "imagePullSecrets" in names
        ),
    ),
    (RESOURCES, lambda top, last, names: "resources" in names),
    (
        SCHEDULING,
        lambda top, last, names: bool(names & _SCHEDULING_ANYWHERE) or last in _SCHEDULING_LAST,
    ),
    (
        METADATA,
        lambda top, last, names: top == "metadata" or bool(names & {"labels", "annotations"}),
    ),
    (COMMAND, lambda top, last, names: last in _COMMAND_LAST),
    (
        RUNTIME,
        lambda top, last, names: bool(names & _RUNTIME_ANYWHERE) or last in _RUNTIME_LAST,
    ),
    (SYSTEM, lambda top, last, names: bool(names & _SYSTEM_ANYWHERE)),
)


def _join(key: str, part: Any) -> str:
    return f"{key}.{part}" if key else str(part)


class _Flattener:
    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.out = Flattened()
        self.templates: dict[tuple[Any, ...], k8s.PodTemplateRef] = {}
        # Elements that hold a whole pod template are keyed like the template's settings.
        self.element_keys: dict[tuple[Any, ...], str] = {}
        if spec.format == KUBERNETES:
            for ref in k8s.template_refs(spec.document, spec.kind):
                self.templates[ref.path] = ref
                if ref.element is not None:
                    name = ref.key_prefix.removesuffix(".")
                    self.element_keys[ref.element] = name

    def run(self) -> Flattened:
        doc = self.spec.document
        if self.spec.format == KUBERNETES:
            if () in self.templates:
                self.template(doc, (), self.templates[()])
            else:
                for k, v in doc.items():
                    if k not in ("apiVersion", "kind"):
                        self.value(v, (k,), str(k), None, k)
        else:
            for k, v in doc.items():
                if self.spec.format == RAY_JOB and k == "runtime_env" and isinstance(v, dict):
                    self.runtime_env(v, (k,), k)
                elif self.spec.format == RAY_JOB and k == "env_vars" and isinstance(v, dict):
                    self.runtime_env({k: v}, (), "")  # an Anyscale job file's env_vars
                elif self.spec.format == RAY_JOB and k == "requirements":
                    self.pip(v, (k,), k)
                else:
                    self.value(v, (k,), str(k), None, k, env_map=(k == "env"))
        return self.out

    def leaf(
        self,
        path: tuple[Any, ...],
        key: str,
        value: Any,
        container: str | None,
        env_name: str | None = None,
        category: str | None = None,
    ) -> None:
        if category is None:
            category = category_of(path, self.spec.format)
        self.out.settings[key] = Setting(key, path, value, category, container, env_name)

    def value(
        self,
        v: Any,
        path: tuple[Any, ...],
        key: str,
        container: str | None,
        fld: Any,
        *,
        env_map: bool = False,
    ) -> None:
        if v is None:
            return
        ref = self.templates.get(path)
        if ref is not None:
            self.template(v, path, ref)
            return
        if isinstance(v, dict):
            self.mapping(v, path, key, container, fld, env_map=env_map)
        elif isinstance(v, list):
            self.sequence(v, path, key, container, fld)
        elif fld == "runtimeEnvYAML" and isinstance(v, str) and self.spec.kind == "RayJob":
            self.runtime_env_yaml(v, path, key, container)
        else:
            self.leaf(path, key, v, container)

    def mapping(
        self,
        v: dict[Any, Any],
        path: tuple[Any, ...],
        key: str,
        container: str | None,
        fld: Any,
        *,
        env_map: bool,
    ) -> None:
        if not v:
            if fld not in EMPTY_IS_ABSENT:
                self.leaf(path, key, {}, container)
            return
        if path in self.element_keys:
            self.out.elements[path] = Element(self.element_keys[path], path, OTHER, container)
        for k, x in v.items():
            if env_map and not isinstance(x, dict | list):
                # env.X in env files and snapshots: the variable is the leaf.
                self.leaf((*path, k), _join(key, k), x, container, env_name=str(k))
            else:
                self.value(x, (*path, k), _join(key, k), container, k)

    def runtime_env_yaml(
        self, text: str, path: tuple[Any, ...], key: str, container: str | None
    ) -> None:
        """A RayJob's runtimeEnvYAML: its settings as a runtime_env's, if it parses."""
        try:
            parsed = load_yaml(text)
        except YAMLError:
            parsed = text
        if isinstance(parsed, dict):
            self.runtime_env(parsed, (*path, YAML_SEGMENT), "runtime_env")
        elif parsed is not None:
            self.leaf(path, key, text, container)

    def sequence(
        self, v: list[Any], path: tuple[Any, ...], key: str, container: str | None, fld: Any
    ) -> None:
        key_field = NAMED_LISTS.get(fld) if isinstance(fld, str) else None
        if not v:
            if key_field is None:
                self.leaf(path, key, [], container)
            return
        if key_field is None or not _named_ok(v, key_field):
            self.leaf(path, key, v, container)
            return
        for el in v:
            ident = el[key_field]
            p = (*path, (key_field, ident))
            if fld == "env":
                value = el["valueFrom"] if "valueFrom" in el else el.get("value", "")
                self.leaf(p, f"{key}.{ident}", value, container, str(ident), ENV)
                continue
            c = str(ident) if fld in CONTAINER_LISTS else container
            ekey = self.element_keys.get(p, f"{key}[{ident}]")
            self.out.elements[p] = Element(ekey, p, category_of(p, self.spec.format), c)
            rest = [(k, x) for k, x in el.items() if k != key_field]
            if not rest:
                self.leaf(p, ekey, el, c)
            # Fields outside a pod template keep their path-shaped key
            # (``spec.replicatedJobs[workers].replicas``): no clash with pod fields.
            for k, x in rest:
                self.value(x, (*p, k), f"{key}[{ident}].{k}", c, k)

    def template(self, t: Any, path: tuple[Any, ...], ref: k8s.PodTemplateRef) -> None:
        base = ref.key_prefix[:-1] if ref.key_prefix.endswith(".") else ref.key_prefix
        if not isinstance(t, dict):
            self.leaf(path, base or "template", t, None)
            return
        for k, x in t.items():
            if k == "metadata":
                mkey = "metadata" if path == () else _join(base, "template")
                self.value(x, (*path, k), mkey, None, k)
            elif k == "spec" and isinstance(x, dict):
                for sk, sx in x.items():
                    self.value(sx, (*path, k, sk), _join(base, sk), None, sk)
            elif path == () and k in ("apiVersion", "kind"):
                continue
            else:
                self.value(x, (*path, k), _join(base, k), None, k)

    def runtime_env(self, env: dict[str, Any], path: tuple[Any, ...], key: str) -> None:
        for k, x in env.items():
            p, kk = (*path, k), _join(key, k)
            if k == "pip":
                self.pip(x, p, kk)
            elif k == "env_vars" and isinstance(x, dict):
                for name, val in x.items():
                    if val is not None:
                        self.leaf((*p, name), f"{kk}.{name}", val, None, env_name=str(name))
            else:
                self.value(x, p, kk, None, k)

    def pip(self, x: Any, path: tuple[Any, ...], key: str) -> None:
        if isinstance(x, list):
            self.pip_list(x, path, key)
        elif isinstance(x, dict):
            for k, y in x.items():
                if k == "packages" and isinstance(y, list):
                    self.pip_list(y, (*path, k), key)
                else:
                    self.value(y, (*path, k), _join(key, k), None, k)
        elif x is not None:
            self.leaf(path, key, x, None)

    def pip_list(self, items: list[Any], path: tuple[Any, ...], key: str) -> None:
        if not items:
            return
        if not all(isinstance(s, str) for s in items):
            self.leaf(path, key, items, None)
            return
        idents = [requirement_key(s) for s in items]
        if len(set(idents)) != len(idents):
            self.leaf(path, key, items, None)
            return
        for s, ident in zip(items, idents, strict=True):
            self.leaf((*path, (PKG_FIELD, ident)), f"{key}.{ident}", s, None, category=PIP)


def _named_ok(items: list[Any], key_field: str) -> bool:
    """Every element is a mapping with a distinct scalar ``key_field``."""
    seen = set()
    for el in items:
        if not isinstance(el, dict):
            return False
        ident = el.get(key_field)
        if ident is None or isinstance(ident, dict | list) or ident in seen:
            return False
        seen.add(ident)
    return True


# --- applying changes ----------------------------------------------------------------


class _Node:
    __slots__ = ("has_op", "kids", "value")

    def __init__(self) -> None:
        self.has_op = False
        self.value: Any = None
        self.kids: dict[Any, _Node] = {}


def normalize_path(path: Any) -> tuple[PathSegment, ...]:
    """A path as tuples again (after a JSON round trip turned its selectors into lists)."""
    return tuple(tuple(seg) if isinstance(seg, list) else seg for seg in path)


def apply_changes(spec: Spec, changes: Any) -> Spec:
    """A new spec: ``spec`` with ``changes`` applied (each change's ``bad`` side).

    Removed changes delete their setting; mappings and lists emptied by a removal are
    pruned. Removals go first, so a value that changes shape (a leaf becoming a
    mapping) ends up right. ``changes`` is any iterable of ``diff.Change``.
    """
    removals = _Node()
    sets = _Node()
    for change in changes:
        path = normalize_path(change.path)
        if not path:
            continue
        node = removals if change.change == "removed" else sets
        for seg in path:
            node = node.kids.setdefault(seg, _Node())
        node.has_op = True
        node.value = change.bad
    doc = plain(spec.document)  # unshared: an edit must land in one place only
    if removals.kids:
        doc = _apply_dict(doc, removals.kids, removing=True)
    if sets.kids:
        doc = _apply_dict(doc, sets.kids, removing=False)
    return Spec(
        format=spec.format,
        kind=spec.kind,
        source=spec.source,
        document=doc,
        api_version=spec.api_version,
        extra=copy.deepcopy(spec.extra),
    )


def _apply_kids(target: Any, kids: dict[Any, _Node], removing: bool, fld: Any) -> Any:
    if fld == "pip":
        target, kids = _pip_shape(target, kids, removing)
    first = next(iter(kids))
    if first == YAML_SEGMENT:
        if removing and not isinstance(target, str):
            return target
        try:
            parsed = load_yaml(target) if isinstance(target, str) else None
        except YAMLError:
            parsed = None
        inner = kids[first].kids
        result = _apply_dict(parsed if isinstance(parsed, dict) else {}, inner, removing)
        return dump_yaml(result) if result else ""
    if isinstance(first, tuple):
        return _apply_list(target, kids, removing, fld)
    return _apply_dict(target, kids, removing)


def _pip_shape(target: Any, kids: dict[Any, _Node], removing: bool) -> tuple[Any, dict[Any, _Node]]:
    """Reconcile runtime_env ``pip`` as a list and as ``{"packages": [...], ...}``."""
    by_package = {s: n for s, n in kids.items() if isinstance(s, tuple)}
    options = {s: n for s, n in kids.items() if not isinstance(s, tuple)}
    if not options and not isinstance(target, dict):
        return target, kids
    if isinstance(target, list) and not removing:
        target = {"packages": target}
    if by_package:
        packages = options.setdefault("packages", _Node())
        packages.kids.update(by_package)
    return target, options


def _emptied(value: Any) -> bool:
    return value == {} or value == [] or value == ""


def _apply_dict(target: Any, kids: dict[Any, _Node], removing: bool) -> Any:
    if not isinstance(target, dict):
        if removing:
            return target
        target = {}
    for seg, node in kids.items():
        if node.has_op:
            if removing:
                target.pop(seg, None)
            else:
                target[seg] = copy.deepcopy(node.value)
        if node.kids and (seg in target or not removing):
            was_empty = _emptied(target.get(seg))  # before: the child mutates in place
            target[seg] = _apply_kids(target.get(seg), node.kids, removing, seg)
            if removing and _emptied(target[seg]) and not was_empty:
                del target[seg]
    return target


def _element_ident(el: Any, key_field: str) -> Any:
    if key_field == PKG_FIELD:
        return requirement_key(el) if isinstance(el, str) else None
    return el.get(key_field) if isinstance(el, dict) else None


def _make_element(list_field: Any, key_field: str, ident: Any, value: Any) -> Any:
    if key_field == PKG_FIELD:
        return value
    if list_field == "env":
        if isinstance(value, dict):
            return {"name": ident, "valueFrom": copy.deepcopy(value)}
        return {"name": ident, "value": value}
    element = copy.deepcopy(value)
    if isinstance(element, dict) and key_field not in element:
        element = {key_field: ident, **element}
    return element


def _apply_list(target: Any, kids: dict[Any, _Node], removing: bool, fld: Any) -> Any:
    if not isinstance(target, list):
        if removing:
            return target
        target = []
    index = _element_index(target, {seg[0] for seg in kids})
    drop: set[int] = set()
    for seg, node in kids.items():
        key_field, ident = seg
        i: int | None = index.get(seg)
        if node.has_op and removing:
            if i is not None:
                drop.add(i)
        elif node.has_op:
            element = _make_element(fld, key_field, ident, node.value)
            if i is None:
                target.append(element)
                i = index[seg] = len(target) - 1
            else:
                target[i] = element
        if node.kids and (i is not None or not removing):
            if i is None:
                target.append({key_field: ident})
                i = index[seg] = len(target) - 1
            target[i] = _apply_dict(target[i], node.kids, removing)
    if drop:
        target = [el for j, el in enumerate(target) if j not in drop]
    return target


def _element_index(target: list[Any], key_fields: set[Any]) -> dict[Any, int]:
    """Where each named element is: ``(key_field, ident) -> position`` (the first)."""
    index: dict[Any, int] = {}
    for key_field in key_fields:
        for pos, el in enumerate(target):
            ident = _element_ident(el, key_field)
            if ident is not None:
                index.setdefault((key_field, ident), pos)
    return index
