"""Where probes go: whether the source's namespace can take them.

Probes default to the namespace the source object names (its ConfigMaps, Secrets,
ServiceAccount and quota are there), but only where the cluster has it and we may
create probes in it; otherwise they go to the context's namespace, and
:class:`Placement` says why (the report's ``fidelity.target``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clusterbisect.runners.kubernetes.client import Api, Connection, connect, context_namespace


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


class Placement:
    """The probe namespace of one runner, and where it came from (for the report)."""

    def __init__(
        self, options: Any, source: str | None, rayjob: bool, sleep: Callable[[float], None]
    ) -> None:
        self.options = options  # the runner's KubernetesSettings
        self.source = source  # the good spec's metadata.namespace
        self.rayjob = rayjob
        self.sleep = sleep
        self.came_from: str | None = None

    def connect(self) -> Connection:
        """A connection whose namespace is where probes go: ``-n``, else the source's
        namespace when the cluster has it and we may create probes there, else the
        context's, else ``default``."""
        options, source = self.options, self.source
        wanted = options.namespace or source
        conn = connect(options.kubeconfig, options.context, wanted)
        refused = None
        if source and wanted == source:
            api = Api(conn, options.retries, options.retry_base_s, self.sleep)
            refused = source_refused(api, source, self.rayjob)
        if options.namespace:
            self.came_from = "-n"
        elif source and refused is None:
            self.came_from = "the source's"
        elif source:
            conn = connect(options.kubeconfig, options.context, None)
            self.came_from = f"the context's; {refused}"
        else:
            self.came_from = "the context's"
        return conn

    def offline(self) -> str | None:
        """The probe namespace without connecting (a client dry run): the source's is
        taken unchecked."""
        if self.options.namespace:
            self.came_from = "-n"
            return str(self.options.namespace)
        if self.source:
            self.came_from = "the source's; not checked in a client dry run"
            return self.source
        self.came_from = "the context's"
        return context_namespace(self.options.kubeconfig, self.options.context)

    def said(self, namespace: str | None) -> str:
        """``namespace 'ml' (the source's)``."""
        if namespace is None:
            return "the namespace of the kubeconfig's context when applied (none set)"
        if self.came_from is None:  # a connection made elsewhere (tests, tools)
            self.came_from = "-n" if self.options.namespace else "the connection's"
        return f"namespace {namespace!r} ({self.came_from})"
