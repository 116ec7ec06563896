"""The simulated oracle and the driver that answers strategies like the engine."""

from __future__ import annotations

import math

from clusterbisect.outcome import Outcome
from clusterbisect.search.base import (
    FOUND,
    INCONCLUSIVE,
    ProbeAnswer,
    ProbeRequest,
    Search,
    SearchResult,
    Subset,
)
from clusterbisect.search.bisection import BisectionStrategy
from clusterbisect.search.oracle import SimOracle, found_exactly, ideal_rounds, simulate


class Scripted:
    """A strategy that yields fixed batches and keeps the answers it got."""

    name = "scripted"

    def __init__(self, batches: list[list[ProbeRequest]]) -> None:
        self.batches = batches
        self.answers: list[list[ProbeAnswer]] = []

    def candidates(self) -> list[Subset]:
        return [frozenset({1})]

    def remaining_estimate(self) -> int | None:
        return None

    def search(self, n: int) -> Search:
        for batch in self.batches:
            self.answers.append((yield batch))
        return SearchResult(FOUND)


def test_oracle_rates_and_interactions() -> None:
    oracle = SimOracle([frozenset({1, 2}), frozenset({5})], p=0.6, q=0.1, seed=1)
    assert oracle.contains_culprit({1, 2, 3}) and oracle.contains_culprit([5])
    assert not oracle.contains_culprit({1, 3})  # half an interaction does not fail
    with_culprit = sum(oracle.run(frozenset({5})) is Outcome.FAIL for _ in range(4000)) / 4000
    without = sum(oracle.run(frozenset({1})) is Outcome.FAIL for _ in range(4000)) / 4000
    assert abs(with_culprit - 0.6) < 0.03 and abs(without - 0.1) < 0.02
    assert oracle.runs == 8000


def test_oracle_is_reproducible_from_its_seed() -> None:
    a = SimOracle.single(3, p=0.5, seed=42)
    b = SimOracle.single(3, p=0.5, seed=42)
    assert [a.run(frozenset({3})) for _ in range(50)] == [b.run(frozenset({3})) for _ in range(50)]


def test_deterministic_request_retries_an_unresolved_run_once() -> None:
    strategy = Scripted([[ProbeRequest(frozenset({0}))]])
    stats = simulate(strategy, 4, SimOracle.single(0, unresolved=1.0))
    (answer,) = strategy.answers[0]
    assert answer.outcome is Outcome.UNRESOLVED
    assert answer.runs == (Outcome.UNRESOLVED, Outcome.UNRESOLVED)
    assert stats.probes == 2 and stats.rounds == 2  # the retry is a new round


def test_deterministic_request_takes_the_first_definite_run() -> None:
    strategy = Scripted([[ProbeRequest(frozenset({0}))], [ProbeRequest(frozenset({0}))]])
    stats = simulate(strategy, 4, SimOracle.single(0, p=1.0))
    assert [a[0].outcome for a in strategy.answers] == [Outcome.FAIL, Outcome.FAIL]
    assert stats.probes == 1  # the second request is answered from the cache


def test_repeated_runs_are_cached_and_topped_up() -> None:
    subset = frozenset({0, 1})
    strategy = Scripted([[ProbeRequest(subset, runs=3)], [ProbeRequest(subset, runs=5)]])
    stats = simulate(strategy, 4, SimOracle.single(0, p=0.5, seed=7), parallel=2)
    first, second = strategy.answers[0][0], strategy.answers[1][0]
    assert len(first.runs) == 3 and len(second.runs) == 5
    assert second.runs[:3] == first.runs  # earlier runs are kept, not redrawn
    assert second.outcome is (Outcome.FAIL if Outcome.FAIL in second.runs else Outcome.PASS)
    # 3 runs two at a time (2 rounds), then 2 more (1 round)
    assert stats.probes == 5 and stats.rounds == 3


def test_a_batch_runs_k_at_a_time() -> None:
    batch = [ProbeRequest(frozenset({i})) for i in range(5)]
    stats = simulate(Scripted([batch]), 8, SimOracle.single(2), parallel=2)
    assert stats.probes == 5 and stats.rounds == 3


def test_budget_cuts_the_search_short() -> None:
    batch = [ProbeRequest(frozenset({i})) for i in range(5)]
    strategy = Scripted([batch, [ProbeRequest(frozenset({7}))]])
    stats = simulate(strategy, 8, SimOracle.single(2), parallel=1, max_probes=3)
    assert stats.result.status == INCONCLUSIVE
    assert stats.probes == 3
    assert stats.result.candidates == [frozenset({1})]


def test_drives_the_engine_bisection() -> None:
    # One culprit among 200: ceil(log2 200) = 8 probes + 2 baselines + 2 confirmations.
    stats = simulate(BisectionStrategy(), 200, SimOracle.single(137))
    assert found_exactly(stats.result, [{137}])
    assert stats.probes <= 12
    wide = simulate(BisectionStrategy(parallel=4), 200, SimOracle.single(137), parallel=4)
    assert found_exactly(wide.result, [{137}])
    assert wide.rounds <= 6


def test_drives_the_engine_bisection_to_an_interaction() -> None:
    stats = simulate(BisectionStrategy(), 64, SimOracle([frozenset({10, 50})]))
    assert found_exactly(stats.result, [{10, 50}])


def test_ideal_rounds() -> None:
    assert ideal_rounds(200, 1) == 8
    assert ideal_rounds(200, 4) == math.ceil(math.log(200, 5)) == 4
    assert ideal_rounds(1, 4) == 0
