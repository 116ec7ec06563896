"""Ray jobs as specs: ``entrypoint`` plus ``runtime_env`` (YAML or JSON).

Accepts a job submission (``entrypoint``, ``runtime_env``, ``metadata``,
``entrypoint_num_cpus``, ...), the job details that ``ray job status``/the Jobs
API return (run bookkeeping, ids, status, times, driver info, is noise), and an
Anyscale-style job file, whose ``working_dir``, ``requirements``, ``env_vars``,
``py_modules`` and ``excludes`` sit at the top level: they belong to the job's
runtime_env (:func:`runtime_env`), and the rest of such a file (the compute config,
the image, retries) describes the cluster (:data:`ANYSCALE_CLUSTER_FIELDS`).
"""

from __future__ import annotations

from typing import Any

from clusterbisect.errors import InputError
from clusterbisect.specs.model import RAY_JOB, Spec
from clusterbisect.specs.yamlio import plain

JOB_NOISE = frozenset(
    {
        "job_id",
        "submission_id",
        "status",
        "message",
        "error_type",
        "start_time",
        "end_time",
        "driver_agent_http_address",
        "driver_node_id",
        "driver_exit_code",
        "driver_info",
        "type",
    }
)


# Top-level fields of an Anyscale job file that are runtime_env fields.
ANYSCALE_RUNTIME_FIELDS = {
    "working_dir": "working_dir",
    "excludes": "excludes",
    "requirements": "pip",
    "env_vars": "env_vars",
    "py_modules": "py_modules",
    "py_executable": "py_executable",
}
# The other fields of an Anyscale job file: where and how the job runs, not the job.
ANYSCALE_CLUSTER_FIELDS = frozenset(
    {
        "name",
        "image_uri",
        "containerfile",
        "compute_config",
        "cloud",
        "project",
        "project_id",
        "cluster_env",
        "build_id",
        "ray_version",
        "job_queue_config",
        "max_retries",
        "timeout_s",
        "tags",
    }
)


def runtime_env(doc: dict[str, Any]) -> dict[str, Any]:
    """The job's runtime_env: ``runtime_env``, plus an Anyscale job file's top-level
    runtime fields (``runtime_env``'s own entries win; ``env_vars`` are merged)."""
    env = dict(doc.get("runtime_env") or {}) if isinstance(doc.get("runtime_env"), dict) else {}
    for field, name in ANYSCALE_RUNTIME_FIELDS.items():
        value = doc.get(field)
        if value is None:
            continue
        if name == "env_vars" and isinstance(value, dict):
            inner = env.get("env_vars")
            env["env_vars"] = {**value, **(inner if isinstance(inner, dict) else {})}
        else:
            env.setdefault(name, value)
    return env


def is_ray_job(doc: dict[str, Any]) -> bool:
    """A mapping with ``entrypoint`` or ``runtime_env`` and no Kubernetes ``kind``."""
    return "kind" not in doc and ("entrypoint" in doc or "runtime_env" in doc)


def parse(doc: dict[str, Any], source: str) -> Spec:
    """Normalise a Ray job mapping into a spec (noise stripped, fields checked)."""
    out = {k: plain(v) for k, v in doc.items() if k not in JOB_NOISE}
    entrypoint = out.get("entrypoint")
    if entrypoint is not None and not isinstance(entrypoint, str):
        raise InputError("expected a command string", source=source, field="entrypoint")
    runtime_env = out.get("runtime_env")
    if runtime_env is None:
        out.pop("runtime_env", None)
    elif not isinstance(runtime_env, dict):
        raise InputError("expected a mapping", source=source, field="runtime_env")
    else:
        check_runtime_env(runtime_env, source, "runtime_env")
    if out.get("env_vars") is not None and not isinstance(out["env_vars"], dict):
        raise InputError("expected a mapping", source=source, field="env_vars")
    requirements = out.get("requirements")
    if requirements is not None and not isinstance(requirements, list | str):
        raise InputError(
            "expected a list of requirements or a requirements file",
            source=source,
            field="requirements",
        )
    return Spec(format=RAY_JOB, kind="RayJobSpec", source=source, document=out)


def check_runtime_env(runtime_env: dict[str, Any], source: str, field: str) -> None:
    """Raise ``InputError`` for malformed ``env_vars`` or ``pip`` entries."""
    env_vars = runtime_env.get("env_vars")
    if env_vars is not None and not isinstance(env_vars, dict):
        raise InputError("expected a mapping", source=source, field=f"{field}.env_vars")
    pip = runtime_env.get("pip")
    packages = pip.get("packages") if isinstance(pip, dict) else pip
    if packages is not None and not isinstance(packages, list | str):
        raise InputError("expected a list of requirements", source=source, field=f"{field}.pip")
    if isinstance(packages, list) and not all(isinstance(p, str) for p in packages):
        raise InputError("expected requirement strings", source=source, field=f"{field}.pip")
