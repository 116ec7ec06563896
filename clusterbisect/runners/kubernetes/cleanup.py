"""Deleting what clusterbisect left in a namespace, found by its labels."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clusterbisect.config import KubeConnection
from clusterbisect.runners.kubernetes import rayjobs, render
from clusterbisect.runners.kubernetes.client import Api, Connection, connect, settings_of


def cleanup(
    session_id: str | None = None,
    conn: Connection | None = None,
    *,
    options: KubeConnection | None = None,
    private_dir: Path | None = None,
    sleep: Callable[[float], None] = time.sleep,
    api: Api | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Delete everything clusterbisect left in the namespace (one session, or all).

    Jobs and RayJobs go with propagationPolicy=Background (their pods, Ray clusters
    and probe Secrets with them: a probe's Secret is owned by its Job); ConfigMaps and
    orphaned probe pods are deleted too. ``options`` say how to connect (the registry's
    cleanup hook: ``cleanup(session_id, options=..., private_dir=...)``; a Kubernetes
    session runs nothing on this machine, so ``private_dir`` is unused). With
    ``dry_run`` nothing is deleted: the report lists what would be, and the sessions
    it belongs to.
    """
    settings = settings_of(options)
    conn = conn or (api.conn if api else None)
    conn = conn or connect(settings.kubeconfig, settings.context, settings.namespace)
    api = api or Api.of(conn, settings, sleep)
    selector = render.session_selector(session_id)
    jobs = _list_labelled(api, conn.batch.list_namespaced_job, conn, selector, "jobs.batch")
    jobs = [j for j in jobs if not j.metadata.deletion_timestamp]
    job_names = {j.metadata.name for j in jobs}
    found = rayjobs.leftovers(api, selector)
    rayjob_names = [r["metadata"]["name"] for r in found]
    pods = _list_labelled(api, conn.core.list_namespaced_pod, conn, selector, "pods")
    orphans = [
        pod.metadata.name
        for pod in pods
        # a pod owned by one of those Jobs, or by a RayJob's cluster or submitter, is
        # garbage-collected with it
        if not any(_owned(o, job_names, rayjob_names) for o in pod.metadata.owner_references or [])
    ]
    maps = _list_labelled(api, conn.core.list_namespaced_config_map, conn, selector, "configmaps")
    map_names = [cm.metadata.name for cm in maps]
    report: dict[str, Any] = {
        "namespace": conn.namespace,
        "session": session_id,
        "selector": selector,
        "sessions": sorted(
            ({_session_of(o) for o in [*jobs, *pods, *maps]} | set(map(_rayjob_session, found)))
            - {""}
        ),
    }
    if dry_run:
        report["found"] = {
            "jobs": sorted(job_names),
            "rayjobs": rayjob_names,
            "pods": orphans,
            "configmaps": map_names,
        }
        report["summary"] = _found_summary(report)
        return report
    deleted_jobs = [j.metadata.name for j in jobs if api.delete_job(j.metadata.name)]
    deleted_rayjobs = [name for name in rayjob_names if rayjobs.delete_rayjob(api, name)]
    deleted_pods = _delete_each(api, conn.core.delete_namespaced_pod, conn, orphans, "pods")
    deleted_maps = _delete_each(
        api, conn.core.delete_namespaced_config_map, conn, map_names, "configmaps"
    )
    report["deleted"] = {
        "jobs": deleted_jobs,
        "rayjobs": deleted_rayjobs,
        "pods": deleted_pods,
        "configmaps": deleted_maps,
    }
    report["summary"] = (
        f"Namespace {conn.namespace}: deleted {len(deleted_jobs)} job(s), "
        + (f"{len(deleted_rayjobs)} RayJob(s), " if deleted_rayjobs else "")
        + f"{len(deleted_pods)} orphaned pod(s), {len(deleted_maps)} configmap(s) "
        f"matching {selector}."
    )
    return report


def _found_summary(plan: dict[str, Any]) -> str:
    found = plan["found"]
    sessions = plan["sessions"]
    return (
        f"namespace {plan['namespace']} holds {len(found['jobs'])} probe job(s), "
        + (f"{len(found['rayjobs'])} RayJob(s), " if found.get("rayjobs") else "")
        + f"{len(found['pods'])} orphaned pod(s) and {len(found['configmaps'])} configmap(s) "
        f"of {len(sessions)} session(s): {', '.join(sessions[:10])}"
        + (" ..." if len(sessions) > 10 else "")
    )


def _session_of(obj: Any) -> str:
    return str((obj.metadata.labels or {}).get(render.LABEL_SESSION, ""))


def _owned(owner: Any, job_names: set[str], rayjob_names: list[str]) -> bool:
    """Whether ``owner`` is one of ours that takes the pod with it when deleted: a probe
    Job, or what KubeRay made for a probe RayJob (its RayCluster ``NAME-xxxxx`` and its
    submitter Job ``NAME``)."""
    if owner.kind == "Job" and owner.name in job_names:
        return True
    ray = owner.kind in ("RayCluster", "Job")
    return ray and any(owner.name == n or owner.name.startswith(n + "-") for n in rayjob_names)


def _rayjob_session(rayjob: dict[str, Any]) -> str:
    return str(((rayjob.get("metadata") or {}).get("labels") or {}).get(render.LABEL_SESSION, ""))


def _list_labelled(
    api: Api, list_fn: Callable[..., Any], conn: Connection, selector: str, resource: str
) -> list[Any]:
    """The objects of one resource in the namespace that carry ``selector``."""
    found = api.call(
        list_fn, conn.namespace, label_selector=selector, verb="list", resource=resource
    )
    return list(found.items)


def _delete_each(
    api: Api, delete_fn: Callable[..., Any], conn: Connection, names: list[str], resource: str
) -> list[str]:
    """Delete each named object; the names actually deleted (one already gone is skipped)."""
    return [name for name in names if api.delete(delete_fn, name, resource)]
