"""Deterministic bisection benchmark: probe counts and rounds on a simulated oracle.

    .venv/bin/python benchmarks/bench_bisection.py            # 30 trials per cell
    .venv/bin/python benchmarks/bench_bisection.py --trials 5 --n 8 64

The engine's real strategy (``BisectionStrategy``) runs against known culprits, side by
side with the incident's own method (one setting at a time) and Zeller's classic ddmin,
all driven exactly as the engine drives them (cache, baselines, confirmations). Each
trial draws the culprit positions from a seeded ``random.Random``; every strategy sees
the same culprits. "best" is the information-theoretic floor for one culprit:
ceil(log2 n) probes, or ceil(log_(K+1) n) rounds with K probes at once, not counting
the 2 baselines and 2 confirmations. Output: a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.baselines import Ddmin, OneAtATime
from clusterbisect.search.auto import AutoStrategy
from clusterbisect.search.base import Strategy, Subset
from clusterbisect.search.bisection import BisectionStrategy
from clusterbisect.search.oracle import SimOracle, found_exactly, ideal_rounds, simulate

STRATEGIES: dict[str, Callable[[int], Strategy]] = {
    # What `run` does by default: the bisection, watched for contradictions.
    "run (auto)": lambda k: AutoStrategy(parallel=k),
    "bisection": lambda k: BisectionStrategy(parallel=k),
    "one-at-a-time": lambda k: OneAtATime(parallel=k),
    "ddmin": lambda k: Ddmin(parallel=k, repeats=1),
}
SCENARIOS = ("one culprit", "two culprits", "interacting pair")


def draw_culprits(scenario: str, n: int, rng: random.Random) -> list[Subset]:
    if scenario == "one culprit" or n < 2:
        return [frozenset({rng.randrange(n)})]
    a, b = rng.sample(range(n), 2)
    if scenario == "two culprits":
        return [frozenset({a}), frozenset({b})]
    return [frozenset({a, b})]


def cell(name: str, scenario: str, n: int, k: int, trials: int) -> dict[str, float]:
    rng = random.Random(f"{scenario}-{n}")
    probes, rounds, right = [], [], 0
    for _ in range(trials):
        culprits = draw_culprits(scenario, n, rng)
        stats = simulate(STRATEGIES[name](k), n, SimOracle(culprits), parallel=k)
        probes.append(stats.probes)
        rounds.append(stats.rounds)
        right += found_exactly(stats.result, culprits)
    return {
        "accuracy": right / trials,
        "mean": statistics.fmean(probes),
        "max": max(probes),
        "rounds": statistics.fmean(rounds),
        "max_rounds": max(rounds),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--n", type=int, nargs="*", default=[8, 64, 1000, 10000])
    parser.add_argument("--parallel", type=int, nargs="*", default=[1, 4])
    args = parser.parse_args(argv)
    print(
        "| n | K | scenario | strategy | accuracy | probes mean | probes max | rounds mean "
        "| rounds max | best (1 culprit) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in args.n:
        for k in args.parallel:
            best = f"{math.ceil(math.log2(n))} probes / {ideal_rounds(n, k)} rounds"
            for scenario in SCENARIOS:
                for name in STRATEGIES:
                    if name == "one-at-a-time" and scenario == "interacting pair":
                        continue  # it cannot find interactions at all
                    row = cell(name, scenario, n, k, args.trials)
                    print(
                        f"| {n} | {k} | {scenario} | {name} | {row['accuracy']:.2f} "
                        f"| {row['mean']:.1f} | {row['max']} | {row['rounds']:.1f} "
                        f"| {row['max_rounds']} | {best} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
