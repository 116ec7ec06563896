"""Flaky bisection benchmark: the engine's strategies and the baselines on a simulated
oracle with one known culprit, p (reproduction rate) and q (background failure rate).

    .venv/bin/python benchmarks/bench_flaky.py                 # 1,000 trials per cell
    .venv/bin/python benchmarks/bench_flaky.py --quick         # 100 trials, small grid
    .venv/bin/python benchmarks/bench_flaky.py --trials 200 --n 128 --p 0.5

Each trial draws the culprit from a seeded ``random.Random``; every strategy sees the
same culprit and the same oracle seed. Accuracy counts a trial as right only when the
status is ``found`` with exactly the true culprit. Probes are runs (baselines and
confirmations included); rounds are groups of at most K runs at the same time, counted
as the engine counts them. Output: a Markdown table per n on stdout.
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing import Pool
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.baselines import (
    Ddmin,
    OneAtATime,
    PlainBisection,
    picire_available,
    run_picire,
)
from clusterbisect.search.auto import AutoStrategy
from clusterbisect.search.base import Strategy
from clusterbisect.search.bisection import BisectionStrategy
from clusterbisect.search.flaky import FlakyStrategy
from clusterbisect.search.oracle import SimOracle, SimStats, found_exactly, simulate

DDMIN_REPEATS = 3

# name -> (factory(parallel, p, q), serial only)
STRATEGIES: dict[str, tuple[Callable[[int, float, float], Strategy] | None, bool]] = {
    "flaky": (lambda k, p, q: FlakyStrategy(parallel=k), False),
    "flaky (p,q given)": (lambda k, p, q: FlakyStrategy(parallel=k, p=p, q=q), False),
    "bisection (engine)": (lambda k, p, q: BisectionStrategy(parallel=k), False),
    # What `run --baseline-runs 6` does: bisection, or the flaky search if they disagree.
    "auto, 6 baselines": (lambda k, p, q: AutoStrategy(parallel=k, baseline_runs=6), False),
    "plain bisection": (lambda k, p, q: PlainBisection(parallel=k), False),
    "one-at-a-time": (lambda k, p, q: OneAtATime(parallel=k), False),
    f"ddmin x{DDMIN_REPEATS}": (lambda k, p, q: Ddmin(parallel=k, repeats=DDMIN_REPEATS), False),
    "picire ddmin": (None, True),
}


def budget(n: int) -> int:
    """A cap on runs per trial for the baselines that can wander (ddmin under flakes)."""
    return max(200, 10 * n)


Key = tuple[str, int, float, float, int, str]  # strategy, n, p, q, K, culprit shape


def draw_culprits(shape: str, n: int, trial: int) -> list[frozenset[int]]:
    """The true culprits of one trial: one change, an interacting pair, or two changes."""
    rng = random.Random(trial)
    if shape == "single":
        return [frozenset({rng.randrange(n)})]
    a, b = rng.sample(range(n), 2)
    return [frozenset({a, b})] if shape == "pair" else [frozenset({a}), frozenset({b})]


@dataclass
class Cell:
    """Totals of the trials run so far for one (strategy, n, p, q, K)."""

    right: int = 0
    probes: list[int] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, other: Cell) -> None:
        self.right += other.right
        self.probes += other.probes
        self.rounds += other.rounds
        self.seconds += other.seconds


def run_cell(task: tuple[Key, int, int]) -> tuple[Key, Cell]:
    """Trials ``first..first+count`` of one cell."""
    key, first, count = task
    name, n, p, q, k, shape = key
    factory, _serial = STRATEGIES[name]
    cell, started = Cell(), time.perf_counter()
    for trial in range(first, first + count):
        culprits = draw_culprits(shape, n, trial)
        oracle = SimOracle(culprits, p=p, q=q, seed=1_000_003 * trial + n)
        if factory is None:
            stats: SimStats = run_picire(n, oracle).stats
        else:
            stats = simulate(factory(k, p, q), n, oracle, parallel=k, max_probes=budget(n))
        cell.right += found_exactly(stats.result, culprits)
        cell.probes.append(stats.probes)
        cell.rounds.append(stats.rounds)
    cell.seconds = time.perf_counter() - started
    return key, cell


def p95(values: list[int]) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="100 trials, n=16 and 128")
    parser.add_argument("--n", type=int, nargs="*", default=[16, 128, 1000])
    parser.add_argument("--p", type=float, nargs="*", default=[1.0, 0.9, 0.7, 0.5])
    parser.add_argument("--q", type=float, nargs="*", default=[0.0, 0.05])
    parser.add_argument("--parallel", type=int, nargs="*", default=[1, 4])
    parser.add_argument("--strategies", nargs="*", default=list(STRATEGIES))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--shape",
        choices=["single", "pair", "two"],
        default="single",
        help="one culprit, an interacting pair, or two independent culprits",
    )
    parser.add_argument(
        "--slow-trials",
        type=int,
        default=None,
        help="trials for one-at-a-time, ddmin and picire at n >= 1000 (default: --trials)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.n = 100, [16, 128]
    slow = {"one-at-a-time", f"ddmin x{DDMIN_REPEATS}", "picire ddmin"}
    names = [s for s in args.strategies if s in STRATEGIES]
    if "picire ddmin" in names and not picire_available():
        print("picire is not installed: its rows are left out", file=sys.stderr)
        names.remove("picire ddmin")

    tasks = make_tasks(args, names, slow)
    started = time.perf_counter()
    cells: dict[Key, Cell] = {}
    with Pool(max(1, args.workers)) as pool:
        for key, part in pool.imap_unordered(run_cell, tasks):
            cells.setdefault(key, Cell()).add(part)

    print(f"<!-- {len(tasks)} tasks, {time.perf_counter() - started:.0f} s wall -->")
    for n in args.n:
        print_table(args, names, n, cells)


def grid(args: argparse.Namespace, names: list[str]) -> list[tuple[float, float, int, str]]:
    """(p, q, K, strategy) of every cell, in table order; serial-only strategies at K=1."""
    return [
        (p, q, k, name)
        for p, q, k, name in itertools.product(args.p, args.q, args.parallel, names)
        if not (STRATEGIES[name][1] and k != 1)
    ]


def make_tasks(
    args: argparse.Namespace, names: list[str], slow: set[str]
) -> list[tuple[Key, int, int]]:
    """The work, in chunks of trials (each task one chunk of one cell)."""
    tasks: list[tuple[Key, int, int]] = []
    chunk = 250
    for n in args.n:
        for p, q, k, name in grid(args, names):
            trials = args.trials
            if n >= 1000 and name in slow and args.slow_trials is not None:
                trials = args.slow_trials
            for first in range(0, trials, chunk):
                key = (name, n, p, q, k, args.shape)
                tasks.append((key, first, min(chunk, trials - first)))
    return tasks


def print_table(args: argparse.Namespace, names: list[str], n: int, cells: dict[Key, Cell]) -> None:
    print(f"\n#### n = {n}, culprits: {args.shape}\n")
    print("| p | q | K | strategy | trials | accuracy | mean probes | p95 probes | mean rounds |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|")
    for p, q, k, name in grid(args, names):
        cell = cells.get((name, n, p, q, k, args.shape))
        if not cell:
            continue
        trials = len(cell.probes)
        print(
            f"| {p:g} | {q:g} | {k} | {name} | {trials} | "
            f"{cell.right / trials:.3f} | {statistics.mean(cell.probes):.1f} | "
            f"{p95(cell.probes)} | {statistics.mean(cell.rounds):.1f} |"
        )


if __name__ == "__main__":
    main()
