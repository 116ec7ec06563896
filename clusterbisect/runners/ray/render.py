"""Ray probes rendered as job submissions, and what Ray cannot apply (pure: no Ray needed)."""

from __future__ import annotations

import copy
import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusterbisect.config import RayOptions
from clusterbisect.diff import Change
from clusterbisect.errors import InputError
from clusterbisect.settings import COMMAND, YAML_SEGMENT
from clusterbisect.settings import ENV as ENV_SETTING
from clusterbisect.specs.model import ENV, KUBERNETES, PIP, RAY_JOB, SNAPSHOT, Spec
from clusterbisect.specs.pip import install_lines
from clusterbisect.specs.workload import container_argv, main_container, runtime_env_of, spec_env

# Fields of a Ray job submission (``JobSubmissionClient.submit_job``) a spec may set.
SUBMIT_FIELDS = (
    "entrypoint",
    "runtime_env",
    "metadata",
    "entrypoint_num_cpus",
    "entrypoint_num_gpus",
    "entrypoint_memory",
    "entrypoint_resources",
    "entrypoint_label_selector",
)


# KubeRay RayJob ``spec`` fields that are part of the Ray job itself.
RAYJOB_FIELDS = {
    "entrypoint": "entrypoint",
    "runtimeEnvYAML": "runtime_env",
    "metadata": "metadata",
    "entrypointNumCpus": "entrypoint_num_cpus",
    "entrypointNumGpus": "entrypoint_num_gpus",
    "entrypointResources": "entrypoint_resources",
}


# runtime_env fields that need a container runtime (podman) on the Ray nodes.
CONTAINER_FIELDS = frozenset({"container", "image_uri"})


@dataclass
class Submission:
    """One probe rendered as a Ray job submission (``submit_job`` keyword arguments)."""

    entrypoint: str
    runtime_env: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)  # entrypoint_num_cpus, ...

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {"entrypoint": self.entrypoint, "runtime_env": self.runtime_env}
        if self.metadata:
            out["metadata"] = self.metadata
        out.update({k: v for k, v in self.resources.items() if v is not None})
        return out


def render_submission(
    spec: Spec,
    command: list[str] | None = None,
    options: RayOptions | None = None,
    container: str | None = None,
) -> Submission:
    """The Ray job submission for ``spec`` (already the good spec plus the probe's changes).

    The entrypoint is the spec's, unless ``command`` (the argv after ``--``) is given:
    Ray runs the entrypoint through a shell, so the argv is quoted with ``shlex.join``
    and every argument reaches the workload exactly as given, with no shell expansion.
    The resource ``options`` override what the spec asks for; ``container`` is the
    container of a Kubernetes workload whose env and command make the job.
    """
    options = options or RayOptions()
    fields = _job_fields(spec, container)
    runtime_env = copy.deepcopy(fields.get("runtime_env") or {})
    if not isinstance(runtime_env, dict):
        raise InputError("expected a mapping", source=spec.source, field="runtime_env")
    runtime_env = _normalise_runtime_env(runtime_env, spec.source)
    entrypoint = shlex.join(command) if command else fields.get("entrypoint")
    if not entrypoint or not isinstance(entrypoint, str):
        raise InputError(
            "the Ray job has no entrypoint; give it in the spec or after `--`",
            source=spec.source,
            field="entrypoint",
        )
    metadata = fields.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InputError("expected a mapping of strings", source=spec.source, field="metadata")
    resources: dict[str, Any] = {}
    for name in SUBMIT_FIELDS[3:]:
        if fields.get(name) is not None:
            resources[name] = fields[name]
    if isinstance(resources.get("entrypoint_resources"), str):
        try:  # KubeRay keeps entrypointResources as a JSON string
            resources["entrypoint_resources"] = json.loads(resources["entrypoint_resources"])
        except ValueError:
            raise InputError(
                "expected a JSON mapping", source=spec.source, field="entrypointResources"
            ) from None
    for name in ("entrypoint_num_cpus", "entrypoint_num_gpus", "entrypoint_memory"):
        flag = getattr(options, name)
        if flag is not None:
            resources[name] = flag
    return Submission(
        entrypoint=entrypoint,
        runtime_env=runtime_env,
        metadata={str(k): str(v) for k, v in metadata.items()},
        resources=resources,
    )


def _job_fields(spec: Spec, container: str | None = None) -> dict[str, Any]:
    """The submission fields of a Ray job spec, a KubeRay RayJob, a Kubernetes workload
    or an env file."""
    doc = spec.document
    if spec.format == RAY_JOB:
        return {k: doc.get(k) for k in SUBMIT_FIELDS if doc.get(k) is not None}
    if spec.format == KUBERNETES and spec.kind == "RayJob":
        body = doc.get("spec") or {}
        out = {
            ray: body.get(kube) for kube, ray in RAYJOB_FIELDS.items() if body.get(kube) is not None
        }
        out["runtime_env"] = runtime_env_of(spec)
        return out
    if spec.format == KUBERNETES and main_container(spec) is not None:
        # A Job (or Deployment, PyTorchJob, ...) run as a Ray job: its main container's
        # plain env vars become env_vars, its command and args the entrypoint.
        name = container or main_container(spec)
        fields: dict[str, Any] = {"runtime_env": {"env_vars": spec_env(spec, name)}}
        argv = container_argv(spec, name)
        if argv:
            fields["entrypoint"] = shlex.join(argv)
        return fields
    if spec.format in (ENV, SNAPSHOT):
        # An env dump run on Ray: its variables become the job's env_vars.
        return {"runtime_env": {"env_vars": spec_env(spec)}}
    if spec.format == PIP:
        # A pip freeze run on Ray: its pins are the job's runtime_env pip, which Ray
        # installs (and caches by content) itself; the workload comes after `--`.
        return {"runtime_env": {"pip": install_lines(spec)}}
    raise InputError(
        f"the Ray backend runs Ray job specs, KubeRay RayJobs, Kubernetes workloads, env "
        f"files and pip freezes, not a {spec.kind}; use --backend kubernetes or local",
        source=spec.source,
    )


def _normalise_runtime_env(env: dict[str, Any], source: str) -> dict[str, Any]:
    """Make a runtime_env submittable: string env values, local paths made absolute.

    Relative ``working_dir`` and ``py_modules`` paths are read relative to the spec
    file's directory (like ``docker compose`` does), falling back to the current
    directory; URIs (``s3://``, ``https://``, ``gcs://``) are left alone.
    """
    env_vars = env.get("env_vars")
    if isinstance(env_vars, dict):
        env["env_vars"] = {str(k): _env_text(v) for k, v in env_vars.items() if v is not None}
    base = Path(source).resolve().parent if source and Path(source).is_file() else None
    if isinstance(env.get("working_dir"), str):
        env["working_dir"] = _local_path(env["working_dir"], base)
    if isinstance(env.get("py_modules"), list):
        env["py_modules"] = [
            _local_path(m, base) if isinstance(m, str) else m for m in env["py_modules"]
        ]
    return env


def _local_path(value: str, base: Path | None) -> str:
    if "://" in value or Path(value).is_absolute():
        return value
    if base is not None and (base / value).exists():
        return str((base / value).resolve())
    if Path(value).exists():
        return str(Path(value).resolve())
    return value  # Ray reports it (a submission or runtime_env error, unresolved)


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def why_untestable(
    change: Change, *, rayjob: bool, command_given: bool, podman: bool
) -> str | None:
    """Why Ray cannot apply ``change`` to a probe job, or None when it can."""
    path = change.path
    fields = [s for s in path if isinstance(s, str)]
    if not fields:
        return (
            None
            if change.key.startswith(("runtime_env", "entrypoint"))
            else "not a Ray job setting"
        )
    if rayjob or fields[0] in ("spec", "apiVersion", "kind"):
        if fields[0] != "spec" or len(fields) < 2 or fields[1] not in RAYJOB_FIELDS:
            return (
                "a Kubernetes setting of the RayJob (its Ray cluster, pods or lifecycle); "
                "a probe job on a running Ray cluster cannot apply it, use --backend kubernetes"
            )
        name = RAYJOB_FIELDS[fields[1]]
        inner = fields[2:] if YAML_SEGMENT in path or name == "runtime_env" else []
    elif fields[0] == "env" and change.env_name:
        return None  # an env file: the variables become runtime_env env_vars
    elif fields[0] == "pip":
        return None  # a pip freeze: the pins become runtime_env pip
    elif fields[0] in SUBMIT_FIELDS:
        name, inner = fields[0], fields[1:]
    else:
        return f"{fields[0]!r} is not a field of a Ray job submission"
    if name == "entrypoint" and command_given:
        return (
            "the workload after `--` replaces the entrypoint, so this change would have no effect"
        )
    if name == "runtime_env" and inner and inner[0] in CONTAINER_FIELDS and not podman:
        return f"runtime_env.{inner[0]} needs podman on the Ray nodes, and the local Ray has none"
    return None


def why_untestable_in_workload(
    change: Change, *, container: str | None, command_given: bool
) -> str | None:
    """Why a Ray job cannot apply ``change`` of a Kubernetes workload, or None.

    Only the main container carries over: its plain env vars (as runtime_env env_vars)
    and its command and args (as the entrypoint). The image, resources, volumes and
    the pod's scheduling belong to Kubernetes.
    """
    use_kubernetes = "a Ray job cannot apply it; use --backend kubernetes"
    if container is None or change.container != container:
        return f"a Kubernetes setting outside the {container or 'main'} container; {use_kubernetes}"
    if change.category == ENV_SETTING and change.env_name:
        for value in (change.good, change.bad):
            if value is not None and not isinstance(value, str):
                return "its value is a reference (secret, field) a Ray job cannot resolve"
        return None
    if change.category == COMMAND:
        if command_given:
            return (
                "the workload after `--` replaces the entrypoint, "
                "so this change would have no effect"
            )
        return None
    return (
        f"{change.category} settings belong to the pod and cannot be applied to a Ray job; "
        "use --backend kubernetes"
    )
