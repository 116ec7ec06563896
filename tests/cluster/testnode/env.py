"""A container's environment and argv, resolved the way the kubelet resolves them."""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Protocol

from kubernetes.utils.quantity import parse_quantity


class ConfigError(Exception):
    """The container cannot be configured (CreateContainerConfigError): a missing
    ConfigMap, Secret or key. The message is the kubelet's."""


class Objects(Protocol):
    """Reads the ConfigMaps, Secrets and claims a pod refers to; ``None`` when missing."""

    def config_map(self, namespace: str, name: str) -> dict[str, str] | None: ...

    def secret(self, namespace: str, name: str) -> dict[str, str] | None: ...

    def claim(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def volume(self, name: str) -> dict[str, Any] | None: ...


def expand(text: str, lookup: Callable[[str], str | None]) -> str:
    """``$(VAR)`` references replaced (k8s.io/kubernetes third_party expansion):
    ``$$`` is a literal ``$``, and an unknown ``$(VAR)`` stays as written."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$" or i + 1 >= len(text):
            out.append(char)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            end = text.find(")", i + 2)
            if end < 0:
                out.append("$(")
                i += 2
            else:
                name = text[i + 2 : end]
                value = lookup(name)
                out.append(f"$({name})" if value is None else value)
                i = end + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)


def _labels_text(values: dict[str, str]) -> str:
    return "\n".join(f'{k}="{v}"' for k, v in sorted(values.items()))


def field_value(pod: dict[str, Any], path: str) -> str:
    """A downward API field (fieldRef.fieldPath) of ``pod``."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": status.get("hostIP"),
        "status.podIP": status.get("podIP"),
    }
    if path in simple:
        return str(simple[path] or "")
    if path in ("status.hostIPs", "status.podIPs"):
        key = path.split(".")[1]
        return ",".join(item.get("ip", "") for item in status.get(key) or [])
    if path == "metadata.labels":
        return _labels_text(meta.get("labels") or {})
    if path == "metadata.annotations":
        return _labels_text(meta.get("annotations") or {})
    for group in ("labels", "annotations"):
        prefix = f"metadata.{group}['"
        if path.startswith(prefix) and path.endswith("']"):
            return str((meta.get(group) or {}).get(path[len(prefix) : -2], ""))
    raise ConfigError(f"unsupported fieldPath: {path}")


def _container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    spec = pod.get("spec") or {}
    for item in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        if item.get("name") == name:
            return item
    raise ConfigError(f'container "{name}" not found in pod')


def resource_value(
    pod: dict[str, Any],
    container: str,
    resource: str,
    divisor: Any,
    allocatable: dict[str, str],
) -> str:
    """A resourceFieldRef value: limits default to the node's allocatable, as in the
    kubelet; CPU rounds up to the divisor in millicores, the rest in units."""
    group, _, name = resource.partition(".")
    resources = _container(pod, container).get("resources") or {}
    amount = (resources.get(group) or {}).get(name)
    if amount is None and group == "limits":
        amount = allocatable.get(name)
    quantity = parse_quantity(amount) if amount is not None else Decimal(0)
    div = parse_quantity(divisor if divisor not in (None, "") else "1")
    if div == 0:  # the API server defaults an unset divisor to 0: the kubelet reads 1
        div = Decimal(1)
    if name == "cpu":
        return str(math.ceil((quantity * 1000) / (div * 1000)))
    return str(math.ceil(quantity / div))


def _valid_key(name: str) -> bool:
    # Since Kubernetes 1.34 any printable ASCII but '=' is a valid variable name.
    return bool(name) and "=" not in name and all(32 <= ord(c) < 127 for c in name)


def resolve(
    pod: dict[str, Any],
    container: dict[str, Any],
    objects: Objects,
    allocatable: dict[str, str],
    service_env: dict[str, str],
) -> dict[str, str]:
    """The container's own variables (envFrom, then env) and the service variables,
    as the kubelet's makeEnvironmentVariables builds them (image env not included)."""
    namespace = (pod.get("metadata") or {}).get("namespace", "default")
    env: dict[str, str] = {}

    def lookup(name: str) -> str | None:
        if name in env:
            return env[name]
        return service_env.get(name)

    for source in container.get("envFrom") or []:
        prefix = source.get("prefix") or ""
        if "configMapRef" in source:
            ref, kind = source["configMapRef"], "configmap"
            data = objects.config_map(namespace, ref.get("name", ""))
        elif "secretRef" in source:
            ref, kind = source["secretRef"], "secret"
            data = objects.secret(namespace, ref.get("name", ""))
        else:
            continue
        if data is None:
            if ref.get("optional"):
                continue
            raise ConfigError(f'{kind} "{ref.get("name")}" not found')
        for key, value in data.items():
            if _valid_key(prefix + key):
                env[prefix + key] = value

    for var in container.get("env") or []:
        name = var["name"]
        value_from = var.get("valueFrom")
        if var.get("value"):
            env[name] = expand(var["value"], lookup)
        elif value_from:
            resolved = _value_from(pod, container, value_from, objects, namespace, allocatable)
            if resolved is None:
                continue  # an optional reference that is missing
            env[name] = resolved
        else:
            env[name] = ""
    for key, value in service_env.items():
        env.setdefault(key, value)
    return env


def _value_from(
    pod: dict[str, Any],
    container: dict[str, Any],
    source: dict[str, Any],
    objects: Objects,
    namespace: str,
    allocatable: dict[str, str],
) -> str | None:
    if "fieldRef" in source:
        return field_value(pod, source["fieldRef"]["fieldPath"])
    if "resourceFieldRef" in source:
        ref = source["resourceFieldRef"]
        return resource_value(
            pod,
            ref.get("containerName") or container["name"],
            ref["resource"],
            ref.get("divisor"),
            allocatable,
        )
    for key, kind, title, read in (
        ("configMapKeyRef", "configmap", "ConfigMap", objects.config_map),
        ("secretKeyRef", "secret", "Secret", objects.secret),
    ):
        if key in source:
            ref = source[key]
            data = read(namespace, ref.get("name", ""))
            if data is None:
                if ref.get("optional"):
                    return None
                raise ConfigError(f'{kind} "{ref.get("name")}" not found')
            if ref["key"] not in data:
                if ref.get("optional"):
                    return None
                raise ConfigError(
                    f"couldn't find key {ref['key']} in {title} {namespace}/{ref.get('name')}"
                )
            return data[ref["key"]]
    raise ConfigError(f"unsupported valueFrom: {sorted(source)}")


def argv(
    container: dict[str, Any], entrypoint: list[str], cmd: list[str], env: dict[str, str]
) -> list[str]:
    """command + args with $(VAR) expanded, falling back to the image's ENTRYPOINT and
    CMD like a container runtime: command replaces both, args replaces CMD only."""
    command = container.get("command") or []
    args = container.get("args") or []
    lookup = env.get
    command = [expand(c, lookup) for c in command]
    args = [expand(a, lookup) for a in args]
    if command:
        return command + args
    return list(entrypoint) + (args if args else list(cmd))
