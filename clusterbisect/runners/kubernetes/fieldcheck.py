"""Unknown fields of a probe Job, named as the spec's settings (pure).

The runner checks a probe Job against the client's own model of a Job before any probe
runs (``client.model_problems``); a field the Kubernetes API does not know is bad input,
said with the setting it is (``containers[trainer].envv``) and where it came from.
"""

from __future__ import annotations

from typing import Any

from clusterbisect.diff import Change
from clusterbisect.errors import InputError
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
