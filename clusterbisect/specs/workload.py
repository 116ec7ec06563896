"""What a spec runs: its main container, that container's argv and env, a Ray runtime_env.

Runners read a probe's workload through these accessors, whatever the spec's format.
"""

from __future__ import annotations

from typing import Any

from clusterbisect.specs import kubernetes as k8s
from clusterbisect.specs import ray
from clusterbisect.specs.model import ENV as ENV_FORMAT
from clusterbisect.specs.model import KUBERNETES, RAY_JOB, SNAPSHOT, Spec
from clusterbisect.specs.yamlio import YAMLError, load_yaml


def _primary_template(spec: Spec) -> dict[str, Any]:
    """The primary pod template of a Kubernetes spec, ``{}`` when it has none."""
    refs = k8s.pod_templates(spec) if spec.format == KUBERNETES else []
    template = k8s.resolve(spec.document, refs[0].path) if refs else None
    return template if isinstance(template, dict) else {}


def _primary_pod_spec(spec: Spec) -> dict[str, Any] | None:
    pod_spec = _primary_template(spec).get("spec")
    return pod_spec if isinstance(pod_spec, dict) else None


def main_container(spec: Spec) -> str | None:
    """The container a probe's workload runs in (Kubernetes only).

    The ``kubectl.kubernetes.io/default-container`` annotation wins; otherwise the
    first container of the primary pod template.
    """
    template = _primary_template(spec)
    containers = (_primary_pod_spec(spec) or {}).get("containers")
    names = [c.get("name") for c in containers or [] if isinstance(c, dict) and c.get("name")]
    meta = template.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    if isinstance(annotations, dict):
        default = annotations.get("kubectl.kubernetes.io/default-container")
        if default in names:
            return str(default)
    return str(names[0]) if names else None


def container_argv(spec: Spec, container: str | None = None) -> list[str]:
    """The command and args of a Kubernetes container (default: the main container) in
    the primary pod template, as one argv; ``[]`` when it sets neither."""
    if spec.format != KUBERNETES:
        return []
    name = container or main_container(spec)
    pod_spec = _primary_pod_spec(spec) or {}
    for c in pod_spec.get("containers") or []:
        if isinstance(c, dict) and c.get("name") == name:
            parts = [*(c.get("command") or []), *(c.get("args") or [])]
            return [str(part) for part in parts]
    return []


def runtime_env_of(spec: Spec) -> dict[str, Any]:
    """The Ray runtime_env of a Ray job spec (with an Anyscale job file's top-level
    runtime fields) or a RayJob (parsed), else ``{}``."""
    if spec.format == RAY_JOB:
        return ray.runtime_env(spec.document)
    if spec.format == KUBERNETES and spec.kind == "RayJob":
        text = (spec.document.get("spec") or {}).get("runtimeEnvYAML")
        try:
            parsed = load_yaml(text) if isinstance(text, str) else None
        except YAMLError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def spec_env(spec: Spec, container: str | None = None) -> dict[str, str]:
    """Plain environment variables the spec sets for its workload.

    Kubernetes: the literal ``value`` env entries of ``container`` (default: the main
    container) in the primary pod template (``valueFrom`` entries are skipped); for a
    RayJob, its runtime_env ``env_vars`` on top. Ray job: ``runtime_env.env_vars``.
    Env file / snapshot: every variable. pip freeze: none.
    """
    env: dict[str, str] = {}
    if spec.format == KUBERNETES:
        name = container or main_container(spec)
        pod_spec = _primary_pod_spec(spec) or {}
        for field_name in ("containers", "initContainers"):
            for c in pod_spec.get(field_name) or []:
                if isinstance(c, dict) and c.get("name") == name:
                    for entry in c.get("env") or []:
                        if isinstance(entry, dict) and "name" in entry and "valueFrom" not in entry:
                            env[str(entry["name"])] = _env_text(entry.get("value", ""))
                    break
    elif spec.format in (ENV_FORMAT, SNAPSHOT):
        for k, v in (spec.document.get("env") or {}).items():
            env[str(k)] = _env_text(v)
    env_vars = runtime_env_of(spec).get("env_vars")
    if isinstance(env_vars, dict):
        env.update({str(k): _env_text(v) for k, v in env_vars.items() if v is not None})
    return env


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)
