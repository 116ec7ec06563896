"""From jobs to a triage result: signatures, suspects, bundles, interactions, the pair.

Pure: no file, network or clock. The steps:

1. Outcomes: count succeeded, failed, running and unknown jobs. No failed job: the
   status is ``nothing_to_explain``.
2. Signatures: each failed job's failure text, normalised and clustered; the failure
   to explain is the largest cluster, or those matching ``--signature``. Failures with
   other signatures are background: left out of the analysis, not counted as passes.
3. Suspects: over the succeeded jobs and the explained failures, every setting value
   (and absence) scored by Fisher's exact test; equal job sets are one bundle.
4. Interactions: the top suspects checked in pairs.
5. The pair: a good and a bad job of the same workload with the fewest differences,
   the top suspect (and its partner in an interaction) among them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from clusterbisect.config import ScopeOptions, TriageOptions
from clusterbisect.diff import diff
from clusterbisect.errors import InputError
from clusterbisect.redact import redact_text, redact_value
from clusterbisect.specs import kubernetes as k8s
from clusterbisect.specs.model import KUBERNETES, Spec
from clusterbisect.triage.interactions import Interaction, find_interactions, partners
from clusterbisect.triage.jobs import Fleet
from clusterbisect.triage.model import FAILED, OUTCOMES, RUNNING, SUCCEEDED, UNKNOWN, Job
from clusterbisect.triage.pair import PairChoice, choose_pair
from clusterbisect.triage.priors import Priors, priors_from_result
from clusterbisect.triage.result import (
    NO_SIGNIFICANT_SUSPECT,
    NOTHING_TO_EXPLAIN,
    SUSPECTS_FOUND,
    GroupReport,
    InteractionReport,
    PairReport,
    SettingValue,
    SignatureReport,
    SuspectReport,
    TriageResult,
)
from clusterbisect.triage.signatures import Failure, choose, cluster, failure_of
from clusterbisect.triage.suspects import Suspect, explain_away, rank_suspects, threshold
from clusterbisect.triage.table import SettingsTable, Token, secret_texts, tabulate

EXAMPLES = 3  # example jobs per signature
SIGNATURES_SHOWN = 20


@dataclass
class Analysis:
    """The result, and the specs of the pair (with their real values, for the files)."""

    result: TriageResult
    good: Spec | None = None
    bad: Spec | None = None
    priors: Priors | None = None


def analyse(
    fleet: Fleet,
    options: TriageOptions,
    scope: ScopeOptions | None = None,
    sources: Sequence[str] = (),
) -> Analysis:
    """Triage ``fleet``; ``scope`` leaves settings out as ``diff`` does (``--ignore``,
    ``--container``). Raises ``InputError`` when there is no job, or no success to
    compare the failures with."""
    scope = scope or ScopeOptions()
    result = _counted(fleet, sources)
    failed_jobs = [j for j in fleet.jobs if j.outcome == FAILED]
    if not failed_jobs:
        result.message = (
            f"none of the {result.jobs} jobs failed ({result.succeeded} succeeded, the "
            "others have not finished or their outcome is unknown)"
        )
        return Analysis(result)
    # Every job with a spec is tabulated: the secrets of all of them are known before
    # any failure text is shown.
    with_spec = [j for j in fleet.jobs if j.spec is not None]
    table = tabulate([j.spec for j in with_spec if j.spec is not None], scope)
    explained = _signatures(result, failed_jobs, secret_texts(table), options)
    position = {id(j): i for i, j in enumerate(with_spec)}
    good = [position[id(j)] for j in fleet.jobs if j.outcome == SUCCEEDED and id(j) in position]
    bad = [position[id(j)] for j in explained if id(j) in position]
    _require_both_sides(fleet.jobs, explained, good, bad, ", ".join(sources) or None)
    required = _suspects(result, table, good, bad, options)
    analysis = Analysis(result)
    analysis.priors = priors_from_result(result.to_dict())
    _pair(analysis, table, with_spec, good, bad, required, scope)
    return analysis


def _counted(fleet: Fleet, sources: Sequence[str]) -> TriageResult:
    """The result with the jobs counted by outcome (``InputError`` when there are none)."""
    if not fleet.jobs:
        raise InputError(_no_jobs(fleet), source=", ".join(sources) or None)
    counts = Counter(j.outcome for j in fleet.jobs)
    return TriageResult(
        status=NOTHING_TO_EXPLAIN,
        message="",
        jobs=len(fleet.jobs),
        succeeded=counts.get(SUCCEEDED, 0),
        failed=counts.get(FAILED, 0),
        running=counts.get(RUNNING, 0),
        unknown=counts.get(UNKNOWN, 0),
        left_out=_left_out(fleet),
        sources=list(sources),
    )


def _signatures(
    result: TriageResult, failed_jobs: Sequence[Job], secrets: Sequence[str], options: TriageOptions
) -> list[Job]:
    """Cluster the failures, choose the one to explain; its jobs."""
    failures = [_scrubbed(failure_of(j), secrets) for j in failed_jobs]
    clusters = cluster(failures)
    chosen = choose(clusters, failures, options.signature)
    explained = [failed_jobs[i] for i in sorted(chosen)]
    result.explained = len(explained)
    result.background = len(failed_jobs) - len(explained)
    result.signature = options.signature or clusters[0].signature
    result.signatures = [
        SignatureReport(
            signature=c.signature,
            count=len(c.members),
            examples=[failed_jobs[i].ref for i in c.members[:EXAMPLES]],
            sample=failures[c.members[0]].raw,
            explained=any(i in chosen for i in c.members),
        )
        for c in clusters[:SIGNATURES_SHOWN]
    ]
    return explained


def _suspects(
    result: TriageResult,
    table: SettingsTable,
    good: Sequence[int],
    bad: Sequence[int],
    options: TriageOptions,
) -> list[Suspect]:
    """Rank, pair up, explain away (into ``result``); the suspects the pair must hold."""
    population = _mask(good) | _mask(bad)
    failed_mask = _mask(bad)
    result.analysed = len(good) + len(bad)
    suspects, tested = rank_suspects(
        table, failed_mask, population, min_jobs=options.min_jobs, alpha=options.alpha
    )
    result.tested = tested
    result.threshold = threshold(tested, options.alpha)
    interactions = find_interactions(
        suspects, failed_mask, population, top=options.interaction_top, alpha=options.alpha
    )
    matched = partners(interactions)
    suspects = explain_away(suspects, failed_mask, population, matched, tested, options.alpha)
    # Reported: the pairs matched, both of whose suspects stand on their own.
    interactions = [
        x
        for x in interactions
        if matched.get(x.first) == x.second
        and suspects[x.first].significant
        and suspects[x.second].significant
    ]
    result.suspects = [_suspect_report(s, suspects, table) for s in suspects[: options.top]]
    result.interactions = [_interaction_report(x, suspects, table) for x in interactions]
    _set_status(result)
    return _required(suspects, interactions)


def _pair(
    analysis: Analysis,
    table: SettingsTable,
    with_spec: Sequence[Job],
    good: Sequence[int],
    bad: Sequence[int],
    required: Sequence[Suspect],
    scope: ScopeOptions,
) -> None:
    """Choose the pair: with every required suspect if possible, then with fewer."""
    groups = [_pair_group(j) for j in with_spec]
    for n in range(len(required), -1, -1):
        used = required[:n]
        choice = choose_pair(table, groups, good, bad, [s.mask for s in used])
        if choice is not None:
            _add_pair(analysis, choice, with_spec, used, table, scope)
            return
    analysis.result.pair_note = (
        "no succeeded and failed jobs of the same workload and kind to pair; "
        "the workload of a job is its app label or its name without the numbered tail"
    )


def _no_jobs(fleet: Fleet) -> str:
    if fleet.too_old:
        return f"no jobs created since the --since cutoff ({fleet.too_old} older jobs left out)"
    if fleet.skipped:
        kinds = ", ".join(f"{n} {k}" for k, n in fleet.skipped.most_common(5))
        return f"no jobs found, only {kinds}"
    return "no jobs found"


def _left_out(fleet: Fleet) -> dict[str, int]:
    no_spec = sum(1 for j in fleet.jobs if j.spec is None)
    out = {
        "jobs_without_spec": no_spec,
        "pods_without_job": fleet.orphan_pods,
        "jobs_before_since": fleet.too_old,
        "jobs_owned_by_jobs": fleet.child_jobs,
        "objects_of_other_kinds": sum(fleet.skipped.values()),
    }
    return {k: v for k, v in out.items() if v}


def _scrubbed(failure: Failure, secrets: Sequence[str]) -> Failure:
    if not secrets:
        return failure
    return Failure(redact_text(failure.raw, secrets), redact_text(failure.signature, secrets))


def _require_both_sides(
    jobs: Sequence[Job],
    explained: Sequence[Job],
    good: Sequence[int],
    bad: Sequence[int],
    where: str | None,
) -> None:
    if not good:
        counts = Counter(j.outcome for j in jobs)
        summary = ", ".join(f"{counts[o]} {o}" for o in OUTCOMES if counts.get(o))
        raise InputError(
            f"no succeeded job to compare the failures with ({summary}); add jobs from "
            "before the failures started (older exports, a longer --since, more namespaces)",
            source=where,
        )
    if not bad:
        problems = Counter(j.problem for j in explained if j.problem)
        why = "; ".join(f"{p} ({n})" for p, n in problems.most_common(3))
        raise InputError(f"the failed jobs could not be read as specs: {why}", source=where)


def _mask(indices: Sequence[int]) -> int:
    mask = 0
    for i in indices:
        mask |= 1 << i
    return mask


def shown_value(token: Token) -> Any:
    """A token's value as people and models may see it."""
    if not token.present:
        return None
    return redact_value(token.value) if token.secret else token.value


def _setting(token: Token) -> SettingValue:
    return SettingValue(token.key, shown_value(token), token.present)


def _suspect_report(
    suspect: Suspect, suspects: Sequence[Suspect], table: SettingsTable
) -> SuspectReport:
    token = table.tokens[suspect.token]
    stronger = suspect.explained_by
    return SuspectReport(
        key=token.key,
        value=shown_value(token),
        present=token.present,
        category=token.category,
        failed=suspect.failed,
        total=suspect.total,
        failed_without=suspect.failed_without,
        total_without=suspect.total_without,
        failure_rate=suspect.failure_rate,
        rate_without=suspect.rate_without,
        score=suspect.score,
        significant=suspect.significant,
        bundle=[_setting(table.tokens[t]) for t in suspect.bundle],
        explained_by=None if stronger is None else table.tokens[suspects[stronger].token].key,
    )


def _interaction_report(
    x: Interaction, suspects: Sequence[Suspect], table: SettingsTable
) -> InteractionReport:
    def group(g: Any) -> GroupReport:
        return GroupReport(g.failed, g.total)

    return InteractionReport(
        first=_setting(table.tokens[suspects[x.first].token]),
        second=_setting(table.tokens[suspects[x.second].token]),
        both=group(x.both),
        first_only=group(x.first_only),
        second_only=group(x.second_only),
        neither=group(x.neither),
        score=x.score,
        significant=x.significant,
    )


def _describe(s: SuspectReport) -> str:
    setting = f"{s.key} = {_short(s.value)}" if s.present else f"{s.key} unset"
    bundle = f" (+{len(s.bundle)} settings that always change with it)" if s.bundle else ""
    return (
        f"{setting}{bundle}: {s.failed} of {s.total} jobs with it failed, "
        f"{s.failed_without} of {s.total_without} without"
    )


def _short(value: Any, width: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= width else text[: width - 3] + "..."


def _set_status(result: TriageResult) -> None:
    significant = [s for s in result.suspects if s.significant]
    if significant:
        plural = "s" if len(significant) != 1 else ""
        result.status = SUSPECTS_FOUND
        result.message = (
            f"{len(significant)} significant suspect{plural} for {result.explained} "
            f"failures; the top one: {_describe(significant[0])}"
        )
        return
    best = f"the best scores {result.suspects[0].score:.2f}, " if result.suspects else ""
    result.status = NO_SIGNIFICANT_SUSPECT
    result.message = (
        f"no setting goes with the {result.explained} failures more than chance allows "
        f"({best}a suspect needs {result.threshold:.2f}): the failure may be flaky, or "
        "caused outside the jobs' settings (nodes, network, data)"
    )


def _required(suspects: Sequence[Suspect], interactions: Sequence[Interaction]) -> list[Suspect]:
    """The top suspect, and its partner in the strongest interaction it is part of."""
    if not suspects:
        return []
    for x in interactions:
        if x.significant and 0 in (x.first, x.second):
            return [suspects[0], suspects[x.second if x.first == 0 else x.first]]
    return [suspects[0]]


def _pair_group(job: Job) -> Hashable:
    spec = job.spec
    assert spec is not None
    layout = k8s.layout(spec) if spec.format == KUBERNETES else ()
    return (job.workload, spec.format, spec.kind, layout)


def _add_pair(
    analysis: Analysis,
    choice: PairChoice,
    with_spec: Sequence[Job],
    required: Sequence[Suspect],
    table: SettingsTable,
    scope: ScopeOptions,
) -> None:
    good_job, bad_job = with_spec[choice.good], with_spec[choice.bad]
    priors = analysis.priors or Priors()
    assert good_job.spec is not None and bad_job.spec is not None
    changes = diff(good_job.spec, bad_job.spec, ignore=scope.ignore, container=scope.container)
    candidates = priors.order(c.key for c in changes if priors.weight(c.key) > 0)
    analysis.good, analysis.bad = good_job.spec, bad_job.spec
    analysis.result.pair = PairReport(
        good=good_job.name,
        bad=bad_job.name,
        good_namespace=good_job.namespace,
        bad_namespace=bad_job.namespace,
        workload=good_job.workload,
        kind=good_job.kind,
        changes=len(changes),
        candidates=candidates,
        required=[table.tokens[t].key for s in required for t in s.tokens],
    )
