"""Where a probe may go: the source's namespace, if it is there and we may create
probes in it (asked of the API server; what it will not say is left to the create)."""

from __future__ import annotations

from clusterbisect.runners.kubernetes.client import Api
from clusterbisect.specs.model import Spec


def source_namespace(good: Spec | None) -> str | None:
    """The namespace the good spec came from, if it names one."""
    namespace = good.extra.get("namespace") if good is not None else None
    return str(namespace) if namespace else None


def source_refused(api: Api, namespace: str, rayjob: bool) -> str | None:
    """Why probes cannot go to the source's namespace (it is not there, or we may
    not create probes in it), or None. What the API server will not say (a 403 on
    reading namespaces, a failed access review) leaves it to the probe's creation."""
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
