"""The spec: one job's configuration, loaded from a file or a cluster, noise stripped."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

# Spec formats. Two specs can only be compared when their formats (and, for
# Kubernetes, their pod-template layout) match.
KUBERNETES = "kubernetes"
RAY_JOB = "ray_job"
ENV = "env"
PIP = "pip"
SNAPSHOT = "snapshot"


@dataclass
class Spec:
    """One job's configuration.

    ``document`` is the normalised data (noise already stripped) that settings are
    flattened from and that changes are applied back onto. ``kind`` is the Kubernetes
    kind for Kubernetes objects (``Job``, ``PyTorchJob``, ...) and a descriptive name
    for the other formats (``RayJobSpec``, ``EnvFile``, ``PipFreeze``, ``Snapshot``).
    """

    format: str
    kind: str
    source: str
    document: dict[str, Any]
    api_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def copy(self) -> Spec:
        return Spec(
            format=self.format,
            kind=self.kind,
            source=self.source,
            document=copy.deepcopy(self.document),
            api_version=self.api_version,
            extra=copy.deepcopy(self.extra),
        )
