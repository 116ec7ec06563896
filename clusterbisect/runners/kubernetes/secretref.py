"""A probe Job's secret values moved into a Secret the Job refers to (pure: no API calls).

A probe Job is the good spec's pod template with the probe's changes: its env values,
command and args hold real secrets (a token, a password in a database URL, a
``--token=...`` flag). Written to a file, printed, or read back with ``kubectl get job
-o yaml``, the Job must hold none, and still run as written. So :func:`externalize`
moves each secret value into one Secret per probe (named as its Job) and makes the
Job refer to it:

- an env entry whose name looks secret or whose value holds a known or secret-shaped
  value becomes ``valueFrom.secretKeyRef``;
- a word of a container's ``command``/``args`` holding a secret becomes ``$(VAR)``,
  with ``VAR`` (``CLUSTERBISECT_SECRET_<n>``) an env entry from the Secret: Kubernetes
  expands ``$(VAR)`` in command and args from the container's own environment, so the
  workload gets the word exactly as written (one extra variable is the only trace).

What a manifest cannot refer to (an annotation's value, read by a controller such as
a secrets injector) stays in the Job: :attr:`Externalized.unreferenced` names where, so
the runner can keep that Job private.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from clusterbisect.redact import Redactor, argv_secret_positions

ARG_VARIABLE = "CLUSTERBISECT_SECRET_{}"
_KEY_INVALID = re.compile(r"[^-._a-zA-Z0-9]+")


@dataclass
class Externalized:
    """A Job that refers to its Secret, the Secret (None when there was nothing to
    move), and the paths of the secret values that had to stay in the Job."""

    job: dict[str, Any]
    secret: dict[str, Any] | None
    unreferenced: list[str] = field(default_factory=list)


def externalize(job: dict[str, Any], redactor: Redactor) -> Externalized:
    """Move ``job``'s secret env values and argv words into a Secret named as the Job
    (same namespace, same labels); ``job`` itself is not changed."""
    job = copy.deepcopy(job)
    name = job["metadata"]["name"]
    data: dict[str, str] = {}
    pod = job["spec"]["template"]["spec"]
    for group in ("initContainers", "containers"):
        for container in pod.get(group) or []:
            _move_env(container, name, data, redactor)
            _move_argv(container, name, data, redactor)
    secret = _secret(job, data) if data else None
    return Externalized(job, secret, _leftovers(job, redactor.value(job)))


def kept(manifest: dict[str, Any], redactor: Redactor) -> Externalized:
    """``manifest`` as it is, for an object that cannot refer to a Secret of its own
    (a RayJob: its runtime_env holds env values as text): every secret stays in it."""
    job = copy.deepcopy(manifest)
    return Externalized(job, None, _leftovers(job, redactor.setting(job)))


def _key(container: dict[str, Any], *parts: object) -> str:
    """A Secret data key for one value of ``container`` (``[-._a-zA-Z0-9]+``)."""
    text = ".".join(str(p) for p in (container.get("name", "container"), *parts))
    return _KEY_INVALID.sub("_", text)


def _ref(secret: str, key: str) -> dict[str, Any]:
    return {"secretKeyRef": {"name": secret, "key": key}}


def _move_env(
    container: dict[str, Any], secret: str, data: dict[str, str], redactor: Redactor
) -> None:
    for entry in container.get("env") or []:
        if not isinstance(entry, dict) or "value" not in entry or "valueFrom" in entry:
            continue
        value = entry["value"]
        if value in (None, "") or not redactor.hides(entry):
            continue
        key = _key(container, "env", entry.get("name", ""))
        data[key] = str(value)
        del entry["value"]
        entry["valueFrom"] = _ref(secret, key)


def _move_argv(
    container: dict[str, Any], secret: str, data: dict[str, str], redactor: Redactor
) -> None:
    """Replace the secret words of command + args (one argv: ``--password`` may end the
    command and its value start the args) by ``$(VAR)`` references."""
    command = [str(w) for w in container.get("command") or []]
    args = [str(w) for w in container.get("args") or []]
    argv = command + args
    if not argv:
        return
    hidden = set(argv_secret_positions(argv))
    hidden.update(i for i, word in enumerate(argv) if redactor.text(word) != word)
    if not hidden:
        return
    env = container.setdefault("env", [])
    taken = {e.get("name") for e in env if isinstance(e, dict)}
    number = 0
    for index in sorted(hidden):
        while ARG_VARIABLE.format(number) in taken:
            number += 1
        variable = ARG_VARIABLE.format(number)
        taken.add(variable)
        key = _key(container, "argv", index)
        data[key] = argv[index]
        env.append({"name": variable, "valueFrom": _ref(secret, key)})
        argv[index] = f"$({variable})"
    if "command" in container:
        container["command"] = argv[: len(command)]
    if "args" in container or len(argv) > len(command):
        container["args"] = argv[len(command) :]


def _secret(job: dict[str, Any], data: dict[str, str]) -> dict[str, Any]:
    meta = job["metadata"]
    metadata: dict[str, Any] = {"name": meta["name"], "labels": dict(meta.get("labels") or {})}
    if meta.get("namespace"):
        metadata["namespace"] = meta["namespace"]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": "Opaque",
        "stringData": data,
    }


def _leftovers(real: Any, shown: Any, path: str = "") -> list[str]:
    """The paths where ``shown`` (the scrubbed Job) differs from ``real``: the secret
    values left in the Job."""
    if isinstance(real, dict) and isinstance(shown, dict):
        return [p for k in real for p in _leftovers(real[k], shown.get(k), f"{path}.{k}")]
    if isinstance(real, list) and isinstance(shown, list) and len(real) == len(shown):
        return [p for i, x in enumerate(real) for p in _leftovers(x, shown[i], f"{path}[{i}]")]
    return [] if real == shown else [path.lstrip(".")]
