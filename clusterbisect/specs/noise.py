"""Noise: fields that differ between any two jobs and are never a cause of failure.

Stripped from Kubernetes objects at load time, so they never become settings:

- object identity: ``metadata.name``, ``metadata.namespace`` (kept in ``Spec.extra``,
  a probe gets its own name anyway), ``generateName``;
- server bookkeeping: ``uid``, ``resourceVersion``, ``generation``,
  ``creationTimestamp``, ``deletionTimestamp``, ``managedFields``, ``ownerReferences``,
  ``selfLink``, ``status``;
- labels and annotations written by controllers (``controller-uid``, ``job-name``,
  their ``batch.kubernetes.io/`` variants, ``pod-template-hash``, ...), the
  ``kubectl.kubernetes.io/last-applied-configuration`` annotation, and the Job's
  generated ``spec.selector`` (``controller-uid``);
- pod fields set by the scheduler and the service-account admission plugin:
  ``spec.nodeName`` and the generated ``kube-api-access-*`` volume and its mounts.
"""

from __future__ import annotations

from typing import Any

METADATA_NOISE = frozenset(
    {
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "ownerReferences",
        "selfLink",
        "generateName",
        "name",
        "namespace",
    }
)

LABEL_NOISE = frozenset(
    {
        "apps.kubernetes.io/pod-index",
        "batch.kubernetes.io/controller-uid",
        "batch.kubernetes.io/job-completion-index",
        "batch.kubernetes.io/job-name",
        "controller-revision-hash",
        "controller-uid",
        "job-name",
        "jobset.sigs.k8s.io/job-index",
        "jobset.sigs.k8s.io/job-key",
        "jobset.sigs.k8s.io/jobset-name",
        "jobset.sigs.k8s.io/jobset-uid",
        "jobset.sigs.k8s.io/replicatedjob-name",
        "pod-template-generation",
        "pod-template-hash",
        "ray.io/cluster",
        "ray.io/group",
        "ray.io/identifier",
        "ray.io/is-ray-node",
        "ray.io/node-type",
        "statefulset.kubernetes.io/pod-name",
        "training.kubeflow.org/job-name",
        "training.kubeflow.org/job-role",
        "training.kubeflow.org/operator-name",
        "training.kubeflow.org/replica-index",
        "training.kubeflow.org/replica-type",
    }
)

ANNOTATION_NOISE = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        "deployment.kubernetes.io/revision",
        "batch.kubernetes.io/job-tracking",
        "batch.kubernetes.io/job-completion-index",
        "batch.kubernetes.io/cronjob-scheduled-timestamp",
        "kubernetes.io/psp",
    }
)

FINALIZER_NOISE = frozenset({"batch.kubernetes.io/job-tracking"})

# Generated volumes projected by the ServiceAccount admission plugin.
API_ACCESS_VOLUME_PREFIX = "kube-api-access-"

# Empty values that mean the same as an absent field (``kubectl`` prints
# ``resources: {}``); such an empty mapping is not a setting.
EMPTY_IS_ABSENT = frozenset(
    {
        "resources",
        "limits",
        "requests",
        "securityContext",
        "metadata",
        "labels",
        "annotations",
        "nodeSelector",
        "strategy",
        "selector",
        "matchLabels",
        "env_vars",
        "runtime_env",
        "status",
        "rayStartParams",
    }
)


def strip_metadata(meta: Any) -> dict[str, Any]:
    """A copy of ``meta`` without noise fields, noise labels or noise annotations."""
    if not isinstance(meta, dict):
        return {}
    out = {k: v for k, v in meta.items() if k not in METADATA_NOISE}
    for field, noise in (("labels", LABEL_NOISE), ("annotations", ANNOTATION_NOISE)):
        values = out.get(field)
        if isinstance(values, dict):
            kept = {k: v for k, v in values.items() if k not in noise}
            if kept:
                out[field] = kept
            else:
                out.pop(field)
        elif values is None:
            out.pop(field, None)
    finalizers = out.get("finalizers")
    if isinstance(finalizers, list):
        kept_f = [f for f in finalizers if f not in FINALIZER_NOISE]
        if kept_f:
            out["finalizers"] = kept_f
        else:
            out.pop("finalizers")
    return out


def strip_selector(selector: Any) -> Any:
    """A Job's selector without the generated ``controller-uid`` match; None if empty."""
    if not isinstance(selector, dict):
        return selector
    out = dict(selector)
    match = out.get("matchLabels")
    if isinstance(match, dict):
        kept = {k: v for k, v in match.items() if k not in LABEL_NOISE}
        if kept:
            out["matchLabels"] = kept
        else:
            out.pop("matchLabels")
    return out or None


def strip_pod_spec(pod_spec: Any) -> Any:
    """A pod spec without ``nodeName`` and the generated ``kube-api-access-*`` volumes."""
    if not isinstance(pod_spec, dict):
        return pod_spec
    out = {k: v for k, v in pod_spec.items() if k != "nodeName"}
    volumes = out.get("volumes")
    if isinstance(volumes, list):
        kept = [v for v in volumes if not _is_api_access(v)]
        if kept:
            out["volumes"] = kept
        else:
            out.pop("volumes")
    for field in ("containers", "initContainers", "ephemeralContainers"):
        containers = out.get(field)
        if isinstance(containers, list):
            out[field] = [_strip_container(c) for c in containers]
    return out


def _is_api_access(item: Any) -> bool:
    name = item.get("name") if isinstance(item, dict) else None
    return isinstance(name, str) and name.startswith(API_ACCESS_VOLUME_PREFIX)


def _strip_container(container: Any) -> Any:
    if not isinstance(container, dict):
        return container
    mounts = container.get("volumeMounts")
    if not isinstance(mounts, list):
        return container
    out = dict(container)
    kept = [m for m in mounts if not _is_api_access(m)]
    if kept:
        out["volumeMounts"] = kept
    else:
        out.pop("volumeMounts")
    return out
