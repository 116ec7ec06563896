"""Compact forms of the step mode's documents: what an agent needs to act, once.

``next``, ``record``, ``start`` and ``status`` answer with these by default (the CLI's
``--json`` and the tools); ``--verbose`` (``verbose: true``) gives the full documents
of :mod:`clusterbisect.stepmode`. A full ``next`` view repeats itself: every change of
the probe with both values, the same changes again inside the rendered Job (its
changes annotation), every pending probe's change keys, the untestable list. Compact:

- ``probe.changes`` is the list of keys applied (the values are in the rendering);
- ``probe.rendered`` stays inline only when it is what to run on this machine (an
  ``env``, an ``argv`` and the pins to install, without the changes it repeats); a
  Job or a Ray submission is in ``probe.rendered_file``;
- ``pending`` gives each probe's id, purpose, runs and number of changes;
- ``untestable`` becomes ``untestable_count``;
- a ``record`` reply holds the compact ``next`` view, never the full one.

Pure: documents in, documents out.
"""

from __future__ import annotations

from typing import Any

# What a compact probe shortens; every other key of a probe is kept as it is (how to
# run it: rendered_file, private_file, use, exec, unset, redacted...).
_SHORTENED = ("changes", "rendered")


def probe(described: dict[str, Any], local_process: bool) -> dict[str, Any]:
    """A probe of a ``next`` view, compact (see the module docstring)."""
    out = {k: v for k, v in described.items() if k not in _SHORTENED}
    out["changes"] = [c["key"] if isinstance(c, dict) else c for c in described["changes"]]
    rendered = described.get("rendered")
    if local_process and isinstance(rendered, dict):
        out["rendered"] = {k: rendered[k] for k in ("argv", "env", "requirements") if k in rendered}
    else:
        out["run"] = "launch what rendered_file holds (verbose: inline), then record"
    return out


def next_view(view: dict[str, Any], local_process: bool) -> dict[str, Any]:
    """A ``next`` view (or a ``status`` one), compact."""
    out: dict[str, Any] = {}
    for key, value in view.items():  # in the view's order
        if key == "untestable":
            out["untestable_count"] = len(value)
        elif key == "probe":
            out["probe"] = probe(value, local_process)
        elif key == "pending":
            out["pending"] = [_pending(p) for p in value]
        else:
            out[key] = value
    return out


def _pending(item: Any) -> Any:
    if not isinstance(item, dict):
        return item  # status lists the ids only
    short = {k: v for k, v in item.items() if k != "subset"}
    short["changes_applied"] = len(item.get("subset") or [])
    return short


def with_next(reply: dict[str, Any], local_process: bool) -> dict[str, Any]:
    """A ``start``, ``record`` or ``replay`` reply: as it is, with its ``next`` view
    compact (``start`` keeps the session's untestable list: it is said once)."""
    return {**reply, "next": next_view(reply["next"], local_process)}
