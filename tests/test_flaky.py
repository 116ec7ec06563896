"""The flake-aware strategy: posterior values by hand, stopping, clean checks, determinism,
and end-to-end searches against the simulated oracle."""

from __future__ import annotations

import math

import pytest

from clusterbisect.outcome import Outcome
from clusterbisect.search.base import (
    BASELINE_FAILED,
    FOUND,
    INCONCLUSIVE,
    NOT_REPRODUCIBLE,
    ProbeAnswer,
    ProbeRequest,
)
from clusterbisect.search.flaky import FlakyStrategy
from clusterbisect.search.flaky.posterior import Line, batch_gain, best_mass, clean_runs_needed
from clusterbisect.search.oracle import SimOracle, found_exactly, simulate


def position_probs(line: Line) -> dict[int, float]:
    return {pos: block.weight for block in line.blocks for pos in range(block.start, block.end + 1)}


# --- the posterior, computed by hand ---------------------------------------------------


def test_posterior_two_changes_after_a_fail_then_a_pass() -> None:
    # Two changes, no special hypotheses: the culprit is change 0 (position 1) or
    # change 1 (position 2), 1/2 each. Probe {0} (cut 1) with p = 0.5, q = 0.1.
    line = Line(frozenset(), (0, 1), prior_alone=0.0, prior_none=0.0, p=0.5, q=0.1)
    line.observe(1, fails=1, passes=0)
    line.update()
    # fail: 0.5 (culprit inside) against 0.1 (outside) -> 0.5 / 0.6
    assert position_probs(line)[1] == pytest.approx(0.5 / 0.6)
    line.observe(1, fails=1, passes=1)  # counts are cumulative
    line.update()
    # and a pass: 0.5 * 0.5 = 0.25 against 0.1 * 0.9 = 0.09
    assert position_probs(line)[1] == pytest.approx(0.25 / 0.34)
    assert position_probs(line)[2] == pytest.approx(0.09 / 0.34)


def test_posterior_three_changes_with_the_flake_hypothesis() -> None:
    # Three changes (0.3 each) and "no culprit, a flake" (0.1); p = 0.8, q = 0.1.
    line = Line(frozenset(), (0, 1, 2), prior_alone=0.0, prior_none=0.1, p=0.8, q=0.1)
    line.observe(3, fails=1, passes=0)  # the bad spec fails
    line.observe(1, fails=0, passes=1)  # {0} passes
    line.update()
    # change 0: 0.3*0.8*0.2 = 0.048; changes 1, 2: 0.3*0.8*0.9 = 0.216; flake 0.1*0.1*0.9
    total = 0.048 + 0.216 + 0.216 + 0.009
    probs = position_probs(line)
    assert probs[1] == pytest.approx(0.048 / total)
    assert probs[2] == pytest.approx(0.216 / total)
    assert probs[3] == pytest.approx(0.216 / total)
    assert probs[4] == pytest.approx(0.009 / total)
    assert line.top() == (2, pytest.approx(0.216 / total))  # ties: the earlier position


def test_posterior_with_learned_rates_is_beta_binomial() -> None:
    # p ~ Beta(2, 1), q ~ Beta(1, 19). One fail of {0}: change 0 predicts it with
    # E[p] = 2/3, change 1 with E[q] = 1/20.
    line = Line(
        frozenset(), (0, 1), prior_alone=0.0, prior_none=0.0, p_prior=(2, 1), q_prior=(1, 19)
    )
    line.observe(1, fails=1, passes=0)
    line.update()
    assert position_probs(line)[1] == pytest.approx((2 / 3) / (2 / 3 + 1 / 20))
    # A second fail: the predictive of p is now 3/4, of q 2/21.
    line.observe(1, fails=2, passes=0)
    line.update()
    a, b = (2 / 3) * (3 / 4), (1 / 20) * (2 / 21)
    assert position_probs(line)[1] == pytest.approx(a / (a + b))
    p_hat, q_hat = line.estimates()
    assert 0.5 < p_hat < 1.0 and 0.0 < q_hat < 0.1


def test_posterior_with_mass_on_q_zero() -> None:
    # p ~ Beta(2, 1); q = 0 with prior mass 0.7, else Beta(1, 19). Two changes.
    line = Line(
        frozenset(),
        (0, 1),
        prior_alone=0.0,
        prior_none=0.0,
        p_prior=(2, 1),
        q_prior=(1, 19),
        q_zero=0.7,
    )
    line.observe(1, fails=1, passes=0)  # {0} fails once
    line.update()
    # Change 0: the fail is inside, E[p] = 2/3; no run outside, so the q part is 1.
    # Change 1: the fail is outside; q = 0 cannot fail, so only 0.3 * E[q] = 0.3 / 20.
    a, b = 2 / 3, 0.3 / 20
    assert position_probs(line)[1] == pytest.approx(a / (a + b))
    # Then {0} passes once: change 0 now has 1 fail, 1 pass inside (2/3 * 1/4);
    # change 1 has them outside: the Beta part only, 1/20 * 19/21.
    line.observe(1, fails=1, passes=1)
    line.update()
    a, b = (2 / 3) * (1 / 4), 0.3 * (1 / 20) * (19 / 21)
    assert position_probs(line)[1] == pytest.approx(a / (a + b))
    # q's posterior mean: under change 0 no run is outside it, so the prior's, 0.3 / 20;
    # under change 1 the fail rules out q = 0: the Beta's (1 + 1) / (20 + 2).
    w0 = a / (a + b)
    _p_hat, q_hat = line.estimates()
    assert q_hat == pytest.approx(w0 * 0.3 / 20 + (1 - w0) * 2 / 22)
    # Mass on q = 0 carried to a following search: 0.7 under change 0, 0 under change 1.
    assert line.learned_points()[1] == pytest.approx(w0 * 0.7)


def test_a_pass_outside_keeps_q_zero_alive() -> None:
    # Mass 0.5 on q = 0; one change and the flake hypothesis. The probe {} (cut 0)
    # passes 3 times: under "change 0" those runs are outside it, and q = 0 predicts
    # them with 1, the Beta(1, 19) part with 19/20 * 20/21 * 21/22 = 19/22.
    line = Line(
        frozenset(), (0,), prior_alone=0.0, prior_none=0.5, p=0.5, q_prior=(1, 19), q_zero=0.5
    )
    line.observe(0, fails=0, passes=3)
    line.observe(1, fails=1, passes=0)
    line.update()
    culprit = 0.5 * 0.5 * (0.5 + 0.5 * 19 / 22)
    # Flake: every run outside, one fail: the Beta part only, 1/20 * (19/21)(20/22)(21/23)
    # in some order; the Beta-binomial of 1 fail in 4 runs is B(2, 22) / B(1, 19).
    flake = (
        0.5
        * 0.5
        * math.exp(
            math.lgamma(2)
            + math.lgamma(22)
            - math.lgamma(24)
            - (math.lgamma(1) + math.lgamma(19) - math.lgamma(20))
        )
    )
    assert position_probs(line)[1] == pytest.approx(culprit / (culprit + flake))


def test_line_maps_prefix_subsets_to_cuts() -> None:
    line = Line(frozenset({9}), (4, 2, 7), prior_alone=0.5, prior_none=0.01)
    assert line.subset(2) == frozenset({9, 4, 2})
    assert line.cut_of(frozenset({9, 4, 2})) == 2
    assert line.cut_of(frozenset({9})) == 0
    assert line.cut_of(frozenset({9, 2})) is None  # not a prefix of the order
    assert line.cut_of(frozenset({4, 2})) is None  # lacks the forced change


def test_line_maps_clean_probes_to_positions() -> None:
    line = Line(frozenset(), (4, 2, 7), prior_alone=0.0, prior_none=0.1)
    assert line.clean_subset(1) == frozenset({2, 7})  # every change but U[0] = 4
    assert line.clean_of(frozenset({2, 7})) == 1
    assert line.clean_of(frozenset({4, 7})) == 2
    # Position 3's clean probe {4, 2} is the prefix of cut 2, so it stays a cut.
    assert line.clean_of(frozenset({4, 2})) is None
    assert line.cut_of(frozenset({4, 2})) == 2
    assert line.clean_of(frozenset({2})) is None  # two changes missing
    assert line.clean_of(frozenset({2, 7, 9})) is None  # a change from outside the line


def test_posterior_with_the_leaders_clean_probe() -> None:
    # Three changes, 1/3 each; p = 0.5, q = 0.1; prior 0.1 that the rest holds another
    # culprit. The clean probe of position 1 ({1, 2}, all but change 0) passes once.
    line = Line(frozenset(), (0, 1, 2), prior_alone=0.0, prior_none=0.0, p=0.5, q=0.1)
    assert line.dirty == 0.1
    line.observe_clean(1, fails=0, passes=1)
    line.update()
    # Change 0: clean rest -> outside (pass 0.9), dirty rest -> inside (pass 0.5).
    # Changes 1 and 2: the probe holds them -> pass 0.5.
    first = 0.9 * 0.9 + 0.1 * 0.5
    probs = position_probs(line)
    assert probs[1] == pytest.approx(first / (first + 0.5 + 0.5))
    assert probs[2] == pytest.approx(0.5 / (first + 1.0))
    # Then it fails once: change 0: 0.9 * (0.9 * 0.1) + 0.1 * (0.5 * 0.5);
    # changes 1 and 2: 0.5 * 0.5.
    line.observe_clean(1, fails=1, passes=1)
    line.update()
    first = 0.9 * 0.9 * 0.1 + 0.1 * 0.25
    assert position_probs(line)[1] == pytest.approx(first / (first + 0.25 + 0.25))
    # The flake and "the good spec fails" read it as everyone else does: outside and
    # inside. Three changes plus both special positions, q = 0.1, p = 0.5.
    line = Line(frozenset(), (0, 1, 2), prior_alone=0.2, prior_none=0.2, p=0.5, q=0.1)
    line.observe_clean(2, fails=1, passes=0)
    line.update()
    probs = position_probs(line)
    assert probs[0] / probs[4] == pytest.approx(0.5 / 0.1)  # same prior mass 0.2
    assert probs[1] / probs[3] == pytest.approx(1.0)  # both hold it: inside
    assert probs[2] / probs[1] == pytest.approx((0.9 * 0.1 + 0.1 * 0.5) / 0.5)


def test_a_failing_clean_probe_reads_as_a_second_culprit_not_as_background() -> None:
    # {0} fails 5 times in 10 and so does the clean probe of position 1 ({1, 2}): at
    # p = 0.5 that is a second culprit in the rest, not a background rate of 0.5.
    line = Line(frozenset(), (0, 1, 2), prior_alone=0.0, prior_none=0.0, p=0.5, q_prior=(1, 19))
    line.observe(1, fails=5, passes=5)
    line.observe_clean(1, fails=5, passes=5)
    line.update()
    assert line.top()[0] == 1
    assert line.clean_mass(1) > 0.9  # the probe now fails at p under almost everything
    # So the estimate of q does not count those failures as background ones: read as
    # background they would make q about (1 + 5) / (20 + 10) = 0.2 under position 1.
    assert line.estimates()[1] < 0.1


def test_candidates_left_is_the_credible_set() -> None:
    # Four changes and the flake hypothesis (0.1): 0.225 each. Holding 0.99 of the
    # posterior takes all four changes and the flake, which is not a change: 4 left.
    strategy = FlakyStrategy(p=0.5, q=0.1)
    assert strategy.candidates_left() is None  # no search yet
    line = Line(frozenset(), (0, 1, 2, 3), prior_alone=0.0, prior_none=0.1, p=0.5, q=0.1)
    strategy._line = line
    assert strategy.candidates_left() == 4
    # {0, 1} fails 6 times: changes 2, 3 and the flake predict that with 0.1**6, so
    # changes 0 and 1 now hold all but 1e-4 of the posterior, half each: 2 left.
    line.observe(2, fails=6, passes=0)
    line.update()
    assert strategy.candidates_left() == 2
    # {0} passes 12 times: change 1 is 0.9**12 / 0.5**12 = 1,157 times likelier than 0.
    line.observe(1, fails=0, passes=12)
    line.update()
    assert strategy.candidates_left() == 1


def test_learned_clean_runs_average_over_p() -> None:
    # Given p: the formula. Learned p with no runs: the Beta(3, 1) prior, so
    # E[(1 - p)^r] = B(3, 1 + r) / B(3, 1) = 6 / ((r + 1)(r + 2)(r + 3)) <= 0.01 from r = 7
    # (6 / 504 = 0.0119 at r = 6; 6 / 720 = 0.0083 at r = 7).
    assert Line(frozenset(), (0, 1), 0.0, 0.1, p=0.9).clean_runs(0.99) == 2
    assert Line(frozenset(), (0, 1), 0.0, 0.1, p_prior=(3, 1)).clean_runs(0.99) == 7
    # Plugging in the mean (3/4) would ask for only 4: averaging asks for more.
    assert clean_runs_needed(0.75, 0.99) == 4


# --- probe choice and the confirmation count ---------------------------------------------


def test_clean_runs_needed_formula() -> None:
    assert clean_runs_needed(0.5, 0.99) == 7  # log(0.01) / log(0.5) = 6.64
    assert clean_runs_needed(0.9, 0.99) == 2
    assert clean_runs_needed(0.7, 0.95) == 3  # log(0.05) / log(0.3) = 2.49
    assert clean_runs_needed(1.0, 0.99) == 1
    for p in (0.2, 0.35, 0.5, 0.8):
        r = clean_runs_needed(p, 0.99)
        assert (1 - p) ** r <= 0.01 < (1 - p) ** (r - 1)


def test_best_mass_and_batch_gain() -> None:
    assert best_mass(1.0, 0.0) == pytest.approx(0.5)
    # p = 0.5, q = 0: maximise h(m/2) - m -> m/2 = 1/5
    assert best_mass(0.5, 0.0) == pytest.approx(0.4)
    assert batch_gain([0.5, 0.5], [1], 1.0, 0.0) == pytest.approx(1.0)
    # Two nested cuts splitting the mass in thirds: log2(3) bits when noiseless.
    assert batch_gain([1 / 3, 1 / 3, 1 / 3], [1, 1], 1.0, 0.0) == pytest.approx(math.log2(3))
    # Two runs of one probe with p = 0.5 give less than two bits' worth of one run each.
    one = batch_gain([0.4, 0.6], [1], 0.5, 0.0)
    assert one < batch_gain([0.4, 0.6], [2], 0.5, 0.0) < 2 * one


# --- stopping, confirmation and verdicts ---------------------------------------------


def drive(strategy: FlakyStrategy, n: int, answer) -> tuple[list[list[ProbeRequest]], object]:
    """Drive a strategy with ``answer(request, runs_so_far) -> Outcome`` per new run."""
    runs: dict[frozenset[int], list[Outcome]] = {}
    batches = []
    search = strategy.search(n)
    try:
        batch = next(search)
        while True:
            batches.append(batch)
            answers = []
            for request in batch:
                have = runs.setdefault(request.subset, [])
                while len(have) < (request.runs or 1):
                    have.append(answer(request, list(have)))
                answers.append(ProbeAnswer(have[0], tuple(have)))
            batch = search.send(answers)
    except StopIteration as stop:
        return batches, stop.value


def test_stops_at_confidence_then_runs_the_clean_check_formula() -> None:
    # One change: good passes, bad fails once. With p = 0.5 and q = 0 the change is
    # the culprit with posterior 0.89 / (0.89 + 0.005 + 0.1 * 1e-4) > 0.99: no search
    # probe; the culprit alone is the bad spec (seen failing); the rest (the good spec)
    # must pass ceil(log(0.01) / log(0.5)) = 7 times in all.
    strategy = FlakyStrategy(p=0.5, q=0.0)

    def answer(request: ProbeRequest, _have: list[Outcome]) -> Outcome:
        return Outcome.FAIL if request.subset else Outcome.PASS

    batches, result = drive(strategy, 1, answer)
    assert [r.purpose for r in batches[0]] == ["baseline-good", "baseline-bad"]
    clean = [r for b in batches[1:] for r in b]
    assert all(r.subset == frozenset() and r.purpose == "confirm-bad-minus-culprits" for r in clean)
    assert [r.runs for r in clean] == [2, 3, 4, 5, 6, 7]
    assert result.status == FOUND
    assert [c.changes for c in result.culprits] == [frozenset({0})]
    # The culprit's confidence is the product of its stages: the search (0.99439),
    # the culprit alone failing (0.999996) and the clean check (1 - 0.5**7).
    main = 0.89 * 0.9999 * 0.5 / (0.89 * 0.9999 * 0.5 + 0.01 * 0.25 + 0.1 * 0.9999e-4)
    alone = 0.25 / (0.25 + 0.01 * 1e-4)
    assert result.culprits[0].confidence == pytest.approx(main * alone * (1 - 0.5**7), abs=1e-5)
    assert result.estimates["p"] == pytest.approx(0.5)


def test_a_higher_confidence_needs_more_probes() -> None:
    oracle = SimOracle.single(5, p=0.6, q=0.0, seed=3)
    low = simulate(FlakyStrategy(p=0.6, q=0.0, confidence=0.9), 64, oracle)
    oracle = SimOracle.single(5, p=0.6, q=0.0, seed=3)
    high = simulate(FlakyStrategy(p=0.6, q=0.0, confidence=0.999), 64, oracle)
    assert found_exactly(low.result, [{5}]) and found_exactly(high.result, [{5}])
    assert high.probes > low.probes


def test_same_answers_give_the_same_requests() -> None:
    oracle = SimOracle.single(17, p=0.5, q=0.05, seed=11)
    log: list[tuple[ProbeRequest, Outcome]] = []

    def live(request: ProbeRequest, _have: list[Outcome]) -> Outcome:
        outcome = oracle.run(request.subset)
        log.append((request, outcome))
        return outcome

    first, result = drive(FlakyStrategy(parallel=2), 40, live)
    replay = iter(outcome for _request, outcome in log)
    second, again = drive(FlakyStrategy(parallel=2), 40, lambda _r, _h: next(replay))
    assert first == second
    assert again.culprits == result.culprits and again.status == result.status


@pytest.mark.parametrize("seed", range(5))
def test_finds_a_flaky_culprit_with_unknown_rates(seed: int) -> None:
    culprit = (7 * seed + 3) % 48
    stats = simulate(FlakyStrategy(), 48, SimOracle.single(culprit, p=0.5, q=0.0, seed=seed))
    assert found_exactly(stats.result, [{culprit}]), stats.result
    assert 0.3 < stats.result.estimates["p"] < 0.8
    assert stats.result.culprits[0].confidence >= 0.9


def test_parallel_batches_use_k_runs_and_fewer_rounds() -> None:
    serial = simulate(FlakyStrategy(p=0.7, q=0.0), 128, SimOracle.single(90, p=0.7, seed=1))
    wide = simulate(
        FlakyStrategy(parallel=4, p=0.7, q=0.0), 128, SimOracle.single(90, p=0.7, seed=1), 4
    )
    assert found_exactly(serial.result, [{90}]) and found_exactly(wide.result, [{90}])
    assert wide.rounds < serial.rounds


def test_deterministic_oracle_costs_like_bisection() -> None:
    # p = 1 given: 2 baselines + log2(n) + culprit alone + bad minus culprit.
    stats = simulate(FlakyStrategy(p=1.0, q=0.0), 1024, SimOracle.single(700, p=1.0))
    assert found_exactly(stats.result, [{700}])
    assert stats.probes == 2 + 10 + 2


def test_interaction_is_one_culprit_of_two_changes() -> None:
    oracle = SimOracle([frozenset({3, 20})], p=0.8, q=0.0, seed=5)
    stats = simulate(FlakyStrategy(), 32, oracle)
    assert found_exactly(stats.result, [{3, 20}]), stats.result


def test_two_independent_culprits_are_both_found() -> None:
    oracle = SimOracle([frozenset({4}), frozenset({25})], p=0.8, q=0.0, seed=2)
    stats = simulate(FlakyStrategy(), 32, oracle)
    assert found_exactly(stats.result, [{4}, {25}]), stats.result


@pytest.mark.parametrize("given", [False, True])
def test_a_flake_is_not_reproducible(given: bool) -> None:
    # No culprit; the bad spec failed once by chance (a 3% background rate) and never
    # again. With p and q given, or learned, the flake hypothesis wins.
    oracle = SimOracle([], p=1.0, q=0.03 if given else 0.0, seed=0)
    first = {"bad": True}

    def answer(request: ProbeRequest, _have: list[Outcome]) -> Outcome:
        if request.subset == frozenset(range(16)) and first["bad"]:
            first["bad"] = False
            return Outcome.FAIL
        return oracle.run(request.subset)

    strategy = FlakyStrategy(p=0.5, q=0.03) if given else FlakyStrategy()
    batches, result = drive(strategy, 16, answer)
    assert result.status == NOT_REPRODUCIBLE, result
    assert not result.culprits
    # A point mass on q = 0 makes "the one failure was background noise" a harder sell.
    assert sum(len(b) for b in batches) < 70


def test_a_failing_good_spec_is_baseline_failed() -> None:
    stats = simulate(FlakyStrategy(), 16, SimOracle([frozenset()], p=1.0))
    assert stats.result.status == BASELINE_FAILED


def test_budget_gives_inconclusive_with_ranked_candidates() -> None:
    strategy = FlakyStrategy(max_probes=12)
    stats = simulate(strategy, 1000, SimOracle.single(321, p=0.5, seed=4))
    assert stats.result.status == INCONCLUSIVE
    assert stats.probes <= 12 + 1
    assert stats.result.candidates and all(len(c) == 1 for c in stats.result.candidates)


def test_unresolved_runs_are_routed_around() -> None:
    oracle = SimOracle.single(9, p=0.8, q=0.0, unresolved=0.2, seed=8)
    stats = simulate(FlakyStrategy(), 40, oracle)
    assert found_exactly(stats.result, [{9}]), stats.result


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        FlakyStrategy(confidence=1.0)
    with pytest.raises(ValueError):
        FlakyStrategy(p=0.1, q=0.2)
