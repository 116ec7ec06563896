"""The triage result as a text table for people (values already redacted)."""

from __future__ import annotations

import json
from typing import Any

from clusterbisect.triage.result import (
    NOTHING_TO_EXPLAIN,
    SettingValue,
    SuspectReport,
    TriageResult,
)

WIDTH = 60
BUNDLE_SHOWN = 12


def _value(value: Any, width: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 3] + "..."


def _setting(key: str, value: Any, present: bool) -> str:
    return f"{key} = {_value(value)}" if present else f"{key} (unset)"


def _pct(rate: float) -> str:
    return f"{100 * rate:.0f}%"


def render_text(result: TriageResult) -> str:
    """The result as people read it: counts, signatures, suspects, interactions, pair."""
    lines = [_counts(result), ""]
    if result.status == NOTHING_TO_EXPLAIN:
        lines.append(f"Nothing to explain: {result.message}")
        return "\n".join(lines) + "\n"
    lines += _signatures(result)
    lines += _suspects(result)
    lines += _interactions(result)
    lines += _pair(result)
    lines.append(result.message)
    return "\n".join(lines) + "\n"


def _counts(result: TriageResult) -> str:
    parts = [f"{result.succeeded} succeeded", f"{result.failed} failed"]
    if result.running:
        parts.append(f"{result.running} running")
    if result.unknown:
        parts.append(f"{result.unknown} unknown")
    text = f"{result.jobs} jobs: {', '.join(parts)}"
    if result.left_out:
        text += "\nLeft out: " + ", ".join(
            f"{n} {k.replace('_', ' ')}" for k, n in result.left_out.items()
        )
    for resource, why in result.unread.items():
        text += f"\nNot read: {resource} ({why})"
    return text


def _signatures(result: TriageResult) -> list[str]:
    lines = ["Failure signatures, largest first (* the one explained; the others are background):"]
    width = max(len(str(s.count)) for s in result.signatures) if result.signatures else 1
    for s in result.signatures:
        mark = "*" if s.explained else " "
        lines.append(f"  {mark} {s.count:>{width}}  {s.signature}")
        lines.append(f"    {'':>{width}}  e.g. {', '.join(s.examples)}")
    lines.append("")
    return lines


def _suspects(result: TriageResult) -> list[str]:
    head = (
        f"Suspects for the {result.explained} failures, among {result.analysed} jobs "
        f"(succeeded, or failed with this signature):"
    )
    if not result.suspects:
        return [head, "  none: no setting value has a higher failure rate with it", ""]
    number = {s.key: i for i, s in reversed(list(enumerate(result.suspects, 1)))}
    rows = [
        (
            str(i),
            _setting(s.key, s.value, s.present),
            f"{s.failed}/{s.total}",
            _pct(s.failure_rate),
            _pct(s.rate_without),
            f"{s.score:.1f}{_mark(s, number)}",
        )
        for i, s in enumerate(result.suspects, 1)
    ]
    header = ("#", "SETTING", "FAILED/JOBS", "RATE", "WITHOUT", "SCORE")
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    widths[1] = min(widths[1], WIDTH + 20)
    lines = [head, "  " + "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    for row, suspect in zip(rows, result.suspects, strict=True):
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
        lines += _bundle(suspect)
    lines.append(
        f"  * significant: score (-log10 p, Fisher's exact test) of at least "
        f"{result.threshold:.2f}, Bonferroni over {result.tested} sets of jobs"
    )
    if any(s.explained_by for s in result.suspects):
        lines.append(
            "  ~#N: would be significant, but not among the jobs without suspect #N: "
            "it goes with the failure only through it"
        )
    lines.append("")
    return lines


def _mark(suspect: SuspectReport, number: dict[str, int]) -> str:
    if suspect.significant:
        return "*"
    if suspect.explained_by:
        return f" ~#{number.get(suspect.explained_by, '?')}"
    return ""


def _bundle(suspect: SuspectReport) -> list[str]:
    if not suspect.bundle:
        return []
    n = len(suspect.bundle) + 1
    lines = [f"     these {n} settings always change together: only a bisection can split them"]
    shown: list[SettingValue] = suspect.bundle[:BUNDLE_SHOWN]
    lines += [f"       {_setting(b.key, b.value, b.present)}" for b in shown]
    if len(suspect.bundle) > BUNDLE_SHOWN:
        lines.append(f"       ... and {len(suspect.bundle) - BUNDLE_SHOWN} more")
    return lines


def _interactions(result: TriageResult) -> list[str]:
    if not result.interactions:
        return []
    lines = ["Interactions (fail only when both are present):"]
    for x in result.interactions:
        first = _setting(x.first.key, x.first.value, x.first.present)
        second = _setting(x.second.key, x.second.value, x.second.present)
        lines.append(f"  {first}  +  {second}")
        lines.append(
            f"    both: {x.both.failed}/{x.both.total} failed; first alone: "
            f"{x.first_only.failed}/{x.first_only.total}; second alone: "
            f"{x.second_only.failed}/{x.second_only.total}; score {x.score:.1f}"
        )
    lines.append("")
    return lines


def _pair(result: TriageResult) -> list[str]:
    pair = result.pair
    if pair is None:
        return [f"No pair: {result.pair_note}", ""] if result.pair_note else []
    noun = "setting differs" if pair.changes == 1 else "settings differ"
    lines = [
        f"Pair to bisect (workload {pair.workload}, {pair.kind}; {pair.changes} {noun}):",
        f"  good  {_ref(pair.good_namespace, pair.good)}",
        f"  bad   {_ref(pair.bad_namespace, pair.bad)}",
    ]
    if pair.candidates:
        lines.append(f"  suspects among the differences: {', '.join(pair.candidates[:8])}")
    for name, path in result.files.items():
        lines.append(f"  {name}: {path}")
    lines.append("")
    return lines


def _ref(namespace: str, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name
