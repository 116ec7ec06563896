"""What ``triage`` is asked: where the jobs come from and how to analyse them.

One dataclass for now; issue 12 moves option dataclasses into ``config.py``, where
this one's fields can generate the click options and the tool schema.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from clusterbisect.errors import InputError
from clusterbisect.triage.suspects import ALPHA

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, field_name: str = "--since") -> float:
    """Seconds in ``90s``, ``30m``, ``2h``, ``1d``, ``1h30m`` (kubectl's style)."""
    cleaned = text.strip().lower()
    parts = _DURATION_PART.findall(cleaned)
    if not cleaned or "".join(n + u for n, u in parts) != cleaned:
        raise InputError(
            f"expected a duration such as 90s, 30m, 2h, 1d or 1h30m, got {text!r}",
            field=field_name,
        )
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds <= 0:
        raise InputError(f"expected a positive duration, got {text!r}", field=field_name)
    return seconds


@dataclass
class ClusterQuery:
    """Which jobs to read from a live cluster (kubectl's connection options)."""

    namespace: str | None = None
    all_namespaces: bool = False
    selector: str | None = None  # label selector on the Jobs
    kubeconfig: str | None = None
    context: str | None = None
    logs: int = 0  # last N log lines of each failed job's failed container
    page_size: int = 500  # list calls return at most this many objects

    def __post_init__(self) -> None:
        if self.all_namespaces and self.namespace:
            raise InputError("give -n/--namespace or -A/--all-namespaces, not both")
        if self.logs < 0:
            raise InputError(f"expected 0 or more lines, got {self.logs}", field="--logs")
        if self.page_size < 1:
            raise InputError(f"expected at least 1, got {self.page_size}", field="page_size")


@dataclass
class TriageOptions:
    """Sources beyond files, the failure to explain, and how to report it.

    ``since_s`` keeps jobs created in the last that many seconds (relative to
    ``now``, seconds since the epoch; the caller's clock when None). ``out_dir``: where
    the pair's spec files and the result are written (nothing is written without it).
    """

    cluster: ClusterQuery | None = None
    ray_address: str | None = None
    ray_logs: int = 0
    signature: str | None = None  # --signature REGEX; default the largest cluster
    ignore: list[str] = field(default_factory=list)  # --ignore GLOB, as diff's
    since_s: float | None = None
    now: float | None = None
    workload_label: str | None = None
    top: int = 20  # suspects reported
    min_jobs: int = 2  # a value held by fewer jobs is not tested
    interaction_top: int = 5  # the top suspects checked in pairs
    alpha: float = ALPHA
    out_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.top < 1:
            raise InputError(f"expected at least 1, got {self.top}", field="--top")
        if self.min_jobs < 1:
            raise InputError(f"expected at least 1, got {self.min_jobs}", field="min_jobs")
        if not 0 < self.alpha < 1:
            raise InputError(f"expected a number between 0 and 1, got {self.alpha}", field="alpha")
        if self.out_dir is not None:
            self.out_dir = Path(self.out_dir)
