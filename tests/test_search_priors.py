"""Priors order the search (``search/priors.py``): the likeliest changes are tried
first, and the search still proves every culprit, whether the priors are right or not.

Driven by the simulated oracle as the engine would drive it (cache included), so the
probe counts are the ones a real run would pay.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from clusterbisect.search import priors
from clusterbisect.search.auto import AutoStrategy
from clusterbisect.search.base import Strategy, Subset
from clusterbisect.search.bisection import BisectionStrategy
from clusterbisect.search.flaky import FlakyStrategy, Line
from clusterbisect.search.oracle import SimOracle, SimStats, found_exactly, simulate

Make = Callable[[Sequence[float] | None], Strategy]
STRATEGIES: dict[str, Make] = {
    "bisection": lambda w: BisectionStrategy(1, w),
    "auto": lambda w: AutoStrategy(1, weights=w),
    "flaky": lambda w: FlakyStrategy(1, weights=w),
}


def weights(n: int, heavy: dict[int, float]) -> list[float]:
    return [heavy.get(i, 0.0) for i in range(n)]


def run(make: Make, n: int, culprits: list[set[int]], w: list[float] | None) -> SimStats:
    sets: list[Subset] = [frozenset(c) for c in culprits]
    stats = simulate(make(w), n, SimOracle(sets))
    assert found_exactly(stats.result, sets), stats.result
    return stats


def first_search_probe(strategy: Strategy, n: int) -> Subset:
    """The first probe after the baselines (answered: good passes, bad fails)."""
    from clusterbisect.outcome import Outcome
    from clusterbisect.search.base import ProbeAnswer

    search = strategy.search(n)
    batch = next(search)
    while all(r.purpose.startswith("baseline") for r in batch):
        answers = [
            ProbeAnswer(o, (o,) * (r.runs or 1))
            for r in batch
            for o in [Outcome.PASS if not r.subset else Outcome.FAIL]
        ]
        batch = search.send(answers)
    search.close()
    return batch[0].subset


def test_the_order_and_the_tier() -> None:
    w = [0.2, 1.0, 0.0, 1.0, 0.5, 0.0]
    assert priors.ordered(range(6), w) == [1, 3, 4, 0, 2, 5]
    assert priors.ordered([5, 2, 0], None) == [0, 2, 5]
    assert priors.top_tier([1, 3, 4, 0, 2, 5], w) == [1, 3]
    # A tier that is most of the changes is not tried alone; no weight, no tier.
    assert priors.top_tier([1, 3, 4], w) == []
    assert priors.top_tier([0, 2, 5], [0.0] * 6) == []
    assert priors.normalized([0.0, 0.0]) is None and priors.normalized([]) is None
    assert priors.normalized([2.0, -1.0]) == (1.0, 0.0)
    masses = priors.position_masses([1, 2], w)
    assert masses == pytest.approx([1.05 / 1.1, 0.05 / 1.1])
    assert sum(priors.position_masses([0, 2, 4], w)) == pytest.approx(1.0)


@pytest.mark.parametrize("name", ["bisection", "auto"])
def test_the_bisection_probes_the_top_suspect_alone_first(name: str) -> None:
    assert first_search_probe(STRATEGIES[name](weights(13, {9: 1.0, 2: 0.3})), 13) == {9}
    # Without priors it splits the changes in halves by index, as before.
    assert first_search_probe(STRATEGIES[name](None), 13) == frozenset(range(7))


@pytest.mark.parametrize("name", ["bisection", "auto", "flaky"])
def test_right_priors_cost_fewer_probes(name: str) -> None:
    make = STRATEGIES[name]
    n, culprit = 64, 37
    without = run(make, n, [{culprit}], None).probes
    right = run(make, n, [{culprit}], weights(n, {culprit: 1.0, 3: 0.4, 50: 0.2})).probes
    assert right < without
    if name != "flaky":
        # Baselines, good + culprit (the confirmation too: cached), bad - culprit; the
        # watched bisection runs good + culprit once more before it reports.
        assert right == (4 if name == "bisection" else 5)


@pytest.mark.parametrize("name", ["bisection", "auto", "flaky"])
def test_wrong_priors_still_find_the_culprit(name: str) -> None:
    make = STRATEGIES[name]
    n = 16
    without = run(make, n, [{11}], None).probes
    wrong = run(make, n, [{11}], weights(n, {2: 1.0, 5: 0.5})).probes
    assert wrong <= without + 3  # one probe of the wrong tier, and a less even split


@pytest.mark.parametrize("name", ["bisection", "auto"])
def test_an_interacting_pair_with_one_weight_is_probed_whole(name: str) -> None:
    make = STRATEGIES[name]
    n, pair = 20, {4, 15}
    with_priors = run(make, n, [pair], weights(n, {4: 1.0, 15: 1.0, 8: 0.3}))
    assert with_priors.probes < run(make, n, [pair], None).probes
    # Baselines, {4, 15}, {4}, {15}, bad - pair; the watched bisection confirms the
    # pair once more (and does not take it for a flaky failure).
    assert with_priors.probes == (6 if name == "bisection" else 7)
    assert with_priors.result.status == "found"


def test_two_culprits_each_tried_first_by_their_weight() -> None:
    n = 32
    w = weights(n, {20: 1.0, 7: 0.8})
    stats = run(STRATEGIES["bisection"], n, [{20}, {7}], w)
    assert stats.probes < run(STRATEGIES["bisection"], n, [{20}, {7}], None).probes


def test_a_flaky_line_gives_heavy_changes_more_prior_mass() -> None:
    order = (3, 0, 1, 2)
    plain = Line(frozenset(), order, prior_alone=0.01, prior_none=0.1)
    primed = Line(frozenset(), order, 0.01, 0.1, weights=[0.0, 0.0, 0.0, 1.0])
    ranked = primed.ranked(2)
    assert ranked[0][0] == 1  # position 1 is change 3, the heavy one
    assert ranked[0][1] > 0.7 and plain.ranked(1)[0][1] < 0.3
    # Blocks stay blocks of equal prior: the posterior still sums to one.
    assert sum(b.mass for b in primed.blocks) == pytest.approx(1.0)
