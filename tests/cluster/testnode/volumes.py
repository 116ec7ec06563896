"""A pod's volumes, materialised as directories under the pod's directory.

configMap, secret, downwardAPI, projected (serviceAccountToken, configMap, secret,
downwardAPI), emptyDir and hostPath are supported, and persistentVolumeClaim when its
claim is bound to a hostPath or local PersistentVolume (the kubelet resolves the claim
to its volume and mounts that; read-only when the claim's volume source says so); any
other kind fails to mount (the pod stays in ContainerCreating with FailedMount events,
as on a kubelet that lacks the plugin). Files are written once: later changes to a
ConfigMap or Secret are not propagated, and there is no ``..data`` symlink swap.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .env import ConfigError, Objects, field_value, resource_value


class VolumeError(Exception):
    """A volume cannot be set up (the kubelet's FailedMount)."""


def _secret_bytes(value: str) -> bytes:
    # Secret values are decoded with surrogateescape (see node.py): exact bytes back.
    return value.encode("utf-8", "surrogateescape")


TokenSource = Callable[[str, str, list[str], int], str]  # (namespace, sa, audiences, ttl)


def _write(path: Path, data: bytes, mode: int, fs_group: int | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if fs_group is not None:
        os.chown(path, 0, fs_group)
        mode |= 0o440
    os.chmod(path, mode)


def _keyed(
    kind: str,
    source: dict[str, Any],
    data: dict[str, str] | None,
    target: Path,
    default_mode: int,
    fs_group: int | None,
    encode: Callable[[str], bytes],
) -> None:
    name = source.get("name", "")
    if data is None:
        if source.get("optional"):
            return
        raise VolumeError(f'{kind} "{name}" not found')
    items = source.get("items")
    if items:
        for item in items:
            if item["key"] not in data:
                if source.get("optional"):
                    continue
                raise VolumeError(f"{kind} references non-existent {kind} key: {item['key']}")
            mode = item.get("mode", default_mode)
            _write(target / item["path"], encode(data[item["key"]]), mode, fs_group)
    else:
        for key, value in data.items():
            _write(target / key, encode(value), default_mode, fs_group)


def _downward(
    pod: dict[str, Any],
    items: list[dict[str, Any]],
    target: Path,
    default_mode: int,
    fs_group: int | None,
    allocatable: dict[str, str],
) -> None:
    for item in items:
        try:
            if "fieldRef" in item:
                value = field_value(pod, item["fieldRef"]["fieldPath"])
            else:
                ref = item["resourceFieldRef"]
                value = resource_value(
                    pod, ref["containerName"], ref["resource"], ref.get("divisor"), allocatable
                )
        except ConfigError as err:
            raise VolumeError(str(err)) from None
        _write(target / item["path"], value.encode(), item.get("mode", default_mode), fs_group)


def setup(
    pod: dict[str, Any],
    pod_dir: Path,
    objects: Objects,
    token: TokenSource,
    allocatable: dict[str, str],
) -> dict[str, str]:
    """Create every volume of ``pod``; returns volume name -> host path."""
    spec = pod.get("spec") or {}
    namespace = pod["metadata"]["namespace"]
    fs_group = (spec.get("securityContext") or {}).get("fsGroup")
    paths: dict[str, str] = {}
    base = pod_dir / "volumes"
    for volume in spec.get("volumes") or []:
        name = volume["name"]
        target = base / name
        if "hostPath" in volume:
            paths[name] = _host_path(volume["hostPath"])
            continue
        if "persistentVolumeClaim" in volume:
            paths[name] = _claim_path(namespace, volume["persistentVolumeClaim"], objects)
            continue
        if target.exists():
            shutil.rmtree(target)  # a retry after a failed attempt starts over
        target.mkdir(parents=True)
        if "emptyDir" in volume:
            os.chmod(target, 0o777)
        elif "configMap" in volume:
            source = volume["configMap"]
            _keyed(
                "configmap",
                source,
                objects.config_map(namespace, source.get("name", "")),
                target,
                source.get("defaultMode", 0o644),
                fs_group,
                str.encode,
            )
        elif "secret" in volume:
            source = volume["secret"]
            secret = {"name": source.get("secretName", ""), **source}
            _keyed(
                "secret",
                secret,
                objects.secret(namespace, secret["name"]),
                target,
                source.get("defaultMode", 0o644),
                fs_group,
                _secret_bytes,
            )
        elif "downwardAPI" in volume:
            source = volume["downwardAPI"]
            _downward(
                pod,
                source.get("items") or [],
                target,
                source.get("defaultMode", 0o644),
                fs_group,
                allocatable,
            )
        elif "projected" in volume:
            _projected(pod, volume["projected"], target, objects, token, fs_group, allocatable)
        else:
            kinds = sorted(k for k in volume if k != "name")
            raise VolumeError(
                f"volume {name!r}: {', '.join(kinds)} volumes are not supported by the test node"
            )
        if fs_group is not None:
            os.chown(target, 0, fs_group)
        paths[name] = str(target)
    return paths


def _projected(
    pod: dict[str, Any],
    projected: dict[str, Any],
    target: Path,
    objects: Objects,
    token: TokenSource,
    fs_group: int | None,
    allocatable: dict[str, str],
) -> None:
    namespace = pod["metadata"]["namespace"]
    mode = projected.get("defaultMode", 0o644)
    for source in projected.get("sources") or []:
        if "serviceAccountToken" in source:
            ref = source["serviceAccountToken"]
            audiences = [ref["audience"]] if ref.get("audience") else []
            account = pod["spec"].get("serviceAccountName") or "default"
            value = token(namespace, account, audiences, ref.get("expirationSeconds", 3600))
            _write(target / ref["path"], value.encode(), mode, fs_group)
        elif "configMap" in source:
            ref = source["configMap"]
            data = objects.config_map(namespace, ref.get("name", ""))
            _keyed("configmap", ref, data, target, mode, fs_group, str.encode)
        elif "secret" in source:
            ref = source["secret"]
            data = objects.secret(namespace, ref.get("name", ""))
            _keyed("secret", ref, data, target, mode, fs_group, _secret_bytes)
        elif "downwardAPI" in source:
            _downward(
                pod, source["downwardAPI"].get("items") or [], target, mode, fs_group, allocatable
            )
        else:
            raise VolumeError(
                f"projected source {sorted(source)} is not supported by the test node"
            )


def _claim_path(namespace: str, source: dict[str, Any], objects: Objects) -> str:
    """The host path behind a bound claim, as the kubelet's messages name failures."""
    name = source.get("claimName", "")
    claim = objects.claim(namespace, name)
    if claim is None:
        raise VolumeError(f'persistentvolumeclaim "{name}" not found')
    volume_name = (claim.get("spec") or {}).get("volumeName")
    if (claim.get("status") or {}).get("phase") != "Bound" or not volume_name:
        raise VolumeError(f'PVC {namespace}/{name} has non-bound phase ("Pending")')
    volume = objects.volume(volume_name)
    if volume is None:
        raise VolumeError(f'persistentvolume "{volume_name}" not found')
    spec = volume.get("spec") or {}
    for kind in ("hostPath", "local"):
        if isinstance(spec.get(kind), dict) and spec[kind].get("path"):
            path = str(spec[kind]["path"])
            if not os.path.isdir(path):
                raise VolumeError(f"{kind} path {path} of volume {volume_name} does not exist")
            return path
    kinds = sorted(k for k in spec if isinstance(spec[k], dict) and k not in ("claimRef",))
    raise VolumeError(
        f"volume {volume_name}: {', '.join(kinds) or 'its'} volumes are not supported by the "
        "test node"
    )


def read_only(pod: dict[str, Any]) -> set[str]:
    """Volumes the kubelet mounts read-only whatever the mounts say: a claim or a
    volume source with ``readOnly: true``."""
    names = set()
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        for kind, source in volume.items():
            if kind != "name" and isinstance(source, dict) and source.get("readOnly") is True:
                names.add(volume["name"])
    return names


def _host_path(source: dict[str, Any]) -> str:
    path = source["path"]
    kind = source.get("type") or ""
    if kind == "DirectoryOrCreate":
        os.makedirs(path, mode=0o755, exist_ok=True)
    elif kind == "FileOrCreate" and not os.path.exists(path):
        Path(path).touch(0o644)
    elif kind == "Directory" and not os.path.isdir(path):
        raise VolumeError(f"hostPath type check failed: {path} is not a directory")
    elif kind == "File" and not os.path.isfile(path):
        raise VolumeError(f"hostPath type check failed: {path} is not a file")
    elif not os.path.exists(path) and kind not in ("",):
        raise VolumeError(f"hostPath type check failed: {path} does not exist")
    return path
