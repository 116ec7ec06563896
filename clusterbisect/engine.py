"""The engine: drives a search strategy, answers it from the cache or by running probes.

It is the only place where the pure search meets I/O. The cache is the journal:
identical probes (the same applied subset) are never run twice in a session, and a
resumed session replays the journal through a fresh strategy, so finished probes
are answered from disk and the search continues where it stopped.

Every probe has a time limit (:func:`probe_timeout`): ``--timeout`` when given, else
the larger of a minute and five times the slower baseline, so a hanging probe always
ends. ``--max-time`` stops probes in flight: a probe cut short by the budget is not
evidence and is not journaled.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from clusterbisect.journal import ProbeRecord
from clusterbisect.outcome import FailureSignature, Outcome, RunResult
from clusterbisect.problem import Problem
from clusterbisect.runners.base import Probe, Runner
from clusterbisect.search.base import (
    INCONCLUSIVE,
    ProbeAnswer,
    ProbeRequest,
    SearchResult,
    Strategy,
    Subset,
    answer_from,
    runs_needed,
    runs_to_start,
)
from clusterbisect.session import Session
from clusterbisect.settings import apply_changes
from clusterbisect.terminal import printable

# The default per-probe limit: the larger of a floor and a multiple of the slower
# baseline; before any baseline has finished, a generous cap (the baselines are the
# user's own jobs, whose length nothing tells us yet).
TIMEOUT_FLOOR_S = 60.0
TIMEOUT_FACTOR = 5.0
FIRST_PROBES_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class ProbeTimeout:
    """How long a probe may run, and why: ``source`` is ``option`` (``--timeout``),
    ``baselines`` (derived from them) or ``first`` (no baseline has finished yet)."""

    seconds: float
    source: str
    slower_baseline_s: float | None = None

    def describe(self) -> str:
        if self.source == "option":
            return f"{self.seconds:g} s (--timeout)"
        if self.source == "baselines":
            return (
                f"{self.seconds:g} s (default: the larger of {TIMEOUT_FLOOR_S:g} s and "
                f"{TIMEOUT_FACTOR:g}x the slower baseline, {self.slower_baseline_s:.1f} s; "
                "--timeout sets it)"
            )
        return f"{self.seconds:g} s (default until a baseline has finished; --timeout sets it)"

    def to_dict(self) -> dict[str, object]:
        return {"seconds": self.seconds, "source": self.source, "rule": self.describe()}


def probe_timeout(option: float | None, records: Sequence[ProbeRecord]) -> ProbeTimeout:
    """The per-probe limit: ``option`` when given, else derived from the baselines run
    so far (those that ran the workload to its end: neither timed out nor broken, and
    timed: a step-mode mark without a duration says nothing)."""
    if option:
        return ProbeTimeout(float(option), "option")
    durations = [
        r.duration_s
        for r in records
        if r.purpose.startswith("baseline")
        and not r.timed_out
        and not r.infra_error
        and r.duration_s > 0  # an outcome reported by hand, without its duration
    ]
    if not durations:
        return ProbeTimeout(FIRST_PROBES_TIMEOUT_S, "first")
    slower = max(durations)
    seconds = max(TIMEOUT_FLOOR_S, round(TIMEOUT_FACTOR * slower, 1))
    return ProbeTimeout(seconds, "baselines", slower)


class Progress(Protocol):
    """Receives progress events (the CLI prints them on stderr).

    ``round_started`` gets the round's probes, the candidates left, the strategy's
    estimate of probes to go and why it last widened its candidates (``turn``);
    ``round_finished`` follows every round, also one that failed or was interrupted.
    """

    def round_started(
        self,
        round_no: int,
        probes: list[Probe],
        left: int,
        to_go: int | None,
        turn: str | None = None,
    ) -> None: ...

    def probe_finished(self, record: ProbeRecord) -> None: ...

    def round_finished(self, round_no: int) -> None: ...

    def timeout_set(self, timeout: ProbeTimeout) -> None:
        """The per-probe limit changed (said once, then on each change)."""
        ...

    def torn_down(self, seconds: float) -> None:
        """The backend was released after the result (not part of the search's time)."""


@dataclass
class Pending:
    """The step-by-step mode's view: requests that need a run before the search can go on."""

    requests: list[ProbeRequest]


@dataclass
class EngineOutcome:
    """What a drive ended with: a result, or (in step mode) pending requests."""

    result: SearchResult | None = None
    pending: Pending | None = None
    budget_exhausted: str | None = None


@dataclass
class Engine:
    """Runs ``strategy`` over ``problem`` for ``session``, with ``runner`` when given."""

    session: Session
    problem: Problem
    strategy: Strategy
    runner: Runner | None = None
    signature: FailureSignature = field(default_factory=FailureSignature)
    progress: Progress | None = None
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        self._by_key = {c.key: i for i, c in enumerate(self.problem.testable)}
        self.records: list[ProbeRecord] = []
        self._runs: dict[Subset, list[ProbeRecord]] = {}
        for record in self.session.records():
            self._remember(record)
        self._started = self.clock()
        self._deadline: float | None = None  # the --max-time budget's end (monotonic)
        self._timeout_told: ProbeTimeout | None = None
        self.stopped_in_flight = 0  # probes the time budget stopped (not journaled)

    # --- the cache ------------------------------------------------------------------

    def _remember(self, record: ProbeRecord) -> None:
        subset = frozenset(self._by_key[k] for k in record.subset if k in self._by_key)
        if len(subset) != len(record.subset):
            return  # a probe of changes this session no longer searches
        self.records.append(record)
        self._runs.setdefault(subset, []).append(record)

    @property
    def rounds(self) -> int:
        return max((r.round for r in self.records), default=0)

    def runs_of(self, subset: Subset) -> list[ProbeRecord]:
        return self._runs.get(subset, [])

    def outcomes_of(self, subset: Subset) -> list[Outcome]:
        return [Outcome(r.outcome) for r in self.runs_of(subset)]

    def answer(self, request: ProbeRequest) -> ProbeAnswer | None:
        """The answer from the cache, or None if the request needs another run."""
        return answer_from(request, self.outcomes_of(request.subset))

    def runs_needed(self, request: ProbeRequest) -> int:
        return runs_needed(request, self.outcomes_of(request.subset))

    # --- driving --------------------------------------------------------------------

    def drive(
        self, execute: bool = True, max_probes: int | None = None, max_time_s: float | None = None
    ) -> EngineOutcome:
        """Replay the strategy against the cache; run what is missing when ``execute``.

        Without ``execute`` (the step-by-step mode) it stops at the first batch that
        needs a run and returns those requests as pending.
        """
        search = self.strategy.search(len(self.problem.testable))
        self._deadline = self._started + max_time_s if max_time_s is not None else None
        try:
            batch = next(search)
            while True:
                pending = [r for r in batch if self.runs_needed(r) > 0]
                if not pending:
                    answers = [self.answer(r) for r in batch]
                    batch = search.send([a for a in answers if a is not None])
                    continue
                if not execute:
                    search.close()
                    return EngineOutcome(pending=Pending(pending))
                exhausted = self._budget_exhausted(max_probes, max_time_s)
                if exhausted:
                    search.close()
                    return EngineOutcome(
                        result=self._cut_short(exhausted), budget_exhausted=exhausted
                    )
                self._run_batch(pending, max_probes)
        except StopIteration as stop:
            result: SearchResult = stop.value
            return EngineOutcome(result=result)

    def _budget_exhausted(self, max_probes: int | None, max_time_s: float | None) -> str | None:
        if max_probes is not None and len(self.records) >= max_probes:
            return f"the probe budget ({max_probes}) is spent"
        if max_time_s is not None and self.clock() - self._started >= max_time_s:
            return f"the time budget ({max_time_s:g} s) is spent"
        return None

    def _cut_short(self, why: str) -> SearchResult:
        notes = [f"stopped early: {why}"]
        if self.stopped_in_flight:
            notes.append(
                f"{self.stopped_in_flight} probe(s) in flight were stopped by the time "
                "budget; they are not evidence and were not journaled"
            )
        return SearchResult(INCONCLUSIVE, candidates=self.strategy.candidates(), notes=notes)

    def timeout(self) -> ProbeTimeout:
        """The per-probe limit for the next probes (see :func:`probe_timeout`)."""
        return probe_timeout(self.session.config.limits.timeout, self.records)

    def _run_batch(self, pending: list[ProbeRequest], max_probes: int | None) -> None:
        """Run the missing runs of ``pending``, K at a time; journal each round."""
        if self.runner is None:
            raise RuntimeError("the engine needs a runner to execute probes")
        wanted = runs_to_start(pending, self.outcomes_of)
        parallel = max(1, self.session.config.search.parallel)
        if max_probes is not None:
            wanted = wanted[: max(0, max_probes - len(self.records))]
        for start in range(0, len(wanted), parallel):
            self._run_round(wanted[start : start + parallel])

    def _run_round(self, requests: list[ProbeRequest]) -> None:
        assert self.runner is not None
        round_no = self.rounds + 1
        numbers = self.session.new_probe_numbers(len(requests))
        limit = self.timeout()
        told = self._timeout_told
        if self.progress and (told is None or told.seconds != limit.seconds):
            self.progress.timeout_set(limit)
        self._timeout_told = limit
        # The time budget stops probes in flight: none may outlive it.
        left = self._deadline - self.clock() if self._deadline is not None else None
        cut_by_budget = left is not None and left < limit.seconds
        seconds = max(0.001, left) if left is not None and cut_by_budget else limit.seconds
        probes = [self.make_probe(r, n, seconds) for r, n in zip(requests, numbers, strict=True)]
        if self.progress:
            candidates = self.strategy.candidates_left() or len(self._by_key)
            to_go = self.strategy.remaining_estimate()
            self.progress.round_started(
                round_no, probes, candidates, to_go, self.strategy.last_turn()
            )
        try:
            results = self.runner.run(probes)
        finally:
            if self.progress:
                self.progress.round_finished(round_no)
        for request, probe, run in zip(requests, probes, results, strict=False):
            if run.timed_out and cut_by_budget:
                self.stopped_in_flight += 1
                continue  # stopped by the budget, not by its own limit: no evidence
            record = self.session.append(self._record(request, probe, run, round_no))
            self._remember(record)
            if self.progress:
                self.progress.probe_finished(record)

    def make_probe(
        self, request: ProbeRequest, number: int, timeout_s: float | None = None
    ) -> Probe:
        """Render the probe for ``request``: the good spec with its subset applied, with
        ``timeout_s`` (default: the per-probe limit, :meth:`timeout`)."""
        probe_id = f"p{number:03d}"
        changes = self.problem.subset_changes(request.subset)
        config = self.session.config
        return Probe(
            probe_id=probe_id,
            session_id=self.session.session_id,
            spec=apply_changes(self.problem.good, changes),
            changes=changes,
            log_path=self.session.log_path(probe_id),
            timeout_s=timeout_s if timeout_s is not None else self.timeout().seconds,
            command=config.command,
            purpose=request.purpose,
            env_names=self.problem.env_names,
        )

    def classify(self, purpose: str, probe_id: str, run: RunResult) -> Outcome:
        """The run's outcome under the session's failure signature.

        The good baseline decides what an unspecified ``--fail-on-exit`` means: when it
        exits 0 with the ``--fail-on`` text in its output, that text is in passing runs
        too, so from then on a probe fails only with a non-zero exit as well (kept in
        ``session.json``; the report says why).
        """
        signature = self.session.config.signature
        if (
            purpose == "baseline-good"
            and not (run.timed_out or run.infra_error)
            and signature.decide_exit_rule(probe_id, run.exit_code, run.output)
        ):
            self.session.save_config()
            self.signature = signature.failure_signature()
        return self.signature.classify(run)

    def _record(
        self, request: ProbeRequest, probe: Probe, run: RunResult, round_no: int
    ) -> ProbeRecord:
        outcome = self.classify(request.purpose, probe.probe_id, run)
        log = (
            probe.log_path.relative_to(self.session.state_dir) if probe.log_path.exists() else None
        )
        return ProbeRecord(
            probe_id=probe.probe_id,
            round=round_no,
            subset=self.problem.subset_keys(request.subset),
            outcome=outcome.value,
            purpose=request.purpose,
            exit_code=run.exit_code,
            timed_out=run.timed_out,
            reason=printable(run.reason) if run.reason else None,
            infra_error=printable(run.infra_error) if run.infra_error else None,
            duration_s=round(run.duration_s, 3),
            log=str(log) if log else None,
            observed=self.signature.observed(run) if outcome is not Outcome.PASS else "",
            finished_at=time.time(),
        )

    def record_manual(
        self,
        subset: Subset,
        outcome: Outcome,
        purpose: str = "search",
        log: str | None = None,
        run: RunResult | None = None,
        number: int | None = None,
        source: str = "manual",
    ) -> ProbeRecord:
        """Journal an outcome reported by hand (the step-by-step mode).

        ``run``, when the reporter observed one (exit code, reason, ...), is journaled
        with the outcome, as the runner's probes are. ``number`` is the probe's id
        number as shown (default: the next one). ``source`` is ``manual``, or ``exec``
        for a probe the step mode ran with ``clusterbisect exec``.
        """
        if number is None:
            (number,) = self.session.new_probe_numbers(1)
        record = ProbeRecord(
            probe_id=f"p{number:03d}",
            round=self.rounds + 1,
            subset=self.problem.subset_keys(subset),
            outcome=outcome.value,
            purpose=purpose,
            log=log,
            finished_at=time.time(),
            source=source,
        )
        if run is not None:
            record.exit_code = run.exit_code
            record.timed_out = run.timed_out
            record.reason = printable(run.reason) if run.reason else None
            record.infra_error = printable(run.infra_error) if run.infra_error else None
            record.duration_s = round(run.duration_s, 3)
            if outcome is not Outcome.PASS:
                record.observed = self.signature.observed(run)
        record = self.session.append(record)
        self._remember(record)
        return record
