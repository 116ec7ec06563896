"""What one probe creates on Kubernetes (its ConfigMap, Secret and Job, as sent and as
shown), and a rejected field of a probe Job named as the spec's setting."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import yaml

from clusterbisect.diff import Change
from clusterbisect.errors import InputError
from clusterbisect.redact import Redactor
from clusterbisect.runners.base import PrivateFile
from clusterbisect.runners.kubernetes import pipjob, secretref
from clusterbisect.runners.kubernetes.client import field_path


def field_error(
    good: Any, job: dict[str, Any], problems: list[tuple[Any, ...]], changes: list[Change] | None
) -> InputError:
    """The unknown (or mistyped) fields of a probe Job, named as the spec's settings
    (``containers[trainer].envv``) when they are in a container."""
    pod = job["spec"]["template"]["spec"]
    fields = [(setting_path(tuple(loc), pod), message) for loc, message in problems]
    path = fields[0][0]
    related = [c.key for c in changes or [] if c.key.startswith(path) or path.startswith(c.key)]
    if changes is None:
        origin = f"it is in the good spec {good.source}, so in every probe"
    elif related:
        origin = f"it comes from the change {', '.join(related)} of the bad spec"
    else:
        origin = "it comes from the changes of the bad spec"
    listed = "; ".join(f"{p}: {m}" for p, m in fields)
    return InputError(
        f"{listed} in the {good.kind}'s pod template: the Kubernetes API has no such "
        f"field ({origin})",
        details={"fields": [p for p, _ in fields]},
    )


def setting_path(loc: tuple[Any, ...], pod: dict[str, Any]) -> str:
    """A probe Job's field path as the spec's setting key where it can be one."""
    base = ("spec", "template", "spec")
    if loc[:3] != base:
        return field_path(loc)
    rest = loc[3:]
    if len(rest) >= 2 and rest[0] in ("containers", "initContainers") and isinstance(rest[1], int):
        items = pod.get(rest[0]) or []
        name = items[rest[1]].get("name") if rest[1] < len(items) else None
        if name:
            prefix = "containers" if rest[0] == "containers" else "initContainers"
            tail = field_path(rest[2:])
            joined = f"{prefix}[{name}]"
            return joined + ("" if not tail else tail if tail.startswith("[") else "." + tail)
    return field_path(rest)


@dataclass
class ProbeObjects:
    """What one probe creates: the ``--probe`` ConfigMap (or None), and its Job with
    its secret values moved into a Secret (``secretref.Externalized``)."""

    configmap: dict[str, Any] | None
    moved: secretref.Externalized

    def manifests(self) -> list[dict[str, Any]]:
        """In the order they are created: [ConfigMap], [Secret], Job."""
        found = [self.configmap, self.moved.secret, self.moved.job]
        return [m for m in found if m is not None]

    def shown(self, redactor: Redactor) -> list[dict[str, Any]]:
        """For people and files: [ConfigMap], the Job (which holds no secret value, nor
        the credentials of a pip freeze's index URLs)."""
        # A Job refers to its Secret (a `--password $(VAR)` stays as it is); anything
        # else keeps its secrets and is shown with them hidden by name and shape too.
        hide = redactor.value if self.moved.job["kind"] == "Job" else redactor.setting
        job = pipjob.hide_credentials(copy.deepcopy(hide(self.moved.job)))
        return [m for m in (self.configmap, job) if m is not None]

    def private(self) -> PrivateFile | None:
        """The Secret to apply with the shown Job; or, when a secret stayed in the Job
        (:attr:`secretref.Externalized.unreferenced`), everything to apply instead."""
        secret, leftovers = self.moved.secret, self.moved.unreferenced
        if secret is None and not leftovers:
            return None
        if not leftovers:
            return PrivateFile(
                suffix=".secret.yaml",
                text=yaml.safe_dump(secret, sort_keys=False),
                holds="the probe's Secret, which its Job refers to",
                usage="kubectl apply -f {private} && kubectl create -f {rendered}",
            )
        return PrivateFile(
            suffix=".secret.yaml",
            text=yaml.safe_dump_all(self.manifests(), sort_keys=False),
            holds="the probe's Secret and its Job as launched: a secret value a manifest "
            f"cannot refer to stays in the Job ({', '.join(leftovers)})",
            usage="kubectl apply -f {private}",
        )
