"""Durations written kubectl's way (``90s``, ``30m``, ``2h``, ``1d``, ``1h30m``), as
``triage --since`` takes them."""

from __future__ import annotations

import re

from clusterbisect.errors import InputError

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# The JSON Schema pattern of a duration option (the tools check it before we parse).
DURATION = r"^\s*(\d+(\.\d+)?[smhdwSMHDW])+\s*$"


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
