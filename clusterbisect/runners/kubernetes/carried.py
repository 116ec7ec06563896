"""What of a spec reaches a probe Job, and why the rest does not (pure).

``untestable`` judges the session's changes (those left out of the search, with the
reason); ``not_carried`` lists the good spec's own settings that no probe carries
(job-level settings of a workload probed as one pod, the templates not probed, what a
probe Job replaces), for the report and the dry run. Both ask :class:`Probed`, which
knows the template a probe runs and what its operator's emulation carries
(``operators.carries``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from clusterbisect.diff import Change
from clusterbisect.redact import redact_value, setting_is_secret
from clusterbisect.runners.base import NotCarried
from clusterbisect.runners.kubernetes import isolation, operators
from clusterbisect.runners.kubernetes.render import (
    CONTROLLER_LABELS,
    RenderOptions,
    main_container_name,
    probe_template,
    selector_labels,
    template_of,
    where_probes_run,
)
from clusterbisect.settings import PathSegment, flatten
from clusterbisect.specs.kubernetes import PodTemplateRef, pod_templates
from clusterbisect.specs.model import Spec


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
        other = probed.other_template(setting.path, element=True)
        if other is not None:
            if other.key_prefix not in others_seen:
                others_seen.add(other.key_prefix)
                name = other.key_prefix.removesuffix(".") or other.role
                out.append(NotCarried(name, "(pod template)", probed.why_other(other)))
            continue
        reason = probed.why(setting.path)
        last = setting.path[-1] if setting.path else None
        if reason and AS_PROBED.get(str(last), object()) != setting.value:
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


# Values a probe has anyway: a job-level setting with one of these is carried.
AS_PROBED: dict[str, Any] = {
    **dict.fromkeys(("replicas", "parallelism", "completions", "size", "numNodes"), 1),
    **dict.fromkeys(("minAvailable", "numOfHosts"), 1),
    "backoffLimit": 0,
    "maxRetry": 0,
    "restartPolicy": "Never",
    "suspend": False,
}

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
        ),
        _RUNS_ONCE,
    ),
    "cleanPodPolicy": "probe Jobs are deleted with their pods when they end",
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
    "dependsOn": "the probe runs this template alone: what it depends on does not run first",
    "svc": (
        "the other tasks' hosts (/etc/volcano/*.host, their VC_*_HOSTS) do not exist for "
        "a probe; it gets its own task's VC_<TASK>_HOSTS=localhost only"
    ),
    "ssh": "no SSH keys are made between a probe and peers it does not have",
    "mpi": "MPI launchers (hostfiles, SSH between pods) are not emulated for a probe",
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

    def other_template(
        self, path: tuple[PathSegment, ...], *, element: bool = False
    ) -> PodTemplateRef | None:
        """The template, other than the probed one, that ``path`` is in (with
        ``element``: or in the replica spec, task or replicated job that holds it)."""
        for other in self.refs:
            where = other.element if element and other.element is not None else other.path
            if other != self.ref and path[: len(where)] == tuple(where):
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
                if self.spec.kind == "Pod":
                    return "a label of the Pod, which a Service may select; probe pods drop it"
                return (
                    "a selector label of the workload; probe pods drop it so they join no Service"
                )
            return "a controller-managed label" if label in CONTROLLER_LABELS else None
        if rest[:1] == ("metadata",) and rest[1:2] != ("annotations",):
            return "pod metadata that a probe Job generates itself"
        if rest == ("spec", "restartPolicy"):
            return "probe Jobs always run with restartPolicy Never"
        if rest[:1] == ("spec",) and len(rest) == 2 and rest[1] in isolation.COMPUTED_BY_ADMISSION:
            return "computed by admission from priorityClassName; probes let admission compute it"
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
        if path[:2] == ("metadata", "labels") and len(path) > 2:
            wanted = self.options.admission_labels
            if isolation.admission_labels({str(path[2]): ""}, wanted):
                return None  # copied onto the probe Job for admission (Kueue's queue)
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
