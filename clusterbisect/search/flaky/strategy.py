"""The flake-aware strategy: searches, confirmations and the result, driven by the
posterior in :mod:`clusterbisect.search.flaky.posterior`.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass

from clusterbisect.outcome import Outcome
from clusterbisect.search import priors
from clusterbisect.search.base import (
    BASELINE_FAILED,
    FOUND,
    INCONCLUSIVE,
    NO_DIFFERENCES,
    NOT_REPRODUCIBLE,
    Culprit,
    ProbeAnswer,
    ProbeRequest,
    Search,
    SearchResult,
    Subset,
)
from clusterbisect.search.flaky.posterior import (
    FIRST_FLAKE,
    FIRST_GOOD_FAILS,
    P_ONE,
    P_PRIOR,
    Q_PRIOR,
    Q_ZERO,
    RATE_FLOOR,
    SUB_ALONE,
    SUB_NONE,
    Line,
    clean_runs_needed,
)


@dataclass
class _Budget(Exception):
    """Raised inside the search when the probe budget is spent."""

    why: str


class FlakyStrategy:
    """Find the culprit changes when probes fail only some of the time.

    ``parallel`` is K, the probe runs per batch. ``p`` and ``q`` are the reproduction
    and background failure rates if known (else learned). ``baseline_runs`` repeats
    both baselines up front. ``max_probes`` bounds the runs (baselines included); by
    default a generous bound that grows with log n. ``evidence`` holds runs already
    seen (subset -> outcomes, in order), e.g. by a search that handed over to this
    one: they count wherever a probe of this search is the same subset. ``weights``
    (one per change, in [0, 1]) are priors: the nested probes take the heaviest
    changes first, and each position's prior mass follows its change's weight.
    """

    name = "flaky"

    def __init__(
        self,
        parallel: int = 1,
        confidence: float = 0.99,
        p: float | None = None,
        q: float | None = None,
        baseline_runs: int = 1,
        max_probes: int | None = None,
        evidence: dict[Subset, tuple[Outcome, ...]] | None = None,
        weights: Sequence[float] | None = None,
    ) -> None:
        if not 0.5 <= confidence < 1.0:
            raise ValueError("confidence must be in [0.5, 1)")
        self.k = max(1, parallel)
        self.confidence = confidence
        self.p = None if p is None else min(max(p, RATE_FLOOR), 1.0 - RATE_FLOOR)
        self.q = None if q is None else min(max(q, RATE_FLOOR), 1.0 - RATE_FLOOR)
        if self.p is not None and self.q is not None and self.q >= self.p:
            raise ValueError("the background rate q must be below the reproduction rate p")
        self.baseline_runs = max(1, baseline_runs)
        self.max_probes = max_probes
        self._evidence = dict(evidence or {})
        self.weights = priors.normalized(weights)
        self._line: Line | None = None
        self._runs: dict[Subset, tuple[Outcome, ...]] = {}
        self._used = 0
        self._culprits: list[Culprit] = []
        self._estimate = (p if p is not None else 0.5, q if q is not None else 0.0)
        self._p_cautious = self._estimate[0]
        self._clean_need = clean_runs_needed(self._estimate[0], confidence)

    # --- the Strategy protocol --------------------------------------------------

    def candidates(self) -> list[Subset]:
        """Candidate culprit sets, most probable first (the search in progress)."""
        line = self._line
        if line is None:
            return []
        out: list[Subset] = []
        for pos, _prob in line.ranked():
            if 1 <= pos <= line.n:
                out.append(line.forced | {line.order[pos - 1]})
            elif pos == 0 and line.forced:
                out.append(line.forced)
        return out

    def candidates_left(self) -> int | None:
        """The changes it takes to hold ``confidence`` of the posterior (a credible set);
        1 once the leader alone is that likely."""
        line = self._line
        if line is None:
            return None
        count, mass = 0, 0.0
        for block in sorted(line.blocks, key=lambda b: -b.weight):
            if mass >= self.confidence or block.weight <= 0.0:
                break
            take = min(block.size, math.ceil((self.confidence - mass) / block.weight - 1e-9))
            mass += take * block.weight
            if 1 <= block.start <= line.n:  # position 0 and N+1 are not changes
                count += take
        return max(1, count)

    def last_turn(self) -> str | None:
        """The credible set grows when runs contradict the leader: the posterior says
        why, not a single event."""
        return None

    def remaining_estimate(self) -> int | None:
        """Runs still to go: the evidence the leader still needs over the bits per run,
        plus a clean check."""
        line = self._line
        if line is None:
            return None
        p, q = line.rates()
        _pos, prob = line.top()
        prob = min(max(prob, 1e-12), 1.0 - 1e-12)
        # Bits of evidence that take the leader's odds to the confidence's odds.
        bits = math.log2(self.confidence / (1.0 - self.confidence)) - math.log2(prob / (1.0 - prob))
        check = line.clean_runs(self.confidence)
        if bits <= 0.0:
            return check
        cuts, clean = line.plan(1)
        per_run = line.gain(cuts, p, q) if cuts else line.clean_gain(clean, p, q)
        return math.ceil(bits / max(0.01, per_run)) + check

    def search(self, n: int) -> Search:
        self._runs, self._used, self._culprits, self._line = dict(self._evidence), 0, [], None
        if n == 0:
            return SearchResult(NO_DIFFERENCES)
        limit = self.max_probes if self.max_probes is not None else _default_budget(n)
        try:
            return (yield from self._search(n, limit))
        except _Budget as stop:
            return self._result(
                INCONCLUSIVE,
                notes=[f"stopped early: {stop.why}"],
                candidates=self.candidates(),
            )

    # --- probing ------------------------------------------------------------------

    def _counts(self, subset: Subset) -> tuple[int, int]:
        runs = self._runs.get(subset, ())
        return (
            sum(1 for o in runs if o is Outcome.FAIL),
            sum(1 for o in runs if o is Outcome.PASS),
        )

    def _unresolved_heavy(self, subset: Subset) -> bool:
        runs = self._runs.get(subset, ())
        bad = sum(1 for o in runs if o is Outcome.UNRESOLVED)
        return bad >= 2 and bad > len(runs) - bad

    def _ask(
        self, wanted: dict[Subset, tuple[int, str]], limit: int
    ) -> Generator[list[ProbeRequest], list[ProbeAnswer], None]:
        """Request ``extra`` more runs of each subset; record every run answered."""
        if self._used >= limit:
            raise _Budget(f"the probe budget ({limit}) is spent")
        requests = [
            ProbeRequest(subset, runs=len(self._runs.get(subset, ())) + extra, purpose=purpose)
            for subset, (extra, purpose) in wanted.items()
        ]
        answers = yield requests
        for request, answer in zip(requests, answers, strict=False):
            before = len(self._runs.get(request.subset, ()))
            self._runs[request.subset] = tuple(answer.runs)
            self._used += max(0, len(answer.runs) - before)

    def _seed(self, line: Line) -> None:
        for subset in self._runs:
            cut = line.cut_of(subset)
            if cut is not None:
                line.observe(cut, *self._counts(subset))
                continue
            pos = line.clean_of(subset)
            if pos is not None:
                line.observe_clean(pos, *self._counts(subset))
        line.update()

    def _new_line(
        self, forced: Subset, order: Sequence[int], alone: float, none: float, parent: Line | None
    ) -> Line:
        p_prior, q_prior = parent.learned_priors() if parent is not None else (P_PRIOR, Q_PRIOR)
        p_one, q_zero = parent.learned_points() if parent is not None else (P_ONE, Q_ZERO)
        if forced:
            # A search for what the forced changes need decides "alone or with a
            # partner" on few runs of the forced set alone: one background failure
            # there must not look decisive, so q = 0 gets no point mass (measured: with
            # it, interacting pairs at q = 0.05 were more often reported as one change).
            q_zero = 0.0
        line = Line(
            forced=forced,
            order=tuple(order),
            prior_alone=alone,
            prior_none=none,
            p=self.p,
            q=self.q,
            p_prior=p_prior,
            q_prior=q_prior,
            p_one=p_one,
            q_zero=q_zero,
            weights=self.weights,
        )
        self._seed(line)
        return line

    def _purpose(self, line: Line, cut: int, first: bool) -> str:
        if first and cut == 0:
            return "baseline-good"
        if first and cut == line.n:
            return "baseline-bad"
        if cut == 0 and line.forced:
            return "confirm-good-plus-culprit"
        return "search"

    def _run_line(
        self, line: Line, limit: int, first: bool
    ) -> Generator[list[ProbeRequest], list[ProbeAnswer], tuple[int, float]]:
        """Probe ``line`` until one position reaches the confidence."""
        self._line = line
        while True:
            pos, prob = line.top()
            if prob >= self.confidence:
                self._estimate = line.estimates()
                self._p_cautious = line.p_cautious()
                self._clean_need = line.clean_runs(self.confidence)
                return pos, prob
            # Route around probes that keep coming back unresolved, as dd does.
            skip = [c for c in sorted(line.tried) if self._unresolved_heavy(line.subset(c))]
            clean_ok = 1 <= pos < line.n and not self._unresolved_heavy(line.clean_subset(pos))
            cuts, clean = line.plan(self.k, skip, clean_ok)
            wanted: dict[Subset, tuple[int, str]] = {}
            by_cut: dict[int, Subset] = {}
            for cut in cuts:
                subset = by_cut.setdefault(cut, line.subset(cut))
                extra, _ = wanted.get(subset, (0, ""))
                wanted[subset] = (extra + 1, self._purpose(line, cut, first))
            if clean:
                wanted[line.clean_subset(pos)] = (clean, "confirm-bad-minus-culprits")
            yield from self._ask(wanted, limit)
            for cut, subset in by_cut.items():
                line.tried.add(cut)
                line.observe(cut, *self._counts(subset))
            if clean:
                line.observe_clean(pos, *self._counts(line.clean_subset(pos)))
            line.update()
            self._estimate = line.estimates()

    # --- the search -----------------------------------------------------------------

    def _search(self, n: int, limit: int) -> Search:
        everything = frozenset(range(n))
        # Runs already seen (the evidence handed over) count towards the baselines.
        yield from self._ask(
            {
                subset: (max(0, self.baseline_runs - len(self._runs.get(subset, ()))), purpose)
                for subset, purpose in (
                    (frozenset(), "baseline-good"),
                    (everything, "baseline-bad"),
                )
            },
            limit,
        )
        notes: list[str] = []
        remaining = priors.ordered(range(n), self.weights)
        parent: Line | None = None
        first = True
        while True:
            kind, found, confidence, parent = yield from self._find_one(
                remaining, limit, first, parent
            )
            if kind == "good_fails":
                return self._result(
                    BASELINE_FAILED,
                    notes=[
                        "the good spec without any change fails "
                        f"(posterior {confidence:.3f}); it is not a working baseline"
                    ],
                )
            if kind == "none":
                if first:
                    return self._result(
                        NOT_REPRODUCIBLE,
                        notes=[
                            "the bad spec does not fail more often than the background "
                            f"rate: the failure looks like a flake (posterior {confidence:.3f})"
                        ],
                    )
                notes.append(
                    "the remaining changes failed the clean check but no further culprit "
                    "was isolated"
                )
                return self._result(FOUND, notes=notes)
            assert found is not None
            first = False
            if len(found) > 1:
                found, confidence = yield from self._minimize(found, confidence, limit)
            rest = everything.difference(*(c.changes for c in self._culprits), found)
            clean, clean_conf, clean_note = yield from self._clean_check(rest, limit)
            self._culprits.append(
                Culprit(
                    changes=found,
                    confidence=round(confidence * clean_conf, 6),
                    confirmed=True,
                    evidence={
                        "good_plus_culprit": found,
                        "bad_minus_culprits": rest,
                        "good_plus_culprit_runs": self._counts(found),
                        "bad_minus_culprits_runs": self._counts(rest),
                    },
                )
            )
            if clean_note:
                notes.append(clean_note)
            if clean or not rest:
                return self._result(FOUND, notes=notes)
            remaining = priors.ordered(rest, self.weights)

    def _find_one(
        self, universe: list[int], limit: int, first: bool, parent: Line | None
    ) -> Generator[
        list[ProbeRequest],
        list[ProbeAnswer],
        tuple[str, Subset | None, float, Line | None],
    ]:
        """Isolate one culprit set among ``universe`` (whose full set fails)."""
        main = self._new_line(
            frozenset(),
            universe,
            FIRST_GOOD_FAILS if first else FIRST_GOOD_FAILS / 10,
            FIRST_FLAKE,
            parent,
        )
        stack: list[tuple[Line, float]] = [(main, 1.0)]
        seen: set[tuple[Subset, int, int]] = set()
        while True:
            line, carried = stack[-1]
            pos, prob = yield from self._run_line(line, limit, first and len(stack) == 1)
            state = (line.forced, line.n, self._used)
            if state in seen:  # concluded again without a new run: stop rather than loop
                raise _Budget("the search stopped making progress")
            seen.add(state)
            if pos == line.n + 1:
                if len(stack) == 1:
                    return "none", None, prob, line
                # The forced prefix does not fail: the search above erred. Go back to
                # it; it now sees these runs too (its cut is this line's full prefix).
                stack.pop()
                self._seed(stack[-1][0])
                continue
            if pos == 0:
                if len(stack) == 1:
                    return "good_fails", None, prob, line
                return "culprit", line.forced, carried * prob, line
            change = line.order[pos - 1]
            sub = self._new_line(
                line.forced | {change}, line.order[: pos - 1], SUB_ALONE, SUB_NONE, line
            )
            stack.append((sub, carried * prob))

    def _minimize(
        self, found: Subset, confidence: float, limit: int
    ) -> Generator[list[ProbeRequest], list[ProbeAnswer], tuple[Subset, float]]:
        """Make an interaction 1-minimal: drop each change whose removal still fails.

        The nested search finds a set whose every change is needed if each of its
        searches was right; this check catches the rare one that erred (a lucky pass
        that made a later change look needed), at a clean check per change.
        """
        for change in sorted(found, key=lambda c: -c):
            if len(found) == 1:
                break
            smaller = found - {change}
            clean, sure, _note = yield from self._clean_check(smaller, limit)
            if not clean:
                found = smaller  # still fails without it: it was not needed
            confidence *= sure
        return found, confidence

    def _clean_check(
        self, rest: Subset, limit: int
    ) -> Generator[list[ProbeRequest], list[ProbeAnswer], tuple[bool, float, str]]:
        """Run the bad spec without the culprits until it is clean or it fails for real."""
        p, q = self._p_cautious, self._estimate[1]
        p = min(max(p, RATE_FLOOR), 1.0 - RATE_FLOOR)
        q = min(max(q, RATE_FLOOR), p / 2)
        need = self._clean_need
        cap = 6 * need
        while True:
            fails, passes = self._counts(rest)
            if fails == 0 and passes >= need:
                return True, 1.0 - (1.0 - p) ** passes, ""
            if fails:
                # log odds of "holds another culprit" (rate p) over "clean" (rate q).
                lo = fails * math.log(p / q) + passes * math.log((1.0 - p) / (1.0 - q))
                dirty = 1.0 / (1.0 + math.exp(-lo)) if lo > -700 else 0.0
                if dirty >= self.confidence:
                    return False, dirty, ""
                if dirty <= 1.0 - self.confidence:
                    return True, 1.0 - dirty, ""
                if fails + passes >= cap:
                    clean = dirty < 0.5
                    return (
                        clean,
                        max(dirty, 1.0 - dirty),
                        f"the clean check of the remaining changes was not decisive "
                        f"({fails} fails in {fails + passes} runs)",
                    )
            extra = self.k if fails else max(1, min(self.k, need - passes))
            yield from self._ask({rest: (extra, "confirm-bad-minus-culprits")}, limit)

    def _result(
        self, status: str, notes: list[str], candidates: list[Subset] | None = None
    ) -> SearchResult:
        p, q = self._estimate
        estimates = {"p": round(p, 4), "q": round(q, 4), "probes": float(self._used)}
        if candidates is None:
            candidates = [c.changes for c in self._culprits] if status == FOUND else []
        return SearchResult(
            status,
            culprits=list(self._culprits),
            candidates=candidates,
            notes=notes,
            estimates=estimates,
        )


def _default_budget(n: int) -> int:
    """A generous run budget: enough for p around 0.3 with some background noise."""
    return 40 * math.ceil(math.log2(n + 1)) + 100
