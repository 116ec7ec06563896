"""Ray probes rendered as job submissions, and what Ray cannot apply (pure: no Ray needed)."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusterbisect.config import RayOptions
from clusterbisect.diff import Change
from clusterbisect.errors import InputError
from clusterbisect.runners.base import NotCarried
from clusterbisect.settings import COMMAND, YAML_SEGMENT
from clusterbisect.settings import ENV as ENV_SETTING
from clusterbisect.specs.model import ENV, KUBERNETES, PIP, RAY_JOB, SNAPSHOT, Spec
from clusterbisect.specs.pip import install_lines
from clusterbisect.specs.ray import ANYSCALE_CLUSTER_FIELDS, ANYSCALE_RUNTIME_FIELDS
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


# Why an Anyscale job file's cluster fields (compute config, image, retries) are left out.
ANYSCALE_REASON = (
    "describes the cluster an Anyscale job runs on (or how it is retried), not the "
    "Ray job: probes run on the Ray backend's cluster, once each"
)

# runtime_env fields that need a container runtime (podman) on the Ray nodes.
CONTAINER_FIELDS = frozenset({"container", "image_uri"})


# Variables Ray itself sets in every job's driver: a probe cannot run without them.
RAY_SETS = {
    "PATH": "for the runtime_env's executables",
    "PYTHONPATH": "for the working_dir and py_modules",
    "VIRTUAL_ENV": "for a pip runtime_env",
}
RAY_PREFIX = "RAY_"  # RAY_ADDRESS, RAY_JOB_CONFIG_JSON_ENV_VAR, ...: how the driver finds Ray


# Left out of a working_dir that clusterbisect ships (the current directory or
# --working-dir): version control, virtualenvs and caches (large, and the job's
# packages come from its runtime_env), and session state (its logs change between
# probes, which would make every probe's package new, and it holds a local Ray's token).
DEFAULT_EXCLUDES = (
    ".git",
    ".hg",
    ".svn",
    ".venv",
    "venv",
    ".tox",
    ".nox",
    "node_modules",
    "__pycache__",
    "*.pyc",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    ".clusterbisect",
)

_PYTHON = re.compile(r"^python(\d+(\.\d+)*)?$")


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
    *,
    env_names: Sequence[str] = (),
    avoid: Sequence[str] = (),
) -> Submission:
    """The Ray job submission for ``spec`` (already the good spec plus the probe's changes).

    The entrypoint is the spec's, unless ``command`` (the argv after ``--``) is given:
    Ray runs the entrypoint through a shell, so the argv is quoted with ``shlex.join``
    and every argument reaches the workload exactly as given, with no shell expansion.
    The resource ``options`` override what the spec asks for; ``container`` is the
    container of a Kubernetes workload whose env and command make the job.

    Without a working_dir in the spec, ``options.working_dir`` is shipped (with
    :data:`DEFAULT_EXCLUDES`); the directories in ``avoid`` (the session's state) are
    left out of any local working_dir. For an env dump or a Kubernetes workload, where
    a variable that is not set is absent, the variables of ``env_names`` the probe does
    not set are unset for the workload (see :func:`unset_wrapper`).
    """
    options = options or RayOptions()
    fields = _job_fields(spec, container)
    runtime_env = copy.deepcopy(fields.get("runtime_env") or {})
    if not isinstance(runtime_env, dict):
        raise InputError("expected a mapping", source=spec.source, field="runtime_env")
    runtime_env = _normalise_runtime_env(runtime_env, spec.source)
    ship_working_dir(runtime_env, options.working_dir, avoid)
    argv = list(command or fields.get("argv") or [])
    entrypoint = shlex.join(argv) if argv else fields.get("entrypoint")
    if not entrypoint or not isinstance(entrypoint, str):
        raise InputError(
            "the Ray job has no entrypoint; give it in the spec or after `--`",
            source=spec.source,
            field="entrypoint",
        )
    if argv and fields.get("process_env"):
        entrypoint = shlex.join(unset_wrapper(argv, env_names, runtime_env.get("env_vars")))
    metadata = fields.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InputError("expected a mapping of strings", source=spec.source, field="metadata")
    return Submission(
        entrypoint=entrypoint,
        runtime_env=runtime_env,
        metadata={str(k): str(v) for k, v in metadata.items()},
        resources=_resources(spec, fields, options),
    )


def _resources(spec: Spec, fields: dict[str, Any], options: RayOptions) -> dict[str, Any]:
    """The entrypoint resources: the spec's, overridden by the flags."""
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
    return resources


def unset_wrapper(argv: list[str], env_names: Sequence[str], env_vars: Any) -> list[str]:
    """``argv`` started through ``env -u NAME ... --`` for every name of ``env_names``
    the probe does not set (Ray's own variables excepted).

    A runtime_env can set variables, never remove them: the driver inherits the Ray
    node's environment. An env dump or a container's env lists the process's whole
    environment, so a variable the probe does not set must be absent, as in the local
    backend. Only the driver and its child processes are affected; Ray tasks and actors
    get the node's environment plus the runtime_env.
    """
    given = env_vars if isinstance(env_vars, dict) else {}
    unset = [n for n in env_names if n not in given and ray_sets(n) is None]
    if not unset:
        return argv
    return ["env", *(part for name in unset for part in ("-u", name)), "--", *argv]


def ray_sets(name: str) -> str | None:
    """Why Ray sets variable ``name`` in every job's driver itself, or None."""
    if name.startswith(RAY_PREFIX):
        return "to connect the driver to its cluster"
    return RAY_SETS.get(name)


def ship_working_dir(
    runtime_env: dict[str, Any], default: str | None, avoid: Sequence[str]
) -> None:
    """Give ``runtime_env`` the ``default`` working_dir (with :data:`DEFAULT_EXCLUDES`)
    when it has none, and leave the ``avoid`` directories out of a local one."""
    if "working_dir" not in runtime_env:
        if not default:
            return
        runtime_env["working_dir"] = default
        runtime_env["excludes"] = [*(runtime_env.get("excludes") or []), *DEFAULT_EXCLUDES]
    working_dir = runtime_env["working_dir"]
    if not isinstance(working_dir, str) or "://" in working_dir:
        return
    inside = []
    for path in avoid:
        relative = os.path.relpath(os.path.abspath(path), os.path.abspath(working_dir))
        if relative != "." and not relative.startswith(".."):
            inside.append("/" + Path(relative).as_posix())  # anchored at the working_dir
    excludes = list(runtime_env.get("excludes") or [])
    excludes += [pattern for pattern in inside if pattern not in excludes]
    if excludes:
        runtime_env["excludes"] = excludes


def job_python(
    spec: Spec, command: list[str] | None = None, container: str | None = None
) -> str | None:
    """The Python interpreter the job's entrypoint names (``python``, ``python3.11``,
    ``/opt/venv/bin/python``), or None when it starts something else."""
    fields = _job_fields(spec, container)
    argv = list(command or fields.get("argv") or [])
    if not argv and isinstance(fields.get("entrypoint"), str):
        try:
            argv = shlex.split(fields["entrypoint"])
        except ValueError:
            return None
    while argv and ("=" in argv[0] or Path(argv[0]).name == "env"):
        argv = argv[1:]  # `env`, `VAR=value`: the interpreter comes after
        while argv and argv[0].startswith("-"):
            argv = argv[1:]
    if argv and _PYTHON.match(Path(argv[0]).name):
        return argv[0]
    return None


def _job_fields(spec: Spec, container: str | None = None) -> dict[str, Any]:
    """The submission fields of a Ray job spec, a KubeRay RayJob, a Kubernetes workload
    or an env file."""
    doc = spec.document
    if spec.format == RAY_JOB:
        submit = {k: doc.get(k) for k in SUBMIT_FIELDS if doc.get(k) is not None}
        submit["runtime_env"] = runtime_env_of(spec)  # with an Anyscale file's working_dir...
        return submit
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
        return {
            "runtime_env": {"env_vars": spec_env(spec, name)},
            "argv": container_argv(spec, name),
            "process_env": True,
        }
    if spec.format in (ENV, SNAPSHOT):
        # An env dump run on Ray: its variables become the job's env_vars.
        return {"runtime_env": {"env_vars": spec_env(spec)}, "process_env": True}
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
        # An env file: the variables become runtime_env env_vars.
        return _ray_sets_reason(change, change.env_name)
    elif fields[0] == "pip":
        return None  # a pip freeze: the pins become runtime_env pip
    elif fields[0] in SUBMIT_FIELDS:
        name, inner = fields[0], fields[1:]
    elif fields[0] in ANYSCALE_RUNTIME_FIELDS:  # an Anyscale job file's runtime fields
        name, inner = "runtime_env", [ANYSCALE_RUNTIME_FIELDS[fields[0]], *fields[1:]]
    elif fields[0] in ANYSCALE_CLUSTER_FIELDS:
        return ANYSCALE_REASON
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
        return _ray_sets_reason(change, change.env_name)
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


def _ray_sets_reason(change: Change, name: str) -> str | None:
    """Why a variable that one side does not set cannot be tested: Ray sets it itself."""
    why = ray_sets(name)
    if why is None or (change.good is not None and change.bad is not None):
        return None
    return (
        f"Ray sets {name} in every job's driver itself ({why}), so a probe cannot run "
        "without it; a value in both specs could be tested"
    )


def not_carried(spec: Spec, where: str) -> list[NotCarried]:
    """What of the good spec a Ray job probe leaves out: an Anyscale file's cluster
    fields, a RayJob's own Ray cluster and lifecycle, a workload's pod."""
    doc = spec.document
    if spec.format == RAY_JOB:
        return [
            NotCarried(field, doc[field], ANYSCALE_REASON)
            for field in doc
            if field in ANYSCALE_CLUSTER_FIELDS and field != "name"
        ]
    if spec.format != KUBERNETES:
        return []
    body = doc.get("spec") or {}
    if spec.kind == "RayJob":
        return [
            NotCarried(
                f"spec.{field}",
                "(the RayJob's Ray cluster)" if field == "rayClusterSpec" else body[field],
                f"a Kubernetes setting of the RayJob: probes are Ray jobs on {where}",
            )
            for field in body
            if field not in RAYJOB_FIELDS
        ]
    return [
        NotCarried(
            "the pod template",
            "(image, resources, volumes, scheduling)",
            f"a Ray job runs the main container's command and env only, on {where}",
        )
    ]


def kept(submission: Submission, grace: float) -> Submission:
    """The submission with its entrypoint under the local backend's keeper
    (``reaper.py --wrap``, a child subreaper), for a job that runs on this machine (the
    session's own Ray): what the workload leaves running (``cmd &``, a ``setsid``
    daemon) is ended with it, which Ray does not do. A ``container``/``image_uri``
    runtime_env is left alone (the keeper's interpreter is not in the image)."""
    if CONTAINER_FIELDS & set(submission.runtime_env):
        return submission
    from clusterbisect.runners.reaper import wrapped_command

    argv = wrapped_command(["/bin/sh", "-c", submission.entrypoint], grace)
    return dataclasses.replace(submission, entrypoint=shlex.join(argv))
