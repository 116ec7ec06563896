"""Where probes go: whether the source's namespace can take them.

Probes default to the namespace the source object names (its ConfigMaps, Secrets,
ServiceAccount and quota are there), but only where the cluster has it and we may
create probes in it; the runner otherwise falls back to the context's namespace and
says why (``KubernetesRunner.namespace_said``).
"""

from __future__ import annotations

from typing import Any


def source_refused(api: Any, namespace: str, rayjob: bool) -> str | None:
    """Why probes cannot go to the source's ``namespace`` (it is not there, or we may
    not create probes, Jobs or RayJobs, in it), or None. What the API server will not
    say (a 403 on reading namespaces, a failed access review) leaves it to the probe's
    creation. ``api`` is the runner's ``client.Api``."""
    from kubernetes.client.exceptions import ApiException

    conn = api.conn
    try:
        api.call(
            conn.core.read_namespace,
            namespace,
            verb="get",
            resource="namespaces",
            passthrough=(403, 404),
        )
    except ApiException as err:
        if err.status == 404:
            return f"the source's namespace {namespace!r} does not exist here"
    group, resource = ("ray.io", "rayjobs") if rayjob else ("batch", "jobs")
    review = {
        "spec": {
            "resourceAttributes": {
                "namespace": namespace,
                "verb": "create",
                "group": group,
                "resource": resource,
            }
        }
    }
    try:
        answer = api.call(
            conn.api("AuthorizationV1Api").create_self_subject_access_review,
            review,
            verb="create",
            resource="selfsubjectaccessreviews",
            passthrough=(400, 403, 404),
        )
    except ApiException:
        return None
    if getattr(answer.status, "allowed", True) is False:
        return f"no permission to create {resource} in the source's namespace {namespace!r}"
    return None
