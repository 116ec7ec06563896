"""The result of a bisection, as a JSON document and as text or Markdown.

``build_result`` makes the one document every form is rendered from, out of an
:class:`Evidence` (data: the search's result, the problem, the journal, how to read a
probe's log, the session's redactor). It is what ``run --json`` prints and what
``result.json`` in the state directory holds, so ``clusterbisect report`` can render it
again later. It holds no secret value: a culprit's secret settings are shown by name,
with whether the secret changed and a short fingerprint of each side's value.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clusterbisect import report_notes
from clusterbisect.diff import Change
from clusterbisect.journal import ProbeRecord
from clusterbisect.outcome import FailureSignature
from clusterbisect.problem import Problem
from clusterbisect.redact import Redactor
from clusterbisect.search.base import SearchResult, Subset
from clusterbisect.terminal import printable

EXCERPT_LINES = 12
EXCERPT_CHARS = 1500
EXCERPT_LINE_CHARS = 160


@dataclass
class Evidence:
    """Everything a report is made of, as data.

    ``records`` are the session's probes (those of the changes it searches), ``rounds``
    how many batches they ran in; ``session`` names the session (``state_dir``,
    ``session_id``, ``backend``, ``good``, ``bad``); ``signature`` describes the failure
    signature. ``read_log`` gives a probe log's text by its journaled (relative) path:
    the session reads its files, the report only quotes them; ``redactor`` hides the
    session's secrets in what it quotes, and fingerprints them. ``probe_timeout`` is
    the per-probe limit and its rule (``engine.ProbeTimeout.to_dict``); ``next_step``
    what to run next when the search is inconclusive (``nextstep.py``).
    """

    search: SearchResult
    problem: Problem
    records: list[ProbeRecord]
    rounds: int
    strategy: str
    signature: str
    session: dict[str, str]
    elapsed_s: float
    read_log: Callable[[str], str]
    redactor: Redactor
    # Where probes ran, what they ran, what of the job they did not carry
    # (``runners.base.Fidelity.to_dict``).
    fidelity: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # about the scope (--ignore)
    stopped_early: str | None = None  # why the budget ended the run ("the probe budget ...")
    continue_with: str | None = None  # how to go on after a budget stop
    failure: FailureSignature | None = None  # the signature itself, to check it on the logs
    notes: list[str] = field(default_factory=list)  # the session's own (a signature decided)
    probe_timeout: dict[str, Any] | None = None
    next_step: dict[str, Any] | None = field(default=None)
    backend_notes: list[str] = field(default_factory=list)  # what every probe changed
    priors: dict[str, Any] | None = None  # {"source", "weights": {key: weight}} if given

    def runs_of(self, subset: Subset) -> list[ProbeRecord]:
        """The journaled runs of ``subset``, in order."""
        keys = self.problem.subset_keys(subset)
        return [r for r in self.records if sorted(r.subset) == keys]

    def excerpt(self, record: ProbeRecord) -> str:
        """The lines of a probe's log that show its failure, without a secret of the
        session and with terminal controls removed: those around the line the signature
        matched, else the last ones."""
        if not record.log:
            return ""
        # Scrubbed before it is cut, so that no cut leaves part of a secret behind.
        text = printable(self.redactor.text(self.read_log(record.log)))
        lines = [_clip(line) for line in text.splitlines() if line.strip()]
        end = _matched_line_end(lines, record.observed)
        return "\n".join(lines[max(0, end - EXCERPT_LINES) : end])[-EXCERPT_CHARS:]

    def shown_change(self, change: Change) -> dict[str, Any]:
        """A culprit's change for the report; a secret one (by name, or holding a
        credential) says whether its secret changed, with each side's fingerprint."""
        shown = change.to_dict()
        involved = self.redactor.involvement(change.secret, change.good, change.bad)
        if involved is not None:
            shown["secret"] = involved
        return shown


def _matched_line_end(lines: list[str], observed: str) -> int:
    """Where an excerpt of ``lines`` ends: a few lines past the one ``observed`` quotes
    (``matched: LINE``), or at the end."""
    _, found, quoted = observed.partition("matched: ")
    needle = quoted.strip()[:80]
    if found and needle:
        for index, line in enumerate(lines):
            if needle in line:
                return min(len(lines), index + 1 + EXCERPT_LINES // 4)
    return len(lines)


def confidence_value(confidence: float) -> float:
    """A confidence for the report, never rounded up: below 1 stays below 1."""
    return 1.0 if confidence >= 1.0 else math.floor(confidence * 10_000) / 10_000


def confidence_text(confidence: float) -> str:
    """Two decimals, cut not rounded: 0.996 is "0.99", never "1.00"."""
    return "1.00" if confidence >= 1.0 else f"{math.floor(confidence * 100) / 100:.2f}"


def build_result(evidence: Evidence) -> dict[str, Any]:
    """The whole report of a session as one JSON-ready document."""
    problem, records = evidence.problem, evidence.records
    search = evidence.search
    n = len(problem.testable)
    culprits = [
        _culprit(evidence, c.changes, c.confidence, c.confirmed, c.evidence)
        for c in search.culprits
    ]
    for number, culprit in enumerate(culprits, 1):
        culprit["explains"] = _explains(culprit, number)
    document = {
        "status": search.status,
        "culprits": culprits,
        "probe_count": len(records),
        "rounds": evidence.rounds,
        "state_dir": evidence.session["state_dir"],
        "session_id": evidence.session["session_id"],
        "backend": evidence.session["backend"],
        "strategy": evidence.strategy,
        "good": evidence.session["good"],
        "bad": evidence.session["bad"],
        "changes_total": len(problem.changes),
        "changes_searched": n,
        "best_possible_probes": math.ceil(math.log2(n)) if n > 1 else 0,
        "untestable": problem.untestable_list(),
        "fidelity": evidence.fidelity,
        "signature": {
            "expected": evidence.signature,
            "observed": _observed_in_bad_baseline(records, n),
        },
        "candidates": [
            [c.to_dict() for c in problem.subset_changes(subset)] for subset in search.candidates
        ],
        "estimates": search.estimates,
        "probe_timeout": evidence.probe_timeout,
        "notes": [
            *evidence.notes,
            *search.notes,
            *evidence.backend_notes,
            *report_notes.baseline_notes(evidence),
            *report_notes.signature_notes(evidence),
            *report_notes.priors_notes(evidence),
        ],
        "warnings": list(evidence.warnings),
        "stopped_early": evidence.stopped_early,
        "continue_with": evidence.continue_with,
        "priors": evidence.priors,
        "next": evidence.next_step,
        "elapsed_s": round(evidence.elapsed_s, 3),
        "probes": [_probe(r) for r in records],
    }
    shown: dict[str, Any] = evidence.redactor.value(document)
    return shown


def _culprit(
    evidence: Evidence,
    subset: Subset,
    confidence: float,
    confirmed: bool,
    proofs: dict[str, object],
) -> dict[str, Any]:
    proof = _decisive_record(evidence, subset, "fail")
    rest = proofs.get("bad_minus_culprits")
    rest_record = _decisive_record(evidence, rest, None) if isinstance(rest, frozenset) else None
    return {
        "changes": [evidence.shown_change(c) for c in evidence.problem.subset_changes(subset)],
        "confidence": confidence_value(confidence),
        "confirmed": confirmed,
        "proof": {
            "probe": proof.probe_id if proof else None,
            "observed": proof.observed if proof else None,
            "log": proof.log if proof else None,
            "excerpt": evidence.excerpt(proof) if proof else "",
        },
        "confirmation": {
            "good_plus_culprit": _brief(proof),
            "bad_minus_culprits": _brief(rest_record),
        },
    }


def _explains(culprit: dict[str, Any], number: int) -> str:
    """How much of the failure a culprit accounts for, from the bad spec without it
    (and without the culprits found before it): ``all`` (that passes), ``rest`` (that
    passes, with the earlier culprits also taken out), ``part`` (that still fails:
    another change fails the job too), ``unknown`` (unresolved, or not probed)."""
    rest = culprit["confirmation"]["bad_minus_culprits"]
    outcome = rest["outcome"] if rest else None
    if outcome == "pass":
        return "all" if number == 1 else "rest"
    return "part" if outcome == "fail" else "unknown"


def _decisive_record(evidence: Evidence, subset: Subset, outcome: str | None) -> ProbeRecord | None:
    runs = evidence.runs_of(subset)
    for record in runs:
        if outcome is None and record.outcome != "unresolved":
            return record
        if record.outcome == outcome:
            return record
    return runs[-1] if runs else None


def _brief(record: ProbeRecord | None) -> dict[str, Any] | None:
    if record is None:
        return None
    return {"probe": record.probe_id, "outcome": record.outcome}


def _probe(record: ProbeRecord) -> dict[str, Any]:
    return {
        "id": record.probe_id,
        "round": record.round,
        "purpose": record.purpose,
        "subset": record.subset,
        "outcome": record.outcome,
        "exit_code": record.exit_code,
        "timed_out": record.timed_out,
        "reason": record.reason,
        "infra_error": record.infra_error,
        "duration_s": record.duration_s,
        "log": record.log,
        "observed": record.observed,
        "source": record.source,
    }


def _observed_in_bad_baseline(records: list[ProbeRecord], n: int) -> str | None:
    for record in records:
        if (
            record.purpose == "baseline-bad"
            and len(record.subset) == n
            and record.outcome == "fail"
        ):
            return record.observed
    return None


def _clip(line: str, width: int = EXCERPT_LINE_CHARS) -> str:
    return line if len(line) <= width else line[: width - 3] + "..."


# --- rendering --------------------------------------------------------------------------


def _value(value: Any) -> str:
    if value is None:
        return "(unset)"
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def render_text(result: dict[str, Any]) -> str:
    """The operator's report: verdict, culprits with evidence, what was not tested."""
    out = [_headline(result)]
    if result.get("continue_with"):
        out.append(f"  {result['continue_with'][0].upper()}{result['continue_with'][1:]}")
    out.append("")
    for number, culprit in enumerate(result["culprits"], 1):
        out += [*_culprit_lines(number, culprit), ""]
    if result["candidates"] and result["status"] != "found":
        out.append("Narrowest candidates known:")
        for candidate in result["candidates"]:
            out.append("  - " + ", ".join(c["key"] for c in candidate))
        out.append("")
    signature = result["signature"]
    out.append(f"Failure signature: {signature['expected']}")
    if signature["observed"]:
        out.append(f"  observed in the bad baseline: {signature['observed']}")
    out.append(
        f"Probes: {result['probe_count']} in {result['rounds']} rounds "
        f"({result['changes_searched']} changes searched, "
        f"log2 bound {result['best_possible_probes']}), {result['elapsed_s']:.1f} s"
    )
    rates = _rates(result)
    if rates:
        out.append(f"Failure rates: {rates}")
    if result.get("probe_timeout"):
        out.append(f"Probe timeout: {result['probe_timeout']['rule']}")
    out += _closing_lines(result)
    out.append(f"State: {result['state_dir']}")
    return "\n".join(out)


def _closing_lines(result: dict[str, Any]) -> list[str]:
    """What was left out, the notes and warnings, and what to run next."""
    out = []
    if result["untestable"]:
        out.append(
            f"Not testable on the {result['backend']} backend ({len(result['untestable'])}):"
        )
        for item in result["untestable"][:20]:
            out.append(f"  - {item['key']}: {item['reason']}")
        if len(result["untestable"]) > 20:
            out.append(f"  ... and {len(result['untestable']) - 20} more (see --json)")
    out += fidelity_lines(result.get("fidelity") or {})
    shown = f"stopped early: {result.get('stopped_early')}"  # already in the headline
    out += [f"Note: {note}" for note in result["notes"] if note != shown]
    for warning in result.get("warnings") or []:
        out.append(f"Warning: {warning}")
    if result.get("next") and not result.get("continue_with"):  # that one is said first
        out += [f"Next: {result['next']['why']}:", f"  {result['next']['command']}"]
    return out


def _claim(number: int, culprit: dict[str, Any]) -> str | None:
    """What a culprit's heading may say about it: only what its probes showed."""
    if not culprit["confirmed"]:
        return None
    explains = culprit.get("explains", "all")
    if explains == "part":
        return "fails on its own; explains only part of the failures"
    if explains == "rest":
        earlier = "culprit 1" if number == 2 else f"culprits 1-{number - 1}"
        return f"fails on its own; with {earlier}, explains every failure"
    return "confirmed both ways" if explains == "all" else None


def fidelity_lines(fidelity: dict[str, Any], limit: int = 20) -> list[str]:
    """Where the probes ran, what they ran, and the settings they did not carry."""
    out = []
    if fidelity.get("runs") or fidelity.get("target"):
        out.append(f"Probes run: {fidelity.get('runs') or '?'}; in {fidelity.get('target') or '?'}")
    items = fidelity.get("not_carried") or []
    if items:
        out.append(f"Not carried by the probes ({len(items)}):")
        for item in items[:limit]:
            out.append(f"  - {item['setting']} = {_value(item['value'])}: {item['reason']}")
        if len(items) > limit:
            out.append(f"  ... and {len(items) - limit} more (see --json)")
    return out


def _culprit_lines(number: int, culprit: dict[str, Any]) -> list[str]:
    """One culprit for the text report: its settings, the proof and the log excerpt."""
    kind = "interaction" if len(culprit["changes"]) > 1 else "single setting"
    claim = _claim(number, culprit)
    out = [
        f"Culprit {number} ({kind}, confidence {confidence_text(culprit['confidence'])}"
        f"{', ' + claim if claim else ''}):"
    ]
    width = max(len("SETTING"), *(len(c["key"]) for c in culprit["changes"]))
    out.append(f"  {'SETTING'.ljust(width)}  {'GOOD':<30}  BAD")
    for change in culprit["changes"]:
        out.append(
            f"  {change['key'].ljust(width)}  {_value(change['good']):<30}  {_value(change['bad'])}"
        )
    secrets = [
        f"{c['key']} {_secret_line(c['secret'])}" for c in culprit["changes"] if c.get("secret")
    ]
    if secrets:
        out.append("  Secrets involved (values never shown): " + "; ".join(secrets))
    proof = culprit["proof"]
    if not proof["probe"]:
        return out
    out.append(f"  Proved by probe {proof['probe']}: {proof['observed'] or 'failed'}")
    rest = _without_line(number, culprit)
    if rest:
        out.append(f"  {rest}")
    if proof["excerpt"]:
        out.append(f"  Log excerpt ({proof['log']}):")
        out.extend("    | " + line for line in proof["excerpt"].splitlines())
    return out


def _without_line(number: int, culprit: dict[str, Any]) -> str | None:
    """The probe of the bad spec without the culprit, and what it says."""
    conf = culprit["confirmation"]["bad_minus_culprits"]
    if not conf:
        return None
    probe = f"probe {conf['probe']} {conf['outcome']}"
    explains = culprit.get("explains")
    if explains == "part":
        return f"Bad spec without this culprit: {probe} (another change fails the job too)"
    if explains == "rest":
        return f"Bad spec without culprits 1-{number}: {probe}"
    return f"Bad spec without the culprits: {probe}"


def _secret_line(secret: dict[str, Any]) -> str:
    """``changed (fingerprint 1a2b3c4d -> 5e6f7a8b)``: how a culprit's secret moved."""
    sides = " -> ".join(secret.get(side) or "(none)" for side in ("good", "bad"))
    return f"{'changed' if secret.get('changed') else 'unchanged'} (fingerprint {sides})"


def _rates(result: dict[str, Any]) -> str | None:
    """The flake-aware search's failure rates, given or learned (None otherwise)."""
    estimates = result.get("estimates") or {}
    if "p" not in estimates or "q" not in estimates:
        return None
    return f"{estimates['p']:.2f} with the culprit (p), {estimates['q']:.2f} without it (q)"


def _headline(result: dict[str, Any]) -> str:
    status = result["status"]
    culprits = result["culprits"]
    if status == "found":
        named = [" + ".join(c["key"] for c in culprit["changes"]) for culprit in culprits]
        if len(named) == 1:
            return f"FOUND: {named[0]}"
        return f"FOUND {len(named)} culprits, each failing on its own: {'; '.join(named)}"
    return {
        "no_differences": "NO DIFFERENCES: the good and bad specs differ in nothing searchable",
        "not_reproducible": (
            "NOT REPRODUCIBLE: the good spec with every change applied did not fail"
        ),
        "baseline_failed": "BASELINE FAILED: the good spec without any change did not pass",
        "inconclusive": "INCONCLUSIVE: no culprit could be isolated",
    }.get(status, status.upper()) + (
        f" yet: stopped early, {result['stopped_early']}" if result.get("stopped_early") else ""
    )


def render_markdown(result: dict[str, Any]) -> str:
    """A Markdown report with a Mermaid diagram of how the candidates narrowed."""
    out = ["# clusterbisect report", "", f"**{_headline(result)}**", ""]
    if result.get("continue_with"):
        out += [f"To go on, {result['continue_with']}.", ""]
    out += [
        f"- Good: `{result['good']}`",
        f"- Bad: `{result['bad']}`",
        f"- Backend: {result['backend']}, strategy: {result['strategy']}",
        f"- Probes: {result['probe_count']} in {result['rounds']} rounds, "
        f"{result['elapsed_s']:.1f} s",
        *([f"- Failure rates: {_rates(result)}"] if _rates(result) else []),
        f"- Failure signature: {result['signature']['expected']}"
        + (
            f" (observed: {result['signature']['observed']})"
            if result["signature"]["observed"]
            else ""
        ),
        "",
    ]
    for number, culprit in enumerate(result["culprits"], 1):
        out += _markdown_culprit(number, culprit)
    out += ["## How the search narrowed", "", "```mermaid", *mermaid(result), "```", ""]
    out += ["## Probes", "", "| probe | round | purpose | changes applied | outcome |"]
    out.append("|---|---|---|---|---|")
    for probe in result["probes"]:
        out.append(
            f"| {probe['id']} | {probe['round']} | {probe['purpose']} | "
            f"{len(probe['subset'])} | {probe['outcome']} |"
        )
    if result["untestable"]:
        out += ["", "## Not testable on this backend", ""]
        out += [f"- `{u['key']}`: {u['reason']}" for u in result["untestable"]]
    out += _markdown_fidelity(result.get("fidelity") or {})
    if result["notes"]:
        out += ["", "## Notes", ""] + [f"- {note}" for note in result["notes"]]
    if result.get("next") and not result.get("continue_with"):  # said first
        out += ["", "## Next", "", result["next"]["why"] + ":", "", "```"]
        out += [result["next"]["command"], "```"]
    return "\n".join(out) + "\n"


def _markdown_culprit(number: int, culprit: dict[str, Any]) -> list[str]:
    """One culprit of the Markdown report: its settings, secrets, proof and excerpt."""
    out = [f"## Culprit {number} (confidence {confidence_text(culprit['confidence'])})", ""]
    out += ["| setting | good | bad |", "|---|---|---|"]
    for change in culprit["changes"]:
        out.append(
            f"| `{change['key']}` | `{_value(change['good'])}` | `{_value(change['bad'])}` |"
        )
    for change in culprit["changes"]:
        if change.get("secret"):
            out.append("")
            out.append(f"Secret `{change['key']}`: {_secret_line(change['secret'])}.")
    proof = culprit["proof"]
    if proof["probe"]:
        out += ["", f"Proved by probe `{proof['probe']}`: {proof['observed']}", ""]
        rest = _without_line(number, culprit)
        if rest:
            out += [rest, ""]
        if proof["excerpt"]:
            out += ["```", proof["excerpt"], "```"]
    out.append("")
    return out


def _markdown_fidelity(fidelity: dict[str, Any]) -> list[str]:
    """Where the probes ran and what of the job they did not carry."""
    if not (fidelity.get("runs") or fidelity.get("not_carried")):
        return []
    out = ["", "## What the probes ran", ""]
    out.append(f"{fidelity.get('runs') or '?'}; in {fidelity.get('target') or '?'}.")
    if fidelity.get("not_carried"):
        out += ["", "Not carried by the probes:", ""]
        out += [
            f"- `{n['setting']}` = `{_value(n['value'])}`: {n['reason']}"
            for n in fidelity["not_carried"]
        ]
    return out


def mermaid(result: dict[str, Any]) -> list[str]:
    """A flowchart: one node per probe, in order, coloured by outcome."""
    lines = ["flowchart TD"]
    previous = None
    for probe in result["probes"]:
        size = len(probe["subset"])
        plural = "s" if size != 1 else ""
        label = f"{probe['id']} {probe['purpose']}<br/>{size} change{plural}: {probe['outcome']}"
        lines.append(f'  {probe["id"]}["{label}"]:::{probe["outcome"]}')
        if previous:
            lines.append(f"  {previous} --> {probe['id']}")
        previous = probe["id"]
    for number, culprit in enumerate(result["culprits"], 1):
        keys = ", ".join(c["key"] for c in culprit["changes"]).replace('"', "#quot;")
        lines.append(f'  culprit{number}(["culprit: {keys}"]):::fail')
        if culprit["proof"]["probe"]:
            lines.append(f"  {culprit['proof']['probe']} ==> culprit{number}")
    lines += [
        "  classDef pass fill:#d4f7d4,stroke:#2a7a2a",
        "  classDef fail fill:#f7d4d4,stroke:#a02a2a",
        "  classDef unresolved fill:#eeeeee,stroke:#777777",
    ]
    return lines
