"""A probe's Secret in the cluster: created before its Job, owned by it, deleted with it.

The Job of a probe that holds secret values refers to them in a Secret of its own
(``secretref.py``). :class:`ProbeSecrets` creates that Secret just before the Job (so
the pod never waits for it), then makes the Job its owner, so the garbage collector
deletes it with the Job even if this process dies; it is also deleted explicitly
when the probe settles or is aborted. RBAC: ``create``, ``patch`` (the owner
reference) and ``delete`` on secrets; never ``get`` or ``list``.
"""

from __future__ import annotations

from typing import Any

from clusterbisect.errors import BackendError
from clusterbisect.log import get_logger
from clusterbisect.runners.kubernetes.client import Api

log = get_logger(__name__)

RESOURCE = "secrets"


def secret_name(objects: list[dict[str, Any]]) -> str | None:
    """The name of the Secret among ``objects`` (what a Job needs), or None."""
    secret = next((o for o in objects if o.get("kind") == "Secret"), None)
    return None if secret is None else str(secret["metadata"]["name"])


class ProbeSecrets:
    """The Secrets of the probe Jobs in flight, in one namespace."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def create(self, objects: list[dict[str, Any]]) -> None:
        """Create the Secret among ``objects`` (what a Job needs before it is created),
        if there is one. A name clash (409) is raised as is."""
        name = secret_name(objects)
        if name is None:
            return
        secret = next(o for o in objects if o.get("kind") == "Secret")
        core = self.api.conn.core
        self.api.create(core.create_namespaced_secret, secret, RESOURCE, passthrough=(409,))
        log.info("k8s.secret_created", secret=name, namespace=self.api.conn.namespace)

    def adopt(self, name: str | None, job: Any) -> None:
        """Make the created ``job`` the owner of Secret ``name`` (garbage-collected
        with it). A failure is logged: the Secret is still deleted with the probe."""
        uid = getattr(getattr(job, "metadata", None), "uid", None)
        if not name or not uid:
            return
        owner = {"apiVersion": "batch/v1", "kind": "Job", "name": job.metadata.name, "uid": uid}
        core = self.api.conn.core
        try:
            self.api.call(
                core.patch_namespaced_secret,
                name,
                self.api.conn.namespace,
                {"metadata": {"ownerReferences": [owner]}},
                verb="patch",
                resource=RESOURCE,
            )
        except BackendError as err:
            log.warning("k8s.secret_not_adopted", secret=name, error=err.message)

    def delete(self, name: str | None) -> None:
        """Delete Secret ``name`` (already gone is fine); a failure is logged."""
        if not name:
            return
        try:
            self.api.delete(self.api.conn.core.delete_namespaced_secret, name, RESOURCE)
        except BackendError as err:
            log.warning("k8s.secret_cleanup_failed", secret=name, error=err.message)
