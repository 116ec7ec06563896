"""The deterministic strategy against a simulated world with known culprits.

The world is a pure function of the applied subset; the strategy is exercised
exactly as the engine drives it (cache, one retry for unresolved).
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterbisect.outcome import Outcome
from clusterbisect.search.base import ProbeAnswer, SearchResult, Subset
from clusterbisect.search.bisection import BisectionStrategy, split


def drive(n, culprits, parallel=1, odd=frozenset()):
    """Run the strategy to the end; ``odd`` settings make a probe fail differently."""

    def world(subset: Subset) -> Outcome:
        if any(c <= subset for c in culprits):
            return Outcome.FAIL
        return Outcome.UNRESOLVED if subset & odd else Outcome.PASS

    search = BisectionStrategy(parallel).search(n)
    seen: dict[Subset, Outcome] = {}
    probes = rounds = 0
    try:
        batch = next(search)
        while True:
            new = list(dict.fromkeys(r.subset for r in batch if r.subset not in seen))
            rounds += bool(new)
            for subset in new:
                seen[subset] = world(subset)
                probes += 1
            batch = search.send([ProbeAnswer(seen[r.subset], (seen[r.subset],)) for r in batch])
    except StopIteration as stop:
        result: SearchResult = stop.value
        return result, probes, rounds


def culprit_sets(result):
    return sorted(sorted(c.changes) for c in result.culprits)


def test_split_is_balanced_and_complete():
    chunks = split(list(range(10)), 3)
    assert [len(c) for c in chunks] == [4, 3, 3]
    assert [i for chunk in chunks for i in chunk] == list(range(10))
    assert split([1], 5) == [[1]]


@pytest.mark.parametrize("n", [1, 2, 3, 8, 64, 200])
def test_single_culprit_within_log2_bound(n):
    bound = math.ceil(math.log2(n)) + 4 if n > 1 else 4  # + 2 baselines + 2 confirmations
    for culprit in range(n):
        result, probes, _ = drive(n, [frozenset([culprit])])
        assert result.status == "found"
        assert culprit_sets(result) == [[culprit]]
        assert result.culprits[0].confirmed
        assert probes <= bound, (culprit, probes)


@pytest.mark.parametrize("n,parallel", [(200, 4), (64, 3), (1000, 4)])
def test_parallel_rounds_within_log_k_plus_1_bound(n, parallel):
    bound = math.ceil(math.log(n, parallel + 1) - 1e-9) + 2  # + baselines + confirmations
    for culprit in range(0, n, 7):
        result, _, rounds = drive(n, [frozenset([culprit])], parallel=parallel)
        assert culprit_sets(result) == [[culprit]]
        assert rounds <= bound, (culprit, rounds)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(2, 120),
    data=st.data(),
    parallel=st.sampled_from([1, 2, 4]),
)
def test_interacting_pair_is_one_culprit(n, data, parallel):
    a = data.draw(st.integers(0, n - 1))
    b = data.draw(st.integers(0, n - 1).filter(lambda x: x != a))
    result, _, _ = drive(n, [frozenset([a, b])], parallel=parallel)
    assert result.status == "found"
    assert culprit_sets(result) == [sorted([a, b])]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(3, 150), data=st.data(), parallel=st.sampled_from([1, 3]))
def test_independent_culprits_are_all_reported(n, data, parallel):
    a = data.draw(st.integers(0, n - 1))
    b = data.draw(st.integers(0, n - 1).filter(lambda x: x != a))
    result, _, _ = drive(n, [frozenset([a]), frozenset([b])], parallel=parallel)
    assert result.status == "found"
    assert culprit_sets(result) == sorted([[a], [b]])


def test_triple_interaction_and_a_single_together():
    culprits = [frozenset([3, 40, 77]), frozenset([120])]
    result, _, _ = drive(150, culprits)
    assert culprit_sets(result) == [[3, 40, 77], [120]]


@pytest.mark.parametrize("odd", [3, 39, 41, 199])
def test_a_probe_that_fails_differently_does_not_mislead(odd):
    result, _, _ = drive(200, [frozenset([40])], odd=frozenset([odd]))
    assert culprit_sets(result) == [[40]]


def test_baselines_gate_the_search():
    # The culprit is always applied, so the good baseline fails.
    result, probes, _ = drive(10, [frozenset()])
    assert result.status == "baseline_failed" and probes == 2
    result, probes, _ = drive(10, [])
    assert result.status == "not_reproducible" and probes == 2
    result, probes, _ = drive(0, [])
    assert result.status == "no_differences" and probes == 0


def test_candidates_narrow_while_searching():
    strategy = BisectionStrategy()
    search = strategy.search(64)
    next(search)
    everything = frozenset(range(64))
    batch = search.send(
        [ProbeAnswer(Outcome.PASS, (Outcome.PASS,)), ProbeAnswer(Outcome.FAIL, (Outcome.FAIL,))]
    )
    assert strategy.candidates() == [everything]
    search.send([ProbeAnswer(Outcome.FAIL, (Outcome.FAIL,))])  # the first half fails
    assert strategy.candidates() == [batch[0].subset]
    assert strategy.remaining_estimate() is not None
