"""Reading a live cluster's Jobs and their failed Pods into an ``Inventory`` (the edge).

Connects like kubectl (``--kubeconfig``, ``--context``, ``-n``, ``-A``) through the
project's client module; the ``kubernetes`` package is imported only when a cluster
is read. Every list call is paginated (``limit`` and ``continue``), so 50,000 Jobs
never come in one response, and asks for the raw JSON (``_preload_content=False``):
the objects are then exactly what ``kubectl get -o json`` prints, and no time goes
into building client model objects that would be turned back into dicts.

- Jobs: ``-l`` selects them; ``--since`` keeps those created in that window (the API
  cannot filter on time: older Jobs are dropped page by page).
- Pods: only the failed ones (``status.phase=Failed``) that belong to a Job (they carry
  the ``job-name`` label), since only a failed job's pods explain a failure. Their
  ``state.terminated`` (exit code, reason, message) is in the listing.
- ``--logs N``: the last N lines of the failed container of the latest failed pod of
  each failed Job (one ``read_namespaced_pod_log`` call per failed Job).

Needs ``list`` on jobs.batch and pods, and ``get`` on pods/log with ``--logs``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from clusterbisect.errors import BackendError
from clusterbisect.runners.kubernetes.client import Api, Connection, connect
from clusterbisect.triage.jobs import parse_time
from clusterbisect.triage.join import meta_of, terminations
from clusterbisect.triage.model import FAILED, Inventory
from clusterbisect.triage.options import ClusterQuery
from clusterbisect.triage.outcomes import outcome_of
from clusterbisect.triage.signatures import main_termination

JOB_NAME_LABEL = "job-name"  # set on a Job's pods by every Kubernetes version
FAILED_PODS = "status.phase=Failed"
MAX_LOG_BYTES = 256 * 1024


def read_cluster(
    query: ClusterQuery,
    *,
    created_after: float | None = None,
    conn: Connection | None = None,
    api: Api | None = None,
) -> Inventory:
    """The Jobs (and their failed Pods) that ``query`` selects, as an inventory."""
    if conn is None:
        conn = connect(query.kubeconfig, query.context, query.namespace)
    api = api or Api(conn)
    where = "all namespaces" if query.all_namespaces else f"namespace {conn.namespace}"
    inventory = Inventory(sources=[f"cluster {conn.context or conn.host or ''} ({where})".strip()])
    jobs: dict[tuple[str, str], dict[str, Any]] = {}
    for job in _list(api, conn, query, "Job", query.selector, None):
        stamp = parse_time(meta_of(job).get("creationTimestamp"))
        if created_after is not None and stamp is not None and stamp < created_after:
            continue
        meta = meta_of(job)
        jobs[(str(meta.get("namespace") or ""), str(meta.get("name") or ""))] = job
        inventory.workloads.append((inventory.sources[0], job))
    failed = {key for key, job in jobs.items() if outcome_of(job).outcome == FAILED}
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for pod in _list(api, conn, query, "Pod", JOB_NAME_LABEL, FAILED_PODS):
        meta = meta_of(pod)
        namespace = str(meta.get("namespace") or "")
        owner = (namespace, str((meta.get("labels") or {}).get(JOB_NAME_LABEL) or ""))
        if owner not in jobs:
            continue  # a pod of a Job that is not selected
        inventory.pods.append((inventory.sources[0], pod))
        if owner in failed and _newer(pod, latest.get(owner)):
            latest[owner] = pod
    if query.logs:
        for pod in latest.values():
            _read_log(api, conn, pod, query.logs, inventory)
    return inventory


def _list(
    api: Api,
    conn: Connection,
    query: ClusterQuery,
    kind: str,
    label_selector: str | None,
    field_selector: str | None,
) -> Iterator[dict[str, Any]]:
    """Every object of ``kind`` (Job or Pod), page by page, as plain JSON mappings."""
    if kind == "Job":
        api_version, resource = "batch/v1", "jobs.batch"
        everywhere, namespaced = (
            conn.batch.list_job_for_all_namespaces,
            conn.batch.list_namespaced_job,
        )
    else:
        api_version, resource = "v1", "pods"
        everywhere, namespaced = (
            conn.core.list_pod_for_all_namespaces,
            conn.core.list_namespaced_pod,
        )
    call: Callable[..., Any]
    args: tuple[str, ...]
    call, args = (everywhere, ()) if query.all_namespaces else (namespaced, (conn.namespace,))
    token: str | None = None
    while True:
        body = _page(api, call, args, resource, label_selector, field_selector, query, token)
        for item in body.get("items") or []:
            if isinstance(item, dict):
                # Items of a list response carry no kind of their own.
                item.setdefault("kind", kind)
                item.setdefault("apiVersion", api_version)
                yield item
        token = (body.get("metadata") or {}).get("continue") or None
        if token is None:
            return


def _page(
    api: Api,
    call: Callable[..., Any],
    args: tuple[str, ...],
    resource: str,
    label_selector: str | None,
    field_selector: str | None,
    query: ClusterQuery,
    token: str | None,
) -> dict[str, Any]:
    from kubernetes.client.exceptions import ApiException

    try:
        response = api.call(
            call,
            *args,
            label_selector=label_selector,
            field_selector=field_selector,
            limit=query.page_size,
            _continue=token,
            _preload_content=False,
            verb="list",
            resource=resource,
            passthrough=(410,),
        )
    except ApiException as err:  # 410 Gone: the continue token expired between pages
        raise BackendError(
            f"the listing of {resource} expired while it was read page by page (HTTP 410: "
            f"{err.reason}); run again, or narrow it with -l/--selector or -n",
            details={"status": err.status, "verb": "list", "resource": resource},
        ) from err
    try:
        body = json.loads(response.data)
    except (ValueError, TypeError, AttributeError) as err:
        raise BackendError(f"the API server sent an unreadable list of {resource}: {err}") from err
    if not isinstance(body, dict):
        raise BackendError(f"the API server sent an unreadable list of {resource}")
    return body


def _newer(pod: dict[str, Any], other: dict[str, Any] | None) -> bool:
    if other is None:
        return True
    mine = parse_time(meta_of(pod).get("creationTimestamp")) or 0.0
    theirs = parse_time(meta_of(other).get("creationTimestamp")) or 0.0
    return mine >= theirs


def _read_log(
    api: Api, conn: Connection, pod: dict[str, Any], lines: int, inventory: Inventory
) -> None:
    """The tail of the pod's failed container's log, into ``inventory.logs``."""
    from kubernetes.client.exceptions import ApiException

    termination = main_termination(list(terminations(pod)))
    if termination is None or not termination.container:
        return
    meta = meta_of(pod)
    namespace, name = str(meta.get("namespace") or conn.namespace), str(meta.get("name"))
    try:
        text = api.call(
            conn.core.read_namespaced_pod_log,
            name,
            namespace,
            container=termination.container,
            tail_lines=lines,
            limit_bytes=MAX_LOG_BYTES,
            verb="get",
            resource="pods/log",
            passthrough=(400, 404),
        )
    except ApiException:
        return  # the pod or its log is gone: its terminated state still says something
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if isinstance(text, str) and text:
        inventory.logs[(namespace, name, termination.container)] = text
