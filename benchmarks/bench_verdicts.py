"""Verdicts without ``--flaky``: how often `run` names a wrong culprit with confidence.

    .venv/bin/python benchmarks/bench_verdicts.py               # 100 trials per cell
    .venv/bin/python benchmarks/bench_verdicts.py --trials 300 --p 0.5

A user who does not know the failure is flaky runs plain `run`. This drives the
default strategy (``AutoStrategy``, one baseline run each, exactly as `run` without
flags) against a simulated oracle with one culprit among ``n`` changes that fails with
rate ``p`` (background rate ``q``), and sorts every verdict:

- right: ``found`` with exactly the true culprit;
- wrong, confident: a culprit that is not the true one, stated with confidence >= 0.99
  (the defect this benchmark guards against: it must stay at 0);
- wrong, hedged: a wrong culprit stated below 0.99;
- inconclusive: no culprit, with the hint to run the flake-aware search;
- not reproducible / baseline failed: the baselines did not behave.

Output: a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clusterbisect.search.auto import AutoStrategy
from clusterbisect.search.base import SearchResult
from clusterbisect.search.oracle import SimOracle, found_exactly, simulate

CONFIDENT = 0.99
KINDS = (
    "right",
    "wrong, confident",
    "wrong, hedged",
    "inconclusive",
    "not reproducible",
    "baseline failed",
)


def verdict(result: SearchResult, culprit: frozenset[int]) -> str:
    """Which of :data:`KINDS` a result is, for one true culprit."""
    if found_exactly(result, [culprit]):
        return "right"
    if result.status == "found":
        wrong = [c for c in result.culprits if frozenset(c.changes) != culprit]
        if any(c.confidence >= CONFIDENT for c in wrong):
            return "wrong, confident"
        return "wrong, hedged"
    return {
        "not_reproducible": "not reproducible",
        "baseline_failed": "baseline failed",
    }.get(result.status, "inconclusive")


def run_cell(n: int, p: float, q: float, trials: int) -> tuple[Counter[str], list[int]]:
    """``trials`` bisections of one culprit among ``n`` changes at rates ``p`` and ``q``."""
    counts: Counter[str] = Counter()
    probes: list[int] = []
    for trial in range(trials):
        culprit = frozenset({random.Random(trial).randrange(n)})
        oracle = SimOracle([culprit], p=p, q=q, seed=7_919 * trial + n)
        stats = simulate(AutoStrategy(parallel=1), n, oracle, max_probes=20 * n)
        counts[verdict(stats.result, culprit)] += 1
        probes.append(stats.probes)
    return counts, probes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--n", type=int, nargs="*", default=[20])
    parser.add_argument("--p", type=float, nargs="*", default=[0.3, 0.5, 0.7, 0.9, 1.0])
    parser.add_argument("--q", type=float, nargs="*", default=[0.0, 0.05])
    args = parser.parse_args(argv)
    print("| n | p | q | trials | " + " | ".join(KINDS) + " | mean probes |")
    print("|---|---|---|---:|" + "---:|" * len(KINDS) + "---:|")
    for n in args.n:
        for q in args.q:
            for p in args.p:
                counts, probes = run_cell(n, p, q, args.trials)
                cells = " | ".join(str(counts[k]) for k in KINDS)
                mean = statistics.mean(probes)
                print(f"| {n} | {p:g} | {q:g} | {args.trials} | {cells} | {mean:.1f} |")


if __name__ == "__main__":
    main()
