"""Pick the strategy from the evidence: plain bisection unless the baselines disagree.

With ``baseline_runs`` > 1, both baselines are repeated first. If every good run
passes and every bad run fails, nothing looks flaky and the deterministic bisection
goes on (its baseline requests are answered from those runs, so the deterministic
path pays nothing extra). If the runs disagree, the failure is flaky and the
flake-aware strategy takes over, starting from the rates the baselines showed.
"""

from __future__ import annotations

from typing import Any

from clusterbisect.outcome import Outcome
from clusterbisect.search.base import (
    NO_DIFFERENCES,
    ProbeRequest,
    Search,
    SearchResult,
    Strategy,
    Subset,
)
from clusterbisect.search.bisection import BisectionStrategy


class AutoStrategy:
    """Bisection, switching to :class:`FlakyStrategy` when repeated baselines disagree."""

    def __init__(self, parallel: int = 1, baseline_runs: int = 1, **flaky_options: Any) -> None:
        self.parallel = parallel
        self.baseline_runs = max(1, baseline_runs)
        self.flaky_options = flaky_options
        self.active: Strategy = BisectionStrategy(parallel)

    @property
    def name(self) -> str:
        return self.active.name

    def candidates(self) -> list[Subset]:
        return self.active.candidates()

    def remaining_estimate(self) -> int | None:
        return self.active.remaining_estimate()

    def candidates_left(self) -> int | None:
        return self.active.candidates_left()

    def search(self, n: int) -> Search:
        if n == 0:
            return SearchResult(NO_DIFFERENCES)
        if self.baseline_runs > 1:
            good, bad = yield [
                ProbeRequest(frozenset(), runs=self.baseline_runs, purpose="baseline-good"),
                ProbeRequest(frozenset(range(n)), runs=self.baseline_runs, purpose="baseline-bad"),
            ]
            steady = all(o is Outcome.PASS for o in good.runs) and all(
                o is Outcome.FAIL for o in bad.runs
            )
            if not steady and bad.fails and good.passes:
                from clusterbisect.search.flaky import FlakyStrategy

                self.active = FlakyStrategy(
                    parallel=self.parallel, baseline_runs=self.baseline_runs, **self.flaky_options
                )
        return (yield from self.active.search(n))
