"""Reading a live cluster's jobs and their failed Pods into an ``Inventory`` (the edge).

Connects like kubectl (``--kubeconfig``, ``--context``, ``-n``, ``-A``) through the
project's client module; the ``kubernetes`` package is imported only when a cluster
is read. Every list call is paginated (``limit`` and ``continue``), so 50,000 Jobs
never come in one response, and asks for the raw JSON (``_preload_content=False``):
the objects are then exactly what ``kubectl get -o json`` prints, and no time goes
into building client model objects that would be turned back into dicts.

- Jobs (``batch/v1``), and through the CustomObjects API the kinds of job whose CRDs
  the cluster serves (asked once from its discovery document): the Kubeflow training
  jobs (PyTorchJob, TFJob, MPIJob, XGBoostJob, PaddleJob, JAXJob), RayJob, JobSet and
  TrainJob. ``-l`` selects them; ``--since`` keeps those created in that window (the
  API cannot filter on time: older ones are dropped page by page). A served kind we
  may not list (403) is left out and named in ``unread``; Jobs must be readable.
- Pods: only the failed ones (``status.phase=Failed``) that carry the label their
  job's controller sets (``job-name``; ``training.kubeflow.org/job-name`` for the
  Kubeflow jobs), of a job that is selected. Their ``state.terminated`` (exit code,
  reason, message) is in the listing.
- ``--logs N``: the last N lines of the failed container of the latest failed pod of
  each failed job (one ``read_namespaced_pod_log`` call per failed job).

Needs ``list`` on jobs.batch and pods, ``get`` on pods/log with ``--logs``, and
``list`` on the custom kinds to read those.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from clusterbisect.config import KubeConnection, TriageSourceOptions
from clusterbisect.errors import BackendError
from clusterbisect.runners.kubernetes.client import Api, Connection, connect
from clusterbisect.triage.jobs import parse_time
from clusterbisect.triage.join import meta_of, terminations
from clusterbisect.triage.model import FAILED, Inventory
from clusterbisect.triage.outcomes import outcome_of
from clusterbisect.triage.signatures import main_termination

JOB_NAME_LABEL = "job-name"  # set on a Job's pods by every Kubernetes version
KUBEFLOW_JOB_LABEL = "training.kubeflow.org/job-name"
FAILED_PODS = "status.phase=Failed"
MAX_LOG_BYTES = 256 * 1024


@dataclass(frozen=True)
class Listing:
    """One kind of object to list: ``kind`` in ``group/version`` (core: group ""),
    its plural resource name; ``custom``: served by a CRD (the CustomObjects API);
    ``pod_label``: the label its pods carry with its name (None: its pods are those of
    the Jobs it owns, listed with the Jobs')."""

    group: str
    version: str
    plural: str
    kind: str
    custom: bool = True
    pod_label: str | None = None

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def resource(self) -> str:
        """The name RBAC and error messages use: ``jobs.batch``, ``pods``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def call(
        self, conn: Connection, all_namespaces: bool
    ) -> tuple[Callable[..., Any], tuple[str, ...]]:
        """The list function and its positional arguments."""
        if self.custom:
            custom = conn.api("CustomObjectsApi")
            if all_namespaces:
                return custom.list_cluster_custom_object, (self.group, self.version, self.plural)
            return custom.list_namespaced_custom_object, (
                self.group,
                self.version,
                conn.namespace,
                self.plural,
            )
        if self.kind == "Job":
            everywhere, namespaced = (
                conn.batch.list_job_for_all_namespaces,
                conn.batch.list_namespaced_job,
            )
        else:
            everywhere, namespaced = (
                conn.core.list_pod_for_all_namespaces,
                conn.core.list_namespaced_pod,
            )
        return (everywhere, ()) if all_namespaces else (namespaced, (conn.namespace,))


JOBS = Listing("batch", "v1", "jobs", "Job", custom=False, pod_label=JOB_NAME_LABEL)
PODS = Listing("", "v1", "pods", "Pod", custom=False)
# The kinds of job served by CRDs, read where the cluster serves them.
CUSTOM_JOBS = (
    *(
        Listing("kubeflow.org", "v1", plural, kind, pod_label=KUBEFLOW_JOB_LABEL)
        for plural, kind in (
            ("pytorchjobs", "PyTorchJob"),
            ("tfjobs", "TFJob"),
            ("xgboostjobs", "XGBoostJob"),
            ("paddlejobs", "PaddleJob"),
            ("jaxjobs", "JAXJob"),
        )
    ),
    Listing("kubeflow.org", "v2beta1", "mpijobs", "MPIJob", pod_label=KUBEFLOW_JOB_LABEL),
    Listing("ray.io", "v1", "rayjobs", "RayJob"),
    Listing("jobset.x-k8s.io", "v1alpha2", "jobsets", "JobSet"),
    Listing("trainer.kubeflow.org", "v1alpha1", "trainjobs", "TrainJob"),
)

Key = tuple[str, str]  # (namespace, name)


def read_cluster(
    connection: KubeConnection,
    select: TriageSourceOptions,
    *,
    created_after: float | None = None,
    conn: Connection | None = None,
    api: Api | None = None,
) -> Inventory:
    """The jobs (and their failed Pods) that ``select`` chooses, as an inventory: in
    ``connection``'s namespace, or in every one with ``select.all_namespaces``."""
    if conn is None:
        conn = connect(connection.kubeconfig, connection.context, connection.namespace)
    api = api or Api(conn)
    where = "all namespaces" if select.all_namespaces else f"namespace {conn.namespace}"
    source = f"cluster {conn.context or conn.host or ''} ({where})".replace("  ", " ")
    inventory = Inventory(sources=[source])
    # The selected jobs by the label their pods carry: (namespace, job name) -> job.
    owners: dict[str, dict[Key, dict[str, Any]]] = {}
    listings = [JOBS, *_served(api, conn, inventory)]
    for listing in listings:
        found = _selected(api, conn, select, listing, created_after, inventory)
        if listing.pod_label:
            owners.setdefault(listing.pod_label, {}).update(found)
    latest: dict[tuple[str, Key], dict[str, Any]] = {}
    for label, jobs in owners.items():
        failed = {key for key, job in jobs.items() if outcome_of(job).outcome == FAILED}
        for pod in _list(api, conn, select, PODS, label, FAILED_PODS):
            meta = meta_of(pod)
            owner = (str(meta.get("namespace") or ""), str((meta.get("labels") or {})[label]))
            if owner not in jobs:
                continue  # a pod of a job that is not selected
            inventory.pods.append((source, pod))
            if owner in failed and _newer(pod, latest.get((label, owner))):
                latest[(label, owner)] = pod
    if select.logs:
        for pod in latest.values():
            _read_log(api, conn, pod, select.logs, inventory)
    return inventory


def _selected(
    api: Api,
    conn: Connection,
    select: TriageSourceOptions,
    listing: Listing,
    created_after: float | None,
    inventory: Inventory,
) -> dict[Key, dict[str, Any]]:
    """The jobs of one kind that ``select`` chooses, added to ``inventory``."""
    found: dict[Key, dict[str, Any]] = {}
    try:
        for job in _list(api, conn, select, listing, select.selector, None):
            meta = meta_of(job)
            stamp = parse_time(meta.get("creationTimestamp"))
            if created_after is not None and stamp is not None and stamp < created_after:
                inventory.too_old += 1
                continue
            found[(str(meta.get("namespace") or ""), str(meta.get("name") or ""))] = job
            inventory.workloads.append((inventory.sources[0], job))
    except BackendError as err:
        status = (err.details or {}).get("status")
        if not listing.custom or status not in (403, 404):
            raise
        if status == 403:  # a kind we may not list: the rest still tells, and says so
            inventory.unread[listing.resource] = err.message
        # 404: the group is served, but not this kind (no CRD for it)
    return found


def _served(api: Api, conn: Connection, inventory: Inventory) -> list[Listing]:
    """The custom kinds of job whose group and version the cluster serves."""
    from kubernetes.client.exceptions import ApiException

    try:
        response = api.call(
            conn.api("ApisApi").get_api_versions,
            _preload_content=False,
            verb="get",
            resource="the API discovery document (/apis)",
            passthrough=(403, 404),
        )
        body = json.loads(response.data)
    except (ApiException, ValueError, TypeError, AttributeError) as err:
        inventory.unread["custom resources"] = f"the API groups could not be read: {err}"
        return []
    served = {
        (str(group.get("name")), str(version.get("version")))
        for group in body.get("groups") or []
        if isinstance(group, dict)
        for version in group.get("versions") or []
        if isinstance(version, dict)
    }
    return [listing for listing in CUSTOM_JOBS if (listing.group, listing.version) in served]


def _list(
    api: Api,
    conn: Connection,
    select: TriageSourceOptions,
    listing: Listing,
    label_selector: str | None,
    field_selector: str | None,
) -> Iterator[dict[str, Any]]:
    """Every object of ``listing``, page by page, as plain JSON mappings."""
    call, args = listing.call(conn, select.all_namespaces)
    token: str | None = None
    while True:
        body = _page(api, call, args, listing, label_selector, field_selector, select, token)
        for item in body.get("items") or []:
            if isinstance(item, dict):
                # Items of a list response carry no kind of their own.
                item.setdefault("kind", listing.kind)
                item.setdefault("apiVersion", listing.api_version)
                yield item
        token = (body.get("metadata") or {}).get("continue") or None
        if token is None:
            return


def _page(
    api: Api,
    call: Callable[..., Any],
    args: tuple[str, ...],
    listing: Listing,
    label_selector: str | None,
    field_selector: str | None,
    select: TriageSourceOptions,
    token: str | None,
) -> dict[str, Any]:
    from kubernetes.client.exceptions import ApiException

    resource = listing.resource
    try:
        response = api.call(
            call,
            *args,
            label_selector=label_selector,
            field_selector=field_selector,
            limit=select.page_size,
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
