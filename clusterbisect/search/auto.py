"""The default strategy: bisection that checks its own evidence, flake-aware when it must.

Plain bisection reads every probe once and trusts it. On a failure that reproduces
only some of the time that is how a wrong culprit gets named with confidence: a probe
that holds the culprit passes by luck, the search turns away from it, and a lucky
failure later "confirms" a wrong interaction. So the bisection here is watched:

* **Baselines are re-run when they surprise.** A bad spec that passes is run again
  (up to :data:`BAD_RECHECK` runs in all) before the failure is called not
  reproducible; a good spec that fails, up to :data:`GOOD_RECHECK` runs, before the
  baseline is called failed.
* **Contradictions are evidence.** A subset whose runs disagree (a pass and a fail)
  means the failure is flaky. A failing subset inside a passing one contradicts the
  search's model (failures are monotone), so both probes are run again: if either
  disagrees with itself, the failure is flaky; if both repeat, a change masks the
  failure, and the bisection's model (whose every answer is certain) no longer holds
  either: the flake-aware search weighs the runs instead. No culprit is reported with
  confidence 1 after a contradiction.
* **A candidate that does not fail on its own** (the descent's guess, or an
  interaction's part) is exactly what a flaky failure produces, and also what an
  interaction produces. The two cannot be told apart by more single runs, so the
  search is handed to the flake-aware strategy, which weighs both readings.
* **A culprit is confirmed twice** (good + culprit fails in two runs) before it is
  reported, so a background failure cannot pass for a culprit.

On any of these the flake-aware search (:class:`FlakyStrategy`) takes over from the
start, seeded with every run seen so far: nothing already learned is lost, and the
confidence it states is its posterior. With ``baseline_runs`` > 1 both baselines are
repeated first, as before: runs that disagree switch to the flake-aware search at once.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

from clusterbisect.outcome import Outcome
from clusterbisect.search.base import (
    FOUND,
    INCONCLUSIVE,
    NO_DIFFERENCES,
    ProbeAnswer,
    ProbeRequest,
    Search,
    SearchResult,
    Strategy,
    Subset,
    answer_from,
)
from clusterbisect.search.bisection import BisectionStrategy

BAD_RECHECK = 4  # runs of a bad spec that passes before "not reproducible"
GOOD_RECHECK = 3  # runs of a good spec that fails before "baseline failed"
CONFIRM_RUNS = 2  # runs of good + culprit that must all fail before a culprit is reported
CONFIRM = "confirm-good-plus-culprit"
FLAKY_HINT = (
    "if the failure is flaky, `run --flaky` (with --baseline-runs 6) lets the "
    "flake-aware search learn its rate"
)

# A watched step either hands on the answers or says why the search must switch.
Watch = Generator[list[ProbeRequest], list[ProbeAnswer], str | None]


class AutoStrategy:
    """Bisection, switching to :class:`FlakyStrategy` when the evidence contradicts it."""

    def __init__(
        self,
        parallel: int = 1,
        baseline_runs: int = 1,
        weights: Sequence[float] | None = None,
        **flaky_options: Any,
    ) -> None:
        self.parallel = parallel
        self.baseline_runs = max(1, baseline_runs)
        self.weights = weights  # priors: both the bisection and the flaky search take them
        self.flaky_options = flaky_options
        self.active: Strategy = BisectionStrategy(parallel, weights)
        self.switched: str | None = None  # why the flake-aware search took over
        self._runs: dict[Subset, tuple[Outcome, ...]] = {}
        self._checked: set[tuple[Subset, Subset]] = set()
        self._notes: list[str] = []
        self._n = 0
        self._baselines_left = 0  # the baselines this strategy still asks for itself

    @property
    def name(self) -> str:
        return self.active.name

    def candidates(self) -> list[Subset]:
        return self.active.candidates()

    def last_turn(self) -> str | None:
        """The bisection's, until the flake-aware search took over: then that."""
        if self.switched:
            return f"handed over to the flake-aware search: {self.switched}"
        return self.active.last_turn()

    def remaining_estimate(self) -> int | None:
        """The active search's estimate; while bisecting, the baselines not yet run
        (this strategy asks for them itself) and the second run of a confirmation."""
        active = self.active
        if self.switched or not isinstance(active, BisectionStrategy):
            return active.remaining_estimate()
        if self._baselines_left:  # the bisection has not started
            return self._baselines_left + active.probes_for(self._n) + CONFIRM_RUNS - 1
        estimate = active.remaining_estimate()
        return None if estimate is None else estimate + CONFIRM_RUNS - 1

    def candidates_left(self) -> int | None:
        return self.active.candidates_left()

    # --- the search -------------------------------------------------------------

    def search(self, n: int) -> Search:
        self.active, self.switched = BisectionStrategy(self.parallel, self.weights), None
        self._runs, self._checked, self._notes = {}, set(), []
        if n == 0:
            return SearchResult(NO_DIFFERENCES)
        self._n, self._baselines_left = n, 2
        why = yield from self._baselines(frozenset(range(n)))
        self._baselines_left = 0
        if why is None:
            why, result = yield from self._watched_bisection(n)
            if why is None and result is not None:
                if result.status == INCONCLUSIVE:
                    result.notes.append(FLAKY_HINT)
                result.notes = self._notes + result.notes
                return result
        assert why is not None
        return (yield from self._switch(n, why))

    def _switch(self, n: int, why: str) -> Search:
        """Hand the search to the flake-aware strategy, seeded with every run so far."""
        from clusterbisect.search.flaky import FlakyStrategy

        self.switched = why
        flaky = FlakyStrategy(
            parallel=self.parallel,
            baseline_runs=self.baseline_runs,
            evidence=dict(self._runs),
            weights=self.weights,
            **self.flaky_options,
        )
        self.active = flaky
        result = yield from flaky.search(n)
        result.notes = [
            *self._notes,
            f"switched to the flake-aware search: {why}",
            *result.notes,
        ]
        if result.status != FOUND:
            result.notes.append(FLAKY_HINT)
        return result

    # --- the watch ----------------------------------------------------------------

    def _ask(
        self, requests: list[ProbeRequest]
    ) -> Generator[list[ProbeRequest], list[ProbeAnswer], list[ProbeAnswer]]:
        """Yield ``requests`` and remember every run answered."""
        answers = yield requests
        for request, answer in zip(requests, answers, strict=True):
            known = self._runs.get(request.subset, ())
            if len(answer.runs) > len(known):
                self._runs[request.subset] = tuple(answer.runs)
        return answers

    def _again(self, subset: Subset, total: int, purpose: str) -> ProbeRequest:
        """A request for ``subset`` until it has ``total`` runs (at least one more)."""
        runs = max(total, len(self._runs.get(subset, ())) + 1)
        return ProbeRequest(subset, runs=runs, purpose=purpose)

    def _baselines(self, everything: Subset) -> Watch:
        """Both baselines, run again when they surprise; a reason to switch, or None."""
        # One run each is a deterministic request: an unresolved run is retried once.
        runs = self.baseline_runs if self.baseline_runs > 1 else None
        first = [
            ProbeRequest(frozenset(), runs=runs, purpose="baseline-good"),
            ProbeRequest(everything, runs=runs, purpose="baseline-bad"),
        ]
        yield from self._ask(first)
        again = []
        if Outcome.FAIL not in self._runs[everything]:
            again.append(self._again(everything, BAD_RECHECK, "baseline-bad"))
        if Outcome.PASS not in self._runs[frozenset()]:
            again.append(self._again(frozenset(), GOOD_RECHECK, "baseline-good"))
        if again:
            yield from self._ask(again)
        mixed = [s for s in (frozenset(), everything) if _mixed(self._runs[s])]
        if mixed:
            which = " and ".join("good" if not s else "bad" for s in mixed)
            return f"the {which} baseline's runs disagree ({_tally(self._runs[mixed[0]])})"
        if again and Outcome.PASS in self._runs[everything]:
            self._notes.append(
                f"the bad spec passed all {len(self._runs[everything])} runs; {FLAKY_HINT}"
            )
        return None

    def _watched_bisection(
        self, n: int
    ) -> Generator[list[ProbeRequest], list[ProbeAnswer], tuple[str | None, SearchResult | None]]:
        """Drive the bisection, checking each batch of answers against all runs so far.

        A confirmation of good + a candidate is asked for :data:`CONFIRM_RUNS` runs (in
        the same round when probes run in parallel); the bisection sees the first.
        """
        bisection = self.active
        assert isinstance(bisection, BisectionStrategy)
        search = bisection.search(n)
        try:
            batch = next(search)
            while True:
                asked = [_confirmed_twice(r) for r in batch]
                answers = yield from self._ask(asked)
                why = self._unconfirmed(asked, answers) or (yield from self._contradictions())
                if why is not None:
                    search.close()
                    return why, None
                batch = search.send([_as_asked(r, a) for r, a in zip(batch, answers, strict=True)])
        except StopIteration as stop:
            return None, stop.value

    def _unconfirmed(self, batch: list[ProbeRequest], answers: list[ProbeAnswer]) -> str | None:
        for request, answer in zip(batch, answers, strict=True):
            if request.purpose == CONFIRM and _verdict(answer.runs) is Outcome.PASS:
                return (
                    f"a candidate of {len(request.subset)} change(s) did not fail on its own: "
                    "a flaky failure or an interaction, which more single runs cannot tell apart"
                )
        return None

    def _contradictions(self) -> Watch:
        """Disagreeing runs, or a failing subset inside a passing one (run both again)."""
        mixed = next((s for s, runs in self._runs.items() if _mixed(runs)), None)
        if mixed is not None:
            return f"runs of the same probe disagree ({_tally(self._runs[mixed])})"
        pair = self._monotone_violation()
        if pair is None:
            return None
        failing, passing = pair
        self._checked.add(pair)
        yield from self._ask(
            [self._again(failing, 2, "recheck"), self._again(passing, 2, "recheck")]
        )
        for subset in pair:
            if _mixed(self._runs[subset]):
                runs = _tally(self._runs[subset])
                return f"a probe disagreed with itself when run again ({runs})"
        return (
            f"a set of {len(failing)} changes fails while a set of {len(passing)} that "
            "contains it passes, both twice: some change masks the failure, so the "
            "bisection's answers cannot be taken as certain"
        )

    def _monotone_violation(self) -> tuple[Subset, Subset] | None:
        failing = [s for s, runs in self._runs.items() if _verdict(runs) is Outcome.FAIL]
        passing = [s for s, runs in self._runs.items() if _verdict(runs) is Outcome.PASS]
        for small in failing:
            for big in passing:
                if small < big and (small, big) not in self._checked:
                    return small, big
        return None


def _confirmed_twice(request: ProbeRequest) -> ProbeRequest:
    """A confirmation of good + candidate asks for more than one run."""
    if request.purpose == CONFIRM and request.runs is None:
        return ProbeRequest(request.subset, runs=CONFIRM_RUNS, purpose=CONFIRM)
    return request


def _as_asked(request: ProbeRequest, answer: ProbeAnswer) -> ProbeAnswer:
    """The answer the bisection's own request would have had (its first definite run)."""
    if request.runs is None and answer.runs:
        return answer_from(request, answer.runs) or answer
    return answer


def _verdict(runs: tuple[Outcome, ...]) -> Outcome:
    """The first pass or fail of some runs (unresolved when there is none)."""
    return next((o for o in runs if o is not Outcome.UNRESOLVED), Outcome.UNRESOLVED)


def _mixed(runs: tuple[Outcome, ...]) -> bool:
    return Outcome.PASS in runs and Outcome.FAIL in runs


def _tally(runs: tuple[Outcome, ...]) -> str:
    fails = sum(1 for o in runs if o is Outcome.FAIL)
    passes = sum(1 for o in runs if o is Outcome.PASS)
    return f"{fails} fail, {passes} pass"
