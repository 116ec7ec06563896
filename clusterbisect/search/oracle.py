"""A simulated oracle with known culprits, and a driver that answers a strategy like the
engine does. Used by the benchmarks and the tests; pure (a seeded ``random.Random``).

The driver mirrors :class:`clusterbisect.engine.Engine`:

* runs are cached per subset: a subset is never run again unless more runs are wanted;
* a request with ``runs=None`` is answered by the first pass or fail among the cached
  runs, and an unresolved run is retried once before the answer is ``unresolved``;
* a request with ``runs=N`` gets N runs in total for its subset, and the answer holds
  all of them;
* the runs missing from one batch are run K at a time; each group is one round;
* with ``max_probes``, the search is cut short (``inconclusive``, with the strategy's
  candidates) once that many runs are spent, and a batch is trimmed to fit.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from clusterbisect.outcome import Outcome
from clusterbisect.search.base import (
    INCONCLUSIVE,
    SearchResult,
    Strategy,
    Subset,
    answer_from,
    runs_needed,
    runs_to_start,
)


@dataclass
class SimOracle:
    """Probe outcomes for known culprits.

    ``culprits`` is a list of culprit sets: a set of two or more changes fails only
    when all of them are applied (an interaction); several sets are independent
    culprits. A probe that contains any culprit set fails with rate ``p``; any other
    probe fails with the background rate ``q``. With ``unresolved`` > 0, a run is
    unresolved (an infrastructure error) with that probability.
    """

    culprits: list[Subset]
    p: float = 1.0
    q: float = 0.0
    unresolved: float = 0.0
    seed: int = 0
    rng: random.Random = field(init=False, repr=False)
    runs: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.culprits = [frozenset(c) for c in self.culprits]
        self.rng = random.Random(self.seed)

    @classmethod
    def single(
        cls, culprit: int, p: float = 1.0, q: float = 0.0, unresolved: float = 0.0, seed: int = 0
    ) -> SimOracle:
        """One culprit change."""
        return cls([frozenset({culprit})], p=p, q=q, unresolved=unresolved, seed=seed)

    def contains_culprit(self, subset: Iterable[int]) -> bool:
        applied = subset if isinstance(subset, (set, frozenset)) else frozenset(subset)
        return any(c <= applied for c in self.culprits)

    def run(self, subset: Subset) -> Outcome:
        """One run of the probe that applies ``subset``."""
        self.runs += 1
        if self.unresolved and self.rng.random() < self.unresolved:
            return Outcome.UNRESOLVED
        rate = self.p if self.contains_culprit(subset) else self.q
        # Draw even at rates 0 and 1 so the random stream does not depend on them.
        return Outcome.FAIL if self.rng.random() < rate else Outcome.PASS


@dataclass
class SimStats:
    """What one simulated search cost and found."""

    probes: int  # runs, baselines included
    rounds: int  # groups of at most K runs run at the same time
    result: SearchResult
    batches: int = 0  # batches the strategy yielded


def simulate(
    strategy: Strategy,
    n: int,
    oracle: SimOracle,
    parallel: int = 1,
    max_probes: int | None = None,
) -> SimStats:
    """Drive ``strategy`` over ``n`` changes against ``oracle``, as the engine would."""
    k = max(1, parallel)
    cache: dict[Subset, list[Outcome]] = {}

    def outcomes_of(subset: Subset) -> list[Outcome]:
        return cache.get(subset, [])

    probes = rounds = batches = 0
    search = strategy.search(n)
    try:
        batch = next(search)
        batches += 1
        while True:
            pending = [r for r in batch if runs_needed(r, outcomes_of(r.subset)) > 0]
            if not pending:
                answers = [answer_from(r, outcomes_of(r.subset)) for r in batch]
                batch = search.send([a for a in answers if a is not None])
                batches += 1
                continue
            if max_probes is not None and probes >= max_probes:
                search.close()
                result = SearchResult(
                    INCONCLUSIVE,
                    candidates=strategy.candidates(),
                    notes=[f"stopped early: the probe budget ({max_probes}) is spent"],
                )
                return SimStats(probes, rounds, result, batches)
            wanted = [r.subset for r in runs_to_start(pending, outcomes_of)]
            if max_probes is not None:
                wanted = wanted[: max(0, max_probes - probes)]
            for start in range(0, len(wanted), k):
                rounds += 1
                for subset in wanted[start : start + k]:
                    cache.setdefault(subset, []).append(oracle.run(subset))
                    probes += 1
    except StopIteration as stop:
        return SimStats(probes, rounds, stop.value, batches)


def found_exactly(result: SearchResult, culprits: Iterable[Subset]) -> bool:
    """True when the result is ``found`` with exactly the true culprit sets."""
    if result.status != "found":
        return False
    return {frozenset(c.changes) for c in result.culprits} == {frozenset(c) for c in culprits}


def ideal_rounds(n: int, parallel: int) -> int:
    """ceil(log_(K+1) n): the rounds a noiseless K-ary search needs for one culprit."""
    return math.ceil(math.log(n, parallel + 1) - 1e-9) if n > 1 else 0
