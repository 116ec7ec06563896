"""Changes between two specs: the list the bisection searches.

INTERFACE (implementation in progress, see issue 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clusterbisect.settings import PathSegment

REDACTED = "<redacted>"
MODIFIED = "modified"
ADDED = "added"
REMOVED = "removed"


@dataclass(frozen=True)
class Change:
    """A setting whose value differs between the good and the bad spec."""

    key: str
    change: str  # modified | added | removed
    good: Any  # None when added
    bad: Any  # None when removed
    category: str
    path: tuple[PathSegment, ...] = ()
    secret: bool = False
    container: str | None = None
    env_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The public, redacted form: {"key", "change", "good", "bad", "category"}."""
        return {
            "key": self.key,
            "change": self.change,
            "good": redact_value(self.good) if self.secret else self.good,
            "bad": redact_value(self.bad) if self.secret else self.bad,
            "category": self.category,
        }


def redact_value(value: Any) -> Any:
    """Hide a secret value; keep ``None`` so that added/removed still reads right."""
    return None if value is None else REDACTED
