"""Search strategies: they choose the next probes from the outcomes so far, and do no I/O.

- ``base``: the contract between a strategy and whoever answers it (the engine, step
  mode, a benchmark's simulated oracle);
- ``bisection``: deterministic bisection (one culprit, interactions, several culprits);
- ``auto``: the default: bisection, watched for contradictions, handing over to...
- ``flaky/``: the flake-aware search (a posterior over the culprit);
- ``priors``: weights per change (from a triage ranking) that order the search;
- ``oracle``: a simulated oracle for tests and benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clusterbisect.config import SearchOptions
    from clusterbisect.search.base import Strategy


def make_strategy(options: SearchOptions, weights: Sequence[float] | None = None) -> Strategy:
    """The strategy ``options`` ask for: flake-aware from the start, or the default.
    ``weights`` (one per change searched) are priors: the likeliest changes first."""
    p, q = options.repro_rate, options.background_rate
    if options.strategy_name() == "flaky":
        from clusterbisect.search.flaky import FlakyStrategy

        return FlakyStrategy(
            parallel=options.parallel,
            confidence=options.confidence,
            baseline_runs=options.baseline_runs,
            p=p,
            q=q,
            weights=weights,
        )
    from clusterbisect.search.auto import AutoStrategy

    return AutoStrategy(
        parallel=options.parallel,
        baseline_runs=options.baseline_runs,
        weights=weights,
        confidence=options.confidence,
        **{k: v for k, v in (("p", p), ("q", q)) if v is not None},
    )
