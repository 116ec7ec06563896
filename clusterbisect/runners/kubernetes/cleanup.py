"""Deleting what clusterbisect left in a namespace, found by its labels."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from clusterbisect.config import KubeConnection
from clusterbisect.runners.kubernetes import rayjobs, render
from clusterbisect.runners.kubernetes.client import Api, Connection, connect, settings_of


def cleanup(
    session_id: str | None = None,
    conn: Connection | None = None,
    *,
    options: KubeConnection | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Delete everything clusterbisect left in the namespace (one session, or all).

    Jobs and RayJobs go with propagationPolicy=Background (their pods and Ray
    clusters with them); ConfigMaps and orphaned probe pods are deleted too.
    ``options`` say how to connect (the registry's cleanup hook:
    ``cleanup(session_id, options=...)``).
    """
    options = settings_of(options)
    conn = conn or connect(options.kubeconfig, options.context, options.namespace)
    api = Api(conn, options.retries, options.retry_base_s, sleep)
    selector = render.session_selector(session_id)
    jobs = _list_labelled(api, conn.batch.list_namespaced_job, conn, selector, "jobs.batch")
    deleted_jobs = [j.metadata.name for j in jobs if api.delete_job(j.metadata.name)]
    job_names = {j.metadata.name for j in jobs}
    deleted_rayjobs = rayjobs.cleanup(api, selector)
    pods = _list_labelled(api, conn.core.list_namespaced_pod, conn, selector, "pods")
    orphans = [
        pod.metadata.name
        for pod in pods
        # a pod owned by one of those Jobs is garbage-collected with it
        if not any(
            o.kind == "Job" and o.name in job_names for o in pod.metadata.owner_references or []
        )
    ]
    deleted_pods = _delete_each(api, conn.core.delete_namespaced_pod, conn, orphans, "pods")
    maps = _list_labelled(api, conn.core.list_namespaced_config_map, conn, selector, "configmaps")
    deleted_maps = _delete_each(
        api,
        conn.core.delete_namespaced_config_map,
        conn,
        [cm.metadata.name for cm in maps],
        "configmaps",
    )
    return {
        "namespace": conn.namespace,
        "session": session_id,
        "selector": selector,
        "deleted": {
            "jobs": deleted_jobs,
            "rayjobs": deleted_rayjobs,
            "pods": deleted_pods,
            "configmaps": deleted_maps,
        },
    }


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
