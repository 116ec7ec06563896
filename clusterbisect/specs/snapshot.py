"""The JSON snapshot written by ``probes/snapshot.py`` from inside a running job.

Keys: ``env.X``, ``packages.<name>`` (canonical name, value the version),
``python.version``, ``python.implementation``, ``os.*`` (kernel in ``os.release``),
``cpu.*``, ``gpu.*``, ``ulimits.*``, ``shm.*``. When it was taken and on which host
(``captured_at``, ``hostname``, ``env.HOSTNAME``) is noise.
"""

from __future__ import annotations

from typing import Any

from clusterbisect.errors import InputError
from clusterbisect.specs.model import SNAPSHOT, Spec
from clusterbisect.specs.pip import canonicalize_name
from clusterbisect.specs.yamlio import plain

MARKER = "clusterbisect_snapshot"
SNAPSHOT_NOISE = frozenset({MARKER, "captured_at", "hostname", "duration_s"})
ENV_NOISE = frozenset({"HOSTNAME", "_", "SHLVL", "OLDPWD"})


def is_snapshot(doc: dict[str, Any]) -> bool:
    """A mapping carrying the snapshot marker."""
    return MARKER in doc


def parse(doc: dict[str, Any], source: str) -> Spec:
    """Normalise a snapshot mapping into a spec."""
    out = {k: plain(v) for k, v in doc.items() if k not in SNAPSHOT_NOISE}
    env = out.get("env", {})
    if not isinstance(env, dict):
        raise InputError("expected a mapping", source=source, field="env")
    out["env"] = {str(k): v for k, v in env.items() if k not in ENV_NOISE}
    packages = out.get("packages", {})
    if not isinstance(packages, dict):
        raise InputError("expected a mapping of name to version", source=source, field="packages")
    out["packages"] = {canonicalize_name(str(k)): v for k, v in sorted(packages.items())}
    return Spec(
        format=SNAPSHOT,
        kind="Snapshot",
        source=source,
        document=out,
        extra={"hostname": doc.get("hostname"), "captured_at": doc.get("captured_at")},
    )
