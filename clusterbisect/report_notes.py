"""What a report notes about its evidence: a baseline that did not behave (with its
log), a ``--fail-on`` regex that cannot tell the runs apart, and the priors used."""

from __future__ import annotations

from typing import TYPE_CHECKING

from clusterbisect.journal import ProbeRecord

if TYPE_CHECKING:
    from clusterbisect.report import Evidence


def baseline_notes(evidence: Evidence) -> list[str]:
    """When a baseline did not behave, show its log: that is what the user must look at."""
    status = evidence.search.status
    if status not in ("baseline_failed", "not_reproducible"):
        return []
    wanted = "baseline-good" if status == "baseline_failed" else "baseline-bad"
    notes = []
    for record in evidence.records:
        if record.purpose == wanted:
            excerpt = evidence.excerpt(record)
            notes.append(
                f"{wanted} probe {record.probe_id}: {record.outcome}"
                + (f" ({record.observed})" if record.observed else "")
                + (f", infra error: {record.infra_error}" if record.infra_error else "")
                + (f"; log {record.log}:\n{excerpt}" if excerpt else "")
            )
    return notes


def signature_notes(evidence: Evidence) -> list[str]:
    """Hints about a ``--fail-on`` regex, from the baselines' logs: it matches both
    (so the text alone does not tell the failure apart), or it made a good baseline
    that exited 0 fail."""
    failure = evidence.failure
    if failure is None or not failure.fail_on:
        return []
    first: dict[str, tuple[ProbeRecord, bool]] = {}
    for record in evidence.records:
        if record.purpose in ("baseline-good", "baseline-bad") and record.log:
            matched = failure.text_matches(evidence.read_log(record.log))
            first.setdefault(record.purpose, (record, matched))
    good, bad = first.get("baseline-good"), first.get("baseline-bad")
    regex = f"/{failure.fail_on}/"
    if good and bad and good[1] and bad[1]:
        tail = (
            "only the non-zero exit tells them apart"
            if failure.needs_nonzero_exit
            else "choose text only the failing run prints, or --fail-on-exit nonzero"
        )
        return [
            f"the --fail-on regex {regex} matches the output of both baselines "
            f"({good[0].probe_id} and {bad[0].probe_id}): {tail}"
        ]
    if good and good[1] and good[0].exit_code == 0 and good[0].outcome == "fail":
        return [
            f"the good baseline ({good[0].probe_id}) exited 0 but its output matches {regex}; "
            "with --fail-on-exit nonzero the text counts only with a non-zero exit"
        ]
    return []


def priors_notes(evidence: Evidence) -> list[str]:
    """Which changes the priors made suspects, and which were searched first."""
    if evidence.priors is None:
        return []
    weights = evidence.priors["weights"]
    source, searched = evidence.priors["source"], len(evidence.problem.testable)
    if not weights:
        return [f"priors from {source}: none of the {searched} changes searched is a suspect"]
    top = max(weights.values())
    first = [k for k, w in weights.items() if w == top]
    return [
        f"priors from {source}: {len(weights)} of the {searched} changes searched "
        f"{'is a suspect' if len(weights) == 1 else 'are suspects'}; searched first: "
        + ", ".join(first)
    ]
