"""What a probe pod must not share with production, and what it must keep to be
admitted. Pure: rendering calls these on the probe's pod template (no API calls).

- **Volumes.** A probe runs next to the real job: a persistent volume mounted
  read-write (a checkpoint PVC, an NFS share) could be corrupted by a probe, or by
  parallel probes writing the same files. By default such volumes are mounted
  read-only in probes; with ``scratch`` each is replaced by an empty directory; with
  ``shared`` they are left as they are (``--allow-shared-volumes``). A volume that is
  read-only already (a dataset) is kept as it is, and so are per-pod volumes
  (emptyDir, configMap, secret, projected, downwardAPI, ephemeral, image).
- **StatefulSet claims.** A StatefulSet's ``volumeClaimTemplates`` make one PVC per
  replica; a probe pod has no such PVCs, so each becomes a generic ephemeral volume
  with the same claim spec (made and deleted with the probe's pod), or an emptyDir.
- **Pod inputs.** An exported Pod carries the labels Services select it by and the
  integer ``spec.priority`` (and ``preemptionPolicy``) that admission computed from
  its ``priorityClassName``. Probe pods drop the labels (no production traffic) and
  the computed fields, so admission computes them again from the class: the probe
  keeps the pod's priority, and a class whose value changed since the export does
  not get every probe refused.
- **Admission labels.** Labels that decide where and when a pod may run (a Kueue
  queue, a Kueue priority class, and those the user adds) are copied from the input
  object onto the probe Job; the pod template's own labels are kept on the pod.
"""

from __future__ import annotations

import copy
import fnmatch
from typing import Any

# Volume sources that belong to one pod: never shared with production.
PER_POD = frozenset(
    {"emptyDir", "configMap", "secret", "projected", "downwardAPI", "ephemeral", "image"}
)

# Sources with a readOnly switch of their own (set as well as the mounts' readOnly).
HAS_READ_ONLY = frozenset(
    {
        "persistentVolumeClaim",
        "nfs",
        "csi",
        "cephfs",
        "glusterfs",
        "iscsi",
        "rbd",
        "fc",
        "azureFile",
        "azureDisk",
        "flexVolume",
        "quobyte",
        "portworxVolume",
        "gcePersistentDisk",
        "awsElasticBlockStore",
        "storageos",
        "scaleIO",
    }
)

READ_ONLY = "read-only"
SCRATCH = "scratch"
SHARED = "shared"
VOLUME_MODES = (READ_ONLY, SCRATCH, SHARED)

# Copied from the input object onto every probe Job (the user can add more).
ADMISSION_LABELS = ("kueue.x-k8s.io/queue-name", "kueue.x-k8s.io/priority-class")

# Filled in by the Priority admission plugin from priorityClassName.
COMPUTED_BY_ADMISSION = ("priority", "preemptionPolicy")


def _source_kind(volume: dict[str, Any]) -> str | None:
    kinds = [k for k in volume if k != "name"]
    return kinds[0] if len(kinds) == 1 else None


def protect_volumes(pod: dict[str, Any], mode: str) -> list[str]:
    """Make the shared volumes of ``pod`` (a pod spec, changed in place) safe for a
    probe; what was changed, one line per volume."""
    if mode == SHARED:
        return []
    changed = []
    for volume in pod.get("volumes") or []:
        kind = _source_kind(volume) if isinstance(volume, dict) else None
        if kind is None or kind in PER_POD or not _writable(pod, volume, kind):
            continue  # a read-only volume (a dataset) is safe to share: kept as it is
        name = volume["name"]
        what = _describe(volume, kind)
        if mode == SCRATCH:
            volume.clear()
            volume.update({"name": name, "emptyDir": {}})
            changed.append(f"volume {name} ({what}): an empty directory in probes")
            continue
        if kind in HAS_READ_ONLY and isinstance(volume[kind], dict):
            volume[kind]["readOnly"] = True
        _mounts_read_only(pod, name)
        changed.append(f"volume {name} ({what}): mounted read-only in probes")
    return changed


def _writable(pod: dict[str, Any], volume: dict[str, Any], kind: str) -> bool:
    """Whether a container can write to ``volume``: a mount of it without readOnly, and
    no readOnly on the source itself."""
    source = volume.get(kind)
    if isinstance(source, dict) and source.get("readOnly") is True:
        return False
    return any(
        isinstance(mount, dict)
        and mount.get("name") == volume["name"]
        and not mount.get("readOnly")
        for group in ("initContainers", "containers")
        for container in pod.get(group) or []
        for mount in container.get("volumeMounts") or []
    )


def _describe(volume: dict[str, Any], kind: str) -> str:
    source = volume.get(kind) or {}
    if kind == "persistentVolumeClaim":
        return f"PVC {source.get('claimName', '?')}"
    if kind == "hostPath":
        return f"hostPath {source.get('path', '?')}"
    if kind == "nfs":
        return f"NFS {source.get('server', '?')}:{source.get('path', '?')}"
    return kind


def _mounts_read_only(pod: dict[str, Any], volume: str) -> None:
    """Set readOnly on every mount of ``volume``."""
    for group in ("initContainers", "containers"):
        for container in pod.get(group) or []:
            for mount in container.get("volumeMounts") or []:
                if isinstance(mount, dict) and mount.get("name") == volume:
                    mount["readOnly"] = True


def claim_template_volumes(document: dict[str, Any], pod: dict[str, Any], mode: str) -> list[str]:
    """A StatefulSet's ``volumeClaimTemplates`` as volumes of the probe's ``pod``:
    generic ephemeral volumes (an emptyDir with ``scratch``); what was added."""
    templates = (document.get("spec") or {}).get("volumeClaimTemplates") or []
    have = {v.get("name") for v in pod.get("volumes") or [] if isinstance(v, dict)}
    added = []
    for claim in templates:
        if not isinstance(claim, dict):
            continue
        name = (claim.get("metadata") or {}).get("name")
        if not name or name in have:
            continue
        if mode == SCRATCH:
            volume: dict[str, Any] = {"name": name, "emptyDir": {}}
            added.append(f"volume {name} (volumeClaimTemplate): an empty directory in probes")
        else:
            template: dict[str, Any] = {"spec": copy.deepcopy(claim.get("spec") or {})}
            labels = (claim.get("metadata") or {}).get("labels")
            if labels:
                template["metadata"] = {"labels": dict(labels)}
            volume = {"name": name, "ephemeral": {"volumeClaimTemplate": template}}
            added.append(
                f"volume {name} (volumeClaimTemplate): a new ephemeral volume for each probe"
            )
        pod.setdefault("volumes", []).append(volume)
    return added


def drop_computed_priority(pod: dict[str, Any]) -> list[str]:
    """Remove what admission computes from ``priorityClassName`` (or the default
    class); the fields removed."""
    removed = [f for f in COMPUTED_BY_ADMISSION if f in pod]
    for name in removed:
        del pod[name]
    return removed


def admission_labels(labels: dict[str, Any], wanted: tuple[str, ...]) -> dict[str, str]:
    """The labels of ``labels`` that admission needs: keys in ``wanted`` (globs allowed)."""
    return {
        key: str(value)
        for key, value in (labels or {}).items()
        if isinstance(value, str) and any(fnmatch.fnmatchcase(key, w) for w in wanted)
    }


def copy_priority_class(document: dict[str, Any], pod: dict[str, Any]) -> None:
    """A Kubeflow job's ``runPolicy.schedulingPolicy.priorityClass`` on the probe pod
    (the operator sets it on the pods it makes), unless the template names one."""
    policy = ((document.get("spec") or {}).get("runPolicy") or {}).get("schedulingPolicy") or {}
    wanted = policy.get("priorityClass") if isinstance(policy, dict) else None
    if isinstance(wanted, str) and wanted and not pod.get("priorityClassName"):
        pod["priorityClassName"] = wanted
