"""The default strategy: bisection watched for contradictions, flake-aware when it must be."""

from __future__ import annotations

import random

import pytest

from clusterbisect.outcome import Outcome
from clusterbisect.search.auto import BAD_RECHECK, GOOD_RECHECK, AutoStrategy
from clusterbisect.search.base import (
    BASELINE_FAILED,
    NOT_REPRODUCIBLE,
    ProbeAnswer,
    ProbeRequest,
    Subset,
    answer_from,
)
from clusterbisect.search.oracle import SimOracle, found_exactly, simulate

F, P = Outcome.FAIL, Outcome.PASS


def run(oracle: SimOracle, n: int, parallel: int = 1) -> tuple[AutoStrategy, object]:
    strategy = AutoStrategy(parallel=parallel)
    stats = simulate(strategy, n, oracle, parallel=parallel, max_probes=40 * n)
    return strategy, stats


def test_a_deterministic_culprit_stays_a_bisection_with_one_more_confirmation() -> None:
    strategy, stats = run(SimOracle.single(13), 64)
    assert found_exactly(stats.result, [frozenset({13})])  # type: ignore[attr-defined]
    assert strategy.switched is None and strategy.name == "bisection"
    assert stats.result.culprits[0].confidence == 1.0  # type: ignore[attr-defined]
    # log2(64) = 6 descent probes, 2 baselines, 2 confirmations and the second run.
    assert stats.probes == 11  # type: ignore[attr-defined]


@pytest.mark.parametrize("p", [0.3, 0.5, 0.7])
def test_a_flaky_failure_never_gets_a_confident_wrong_culprit(p: float) -> None:
    n, wrong, right = 20, 0, 0
    for trial in range(60):
        culprit = frozenset({random.Random(trial).randrange(n)})
        _strategy, stats = run(SimOracle([culprit], p=p, seed=trial), n)
        result = stats.result  # type: ignore[attr-defined]
        right += found_exactly(result, [culprit])
        wrong += sum(1 for c in result.culprits if c.changes != culprit and c.confidence >= 0.99)
    assert wrong == 0
    assert right >= {0.3: 35, 0.5: 50, 0.7: 55}[p]


def test_a_failing_confirmation_hands_over_to_the_flaky_search_with_its_evidence() -> None:
    # An interaction looks like a flaky culprit to single runs: the descent's guess does
    # not fail alone. The flaky search takes over and still finds the pair.
    strategy, stats = run(SimOracle([frozenset({3, 40})]), 64)
    assert strategy.switched is not None and "did not fail on its own" in strategy.switched
    assert found_exactly(stats.result, [frozenset({3, 40})])  # type: ignore[attr-defined]
    notes = " ".join(stats.result.notes)  # type: ignore[attr-defined]
    assert "switched to the flake-aware search" in notes


def test_a_bad_spec_that_passes_is_run_again_before_not_reproducible() -> None:
    _strategy, stats = run(SimOracle([frozenset({1})], p=0.0), 8)
    result = stats.result  # type: ignore[attr-defined]
    assert result.status == NOT_REPRODUCIBLE
    assert stats.probes == 1 + BAD_RECHECK  # type: ignore[attr-defined]
    assert any("passed all 4 runs" in note for note in result.notes)


def test_a_good_spec_that_fails_is_run_again_before_baseline_failed() -> None:
    _strategy, stats = run(SimOracle([frozenset({1})], q=1.0), 8)
    result = stats.result  # type: ignore[attr-defined]
    assert result.status == BASELINE_FAILED
    assert stats.probes == GOOD_RECHECK + 1  # type: ignore[attr-defined]


def test_a_baseline_that_disagrees_with_itself_switches_at_once() -> None:
    # Scripted: the bad spec passes, then fails when run again.
    strategy = AutoStrategy()
    search = strategy.search(4)
    batch = next(search)
    assert [r.purpose for r in batch] == ["baseline-good", "baseline-bad"]
    batch = search.send([ProbeAnswer(P, (P,)), ProbeAnswer(P, (P,))])
    assert batch == [ProbeRequest(frozenset(range(4)), runs=BAD_RECHECK, purpose="baseline-bad")]
    batch = search.send([ProbeAnswer(F, (P, F, P, P))])
    assert strategy.switched is not None and "bad baseline's runs disagree" in strategy.switched
    assert strategy.name == "flaky"
    # The flaky search starts from the runs already seen: it asks for more, not again.
    assert all(r.runs is not None for r in batch)


@pytest.mark.parametrize(
    ("failing_again", "passing_again", "why"),
    [
        ((F, F), (P, P), "masks the failure"),
        ((F, P), (P, P), "disagreed with itself"),
        ((F, F), (P, F), "disagreed with itself"),
    ],
)
def test_a_failing_subset_inside_a_passing_one_is_run_again(
    failing_again: tuple[Outcome, ...], passing_again: tuple[Outcome, ...], why: str
) -> None:
    """Whether the runs disagree (flaky) or repeat (a change masks the failure), the
    bisection's certainty is gone: the flake-aware search takes over."""
    strategy = AutoStrategy()
    small, big = frozenset({0}), frozenset({0, 1})
    strategy._runs = {small: (F,), big: (P,)}
    watch = strategy._contradictions()
    batch = next(watch)
    assert batch == [
        ProbeRequest(small, runs=2, purpose="recheck"),
        ProbeRequest(big, runs=2, purpose="recheck"),
    ]
    with pytest.raises(StopIteration) as stop:
        watch.send([ProbeAnswer(failing_again[-1], failing_again), ProbeAnswer(P, passing_again)])
    assert why in stop.value.value


def test_replaying_the_answers_gives_the_same_requests() -> None:
    # A resumed session replays the journal: every request must get the answer it had.
    oracle = SimOracle([frozenset({5})], p=0.5, seed=3)
    first = AutoStrategy()
    cache: dict[Subset, list[Outcome]] = {}
    log: list[list[ProbeRequest]] = []

    def drive(strategy: AutoStrategy, record: bool) -> object:
        search = strategy.search(20)
        batch = next(search)
        index = 0
        try:
            while True:
                if record:
                    log.append(batch)
                    for request in batch:
                        while answer_from(request, cache.get(request.subset, [])) is None:
                            cache.setdefault(request.subset, []).append(oracle.run(request.subset))
                else:
                    assert batch == log[index], f"batch {index} differs on replay"
                    index += 1
                answers = [answer_from(r, cache[r.subset]) for r in batch]
                batch = search.send([a for a in answers if a is not None])
        except StopIteration as stop:
            return stop.value

    result = drive(first, record=True)
    replayed = drive(AutoStrategy(), record=False)
    assert replayed == result
