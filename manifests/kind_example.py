#!/usr/bin/env python3
"""Make a kind-sized copy of a captured Job, so its probes can run on a laptop.

    python manifests/kind_example.py examples/training-upgrade/good.yaml > /tmp/good-kind.yaml

The same rewrite is applied to GOOD and BAD, so the differences between them stay the
same settings (only quantities are scaled down):

- memory and ephemeral-storage are divided by 256 (64Gi -> 256Mi, 96Gi -> 384Mi), CPU
  by 16 (8 -> 500m, 12 -> 750m); GPU requests and limits are dropped (kind has none);
- persistentVolumeClaim volumes become emptyDirs (local-path volumes are bound to one
  node, and probes run on both node pools); emptyDir size limits are scaled likewise.

Everything else (image, env, node selector, tolerations, priority class, service
account, secret references) is kept; manifests/kind-cluster.yaml and
manifests/example/training-upgrade.yaml provide what they refer to.
"""

from __future__ import annotations

import re
import sys
from typing import Any

import yaml

GPU = "nvidia.com/gpu"
_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti)?$")
_UNITS = {None: 1, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40}


def scale_bytes(value: Any, factor: int = 256) -> Any:
    """``64Gi`` -> ``256Mi``: a byte quantity divided by ``factor``, in Mi."""
    match = _QUANTITY.match(str(value))
    if not match:
        return value
    size = float(match[1]) * _UNITS[match[2]] / factor
    return f"{max(1, round(size / (1 << 20)))}Mi"


def scale_cpu(value: Any, factor: int = 16) -> Any:
    """``8`` -> ``500m``."""
    text = str(value)
    millis = int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)
    return f"{max(10, millis // factor)}m"


def shrink_resources(resources: dict[str, Any]) -> None:
    for group in ("requests", "limits"):
        amounts = resources.get(group)
        if not isinstance(amounts, dict):
            continue
        amounts.pop(GPU, None)
        for name in list(amounts):
            if name in ("memory", "ephemeral-storage"):
                amounts[name] = scale_bytes(amounts[name])
            elif name == "cpu":
                amounts[name] = scale_cpu(amounts[name])
        if not amounts:
            resources.pop(group)


def kind_sized(job: dict[str, Any]) -> dict[str, Any]:
    """The rewrite described above, in place; returns ``job``."""
    pod = job["spec"]["template"]["spec"]
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        shrink_resources(container.get("resources") or {})
    for volume in pod.get("volumes", []):
        if "persistentVolumeClaim" in volume:
            del volume["persistentVolumeClaim"]
            volume["emptyDir"] = {}
        elif isinstance(volume.get("emptyDir"), dict) and "sizeLimit" in volume["emptyDir"]:
            volume["emptyDir"]["sizeLimit"] = scale_bytes(volume["emptyDir"]["sizeLimit"])
    return job


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: kind_example.py JOB.yaml > JOB-kind.yaml", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as handle:
        job = yaml.safe_load(handle)
    sys.stdout.write(yaml.safe_dump(kind_sized(job), sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
