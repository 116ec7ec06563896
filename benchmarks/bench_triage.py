"""Fleet triage: does it rank the culprit first, and how fast is it on 10,000 Jobs?

    .venv/bin/python benchmarks/bench_triage.py                  # 100 fleets per scenario
    .venv/bin/python benchmarks/bench_triage.py --fleets 20 --skip-scale
    .venv/bin/python benchmarks/bench_triage.py --skip-accuracy --scale-jobs 10000

**Accuracy.** Fleets of 1,000 Jobs (and their Pods) from ``benchmarks/fleet.py``, each
with its own seed: waves of an image upgrade (a bundle of ten settings), eight
independent partial rollouts, 4% background failures with other signatures. Each
fleet goes through the same code as ``triage FILE`` (the objects are handed over in
memory instead of through a file). Per scenario:

- single: the culprit is the top suspect (or in its bundle); only it is significant;
- pair (fails only together): both culprits in the top 3; the interaction is found;
- bundle (a culprit among the image's env defaults): the bundle is ranked first.

For every scenario, the pair's ``diff`` must contain the culprit(s), and the project's
bisection (``BisectionStrategy`` against a simulated oracle that fails exactly when the
culprit changes are applied) must find exactly them among the pair's changes: that is
the bundle split, which no fleet can do.

**Scale.** 10,000 Jobs and their 10,000 Pods written as one export, triaged by
``triage`` in a fresh process pinned to one core (``sched_setaffinity``): wall time of
the call (reading and parsing included), its CPU time (what the wall time would be on a
core of its own, when other work shares the machine) and the peak resident memory of
the process.
Compact JSON (as ``jq -c`` prints it) and kubectl's indented JSON.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from multiprocessing import Pool
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.fleet import FleetConfig, as_list, generate, write
from clusterbisect.config import TriageOptions
from clusterbisect.diff import diff
from clusterbisect.search.auto import AutoStrategy
from clusterbisect.search.bisection import BisectionStrategy
from clusterbisect.search.oracle import SimOracle, found_exactly, simulate
from clusterbisect.specs.kubernetes import parse_documents
from clusterbisect.specs.model import Spec
from clusterbisect.triage.api import analyse_inventory
from clusterbisect.triage.model import Inventory
from clusterbisect.triage.priors import Priors
from clusterbisect.triage.sources import classify

TIME_TARGET_S = 10.0
MEMORY_TARGET_MB = 1536


@dataclass
class Trial:
    """What one fleet gave."""

    first: bool  # single/bundle: culprit in suspect #1; pair: both in the top 3
    only_significant: bool  # the significant suspects are exactly the culprit's
    interaction: bool  # pair: the two culprits found as an interaction
    pair_holds: bool  # the pair's diff contains every culprit key
    bisected: bool  # the bisection of the pair's changes finds exactly the culprit
    changes: int  # settings that differ in the pair
    probes: int  # probes the bisection took
    # The same with the ranking as priors, then `run`'s default (the watched bisection)
    # without and with them (`triage --bisect`, `run --priors`).
    probes_with: list[int]
    found_priors: bool  # with priors, the bisection and `run` still find exactly the culprit
    hand: Bisections | None  # a hand-picked pair (None: it does not hold the culprit)
    seconds: float
    rank: int  # rank of the (last) culprit among the suspects, 0 if absent


def _keys(suspect: Any) -> list[str]:
    return [suspect.key, *(b.key for b in suspect.bundle)]


# What the culprit's failure says, to tell it from the lookalikes and the background.
MARKERS = {
    "single": "NET/IB",
    "pair": "illegal memory access",
    "bundle": "Weights only load failed",
}


def hand_picked(objects: list[dict[str, Any]], culprit: str) -> list[dict[str, Any]]:
    """The pair someone would pick by hand in the workload with the most of the
    culprit's failures: its first succeeded Job and its last Job that failed with the
    culprit's failure (copies: the fleet is consumed by the triage)."""
    failed_pods = {
        o["metadata"]["labels"]["job-name"]
        for o in objects
        if o["kind"] == "Pod" and MARKERS[culprit] in json.dumps(o["status"])
    }
    jobs = [o for o in objects if o["kind"] == "Job"]
    bad = [j for j in jobs if j["metadata"]["name"] in failed_pods]
    workload = statistics.mode(j["metadata"]["labels"]["app"] for j in bad)
    mine = sorted(
        (j for j in jobs if j["metadata"]["labels"]["app"] == workload),
        key=lambda j: j["metadata"]["creationTimestamp"],
    )
    good = next(j for j in mine if j["status"].get("succeeded"))
    last_bad = [j for j in mine if j["metadata"]["name"] in failed_pods][-1]
    return [json.loads(json.dumps(good)), json.loads(json.dumps(last_bad))]


@dataclass
class Bisections:
    """A pair's changes, and the bisection and `run`'s default, each without and with
    the priors: their probes, and whether each found exactly the culprit."""

    changes: int
    probes: list[int]
    found: list[bool]


def bisections(good: Spec, bad: Spec, culprits: set[str], priors: Priors) -> Bisections | None:
    """None when the pair's changes do not hold the culprit."""
    found = diff(good, bad)
    index = {c.key: i for i, c in enumerate(found)}
    if not culprits <= set(index):
        return None
    culprit_set = frozenset(index[k] for k in culprits)
    weights = [priors.weight(c.key) for c in found]
    runs = [
        simulate(strategy, len(found), SimOracle([culprit_set]))
        for strategy in (
            BisectionStrategy(),
            BisectionStrategy(weights=weights),
            AutoStrategy(),
            AutoStrategy(weights=weights),
        )
    ]
    return Bisections(
        len(found),
        [r.probes for r in runs],
        [found_exactly(r.result, [culprit_set]) for r in runs],
    )


def one_fleet(args: tuple[str, int, int, float]) -> Trial:
    culprit, seed, jobs, fail_rate = args
    objects, truth = generate(
        FleetConfig(jobs=jobs, seed=seed, culprit=culprit, fail_rate=fail_rate)
    )
    by_hand = hand_picked(objects, culprit)
    inventory = Inventory(sources=["fleet"])
    gc.disable()
    start = time.perf_counter()
    classify([as_list(objects)], "fleet", inventory)
    del objects
    analysis = analyse_inventory(inventory, TriageOptions())
    seconds = time.perf_counter() - start
    gc.enable()
    result = analysis.result
    culprits = set(truth.culprit_keys)
    ranks = [
        next((i for i, s in enumerate(result.suspects, 1) if key in _keys(s)), 0)
        for key in culprits
    ]
    rank = 0 if 0 in ranks else max(ranks)
    first = 0 < rank <= 3 if culprit == "pair" else rank == 1
    significant = {k for s in result.suspects if s.significant for k in _keys(s)}
    allowed = set(truth.bundle_keys) if culprit == "bundle" else culprits
    only = culprits <= significant <= allowed
    interaction = any({x.first.key, x.second.key} == culprits for x in result.interactions)
    pair_holds = bisected = found_priors = False
    changes = 0
    probes = [0, 0, 0, 0]
    assert analysis.priors is not None
    if analysis.good is not None and analysis.bad is not None:
        measured = bisections(analysis.good, analysis.bad, culprits, analysis.priors)
        if measured is not None:
            pair_holds = True
            changes, probes = measured.changes, measured.probes
            bisected = measured.found[0]
            found_priors = all(measured.found[1:])
    good, bad = (parse_documents([o], f"fleet#{o['metadata']['name']}") for o in by_hand)
    hand = bisections(good, bad, culprits, analysis.priors)
    return Trial(
        first,
        only,
        interaction,
        pair_holds,
        bisected,
        changes,
        probes[0],
        probes[1:],
        found_priors,
        hand,
        seconds,
        rank,
    )


@dataclass
class Row:
    scenario: str
    fail_rate: float
    jobs: int
    trials: list[Trial] = field(default_factory=list)

    def share(self, attr: str) -> str:
        return f"{sum(getattr(t, attr) for t in self.trials) / len(self.trials):.2f}"


# (culprit, failure rate with the culprit, jobs per fleet; None: --jobs), and the measure.
SCENARIOS = (
    ("single", 0.9, None, "culprit ranked first"),
    ("single", 0.3, None, "culprit ranked first"),
    ("single", 0.1, None, "culprit ranked first"),
    ("single", 0.3, 200, "culprit ranked first"),
    ("single", 0.1, 200, "culprit ranked first"),
    ("pair", 0.9, None, "both culprits in the top 3"),
    ("pair", 0.3, None, "both culprits in the top 3"),
    ("pair", 0.3, 200, "both culprits in the top 3"),
    ("bundle", 0.9, None, "bundle ranked first"),
    ("bundle", 0.3, None, "bundle ranked first"),
)


def accuracy(fleets: int, jobs: int, workers: int) -> list[Row]:
    rows = []
    with Pool(workers) as pool:
        for scenario, fail_rate, size, _ in SCENARIOS:
            row = Row(scenario, fail_rate, size or jobs)
            work = [(scenario, seed, row.jobs, fail_rate) for seed in range(fleets)]
            row.trials = pool.map(one_fleet, work, chunksize=4)
            rows.append(row)
            print(f"  {scenario} ({fail_rate}, {row.jobs} jobs): done", file=sys.stderr)
    return rows


def print_accuracy(rows: list[Row], fleets: int) -> None:
    print(f"\n### Accuracy: {fleets} fleets per row\n")
    print(
        "| culprit | fail rate | jobs | measure | share | only the culprit significant "
        "| interaction found | pair holds the culprit | bisection of the pair finds it "
        "| pair changes (mean) | probes (mean) | triage s (mean) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (scenario, _, _, goal), row in zip(SCENARIOS, rows, strict=True):
        trials = row.trials
        interaction = row.share("interaction") if scenario == "pair" else "-"
        print(
            f"| {scenario} | {row.fail_rate} | {row.jobs} | {goal} | {row.share('first')} "
            f"| {row.share('only_significant')} | {interaction} | {row.share('pair_holds')} "
            f"| {row.share('bisected')} | {statistics.mean(t.changes for t in trials):.1f} "
            f"| {statistics.mean(t.probes for t in trials):.1f} "
            f"| {statistics.mean(t.seconds for t in trials):.2f} |"
        )


def _fewer(before: float, after: float) -> str:
    return f"{1 - after / before:.0%}" if before else "-"


def print_priors(rows: list[Row], fleets: int) -> None:
    """The follow-up bisections with and without the ranking: of the pair triage chose,
    and of a pair picked by hand (``hand_picked``)."""
    for title, pick in (
        ("the pair triage chose", _chosen),
        ("a pair picked by hand (the workload's first success, its last failure)", _by_hand),
    ):
        print(f"\n### Priors: bisecting {title}, {fleets} fleets per row\n")
        print(
            "| culprit | fail rate | jobs | changes (mean) | bisection | with priors | fewer "
            "| run (default) | with priors | fewer | found with priors |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        pooled: list[Bisections] = []
        for row in rows:
            measured = [b for b in (pick(t) for t in row.trials) if b is not None]
            pooled += measured
            if measured:
                print(_priors_row(row.scenario, str(row.fail_rate), str(row.jobs), measured))
        if pooled:
            print(_priors_row("**all**", "", "", pooled))


def _chosen(trial: Trial) -> Bisections | None:
    if not trial.pair_holds:
        return None
    found = [trial.bisected, trial.found_priors, True, trial.found_priors]
    return Bisections(trial.changes, [trial.probes, *trial.probes_with], found)


def _by_hand(trial: Trial) -> Bisections | None:
    return trial.hand


def _priors_row(scenario: str, rate: str, jobs: str, measured: list[Bisections]) -> str:
    changes = statistics.mean(b.changes for b in measured)
    mean = [statistics.mean(b.probes[i] for b in measured) for i in range(4)]
    found = sum(b.found[1] and b.found[3] for b in measured) / len(measured)
    return (
        f"| {scenario} | {rate} | {jobs} | {changes:.1f} | {mean[0]:.2f} | {mean[1]:.2f} "
        f"| {_fewer(mean[0], mean[1])} | {mean[2]:.2f} | {mean[3]:.2f} "
        f"| {_fewer(mean[2], mean[3])} | {found:.2f} |"
    )


CHILD = """
import gc, json, os, resource, sys, time
os.sched_setaffinity(0, {int(sys.argv[2])})
from clusterbisect.triage import TriageRequest, triage
start, cpu_start = time.perf_counter(), time.process_time()
result = triage(TriageRequest([sys.argv[1]]))
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
top = result.suspects[0].key if result.suspects else None
out = {"seconds": seconds, "cpu_s": cpu, "rss_mb": rss, "top": top, "jobs": result.jobs}
print(json.dumps(out))
"""


def scale(jobs: int, repeats: int) -> list[dict[str, Any]]:
    objects, truth = generate(FleetConfig(jobs=jobs, seed=7, culprit="single"))
    cpu = sorted(os.sched_getaffinity(0))[-1]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-triage-") as tmp:
        for label, indent in (("compact JSON", None), ("kubectl JSON (indent 4)", 4)):
            path = Path(tmp) / "fleet.json"
            write(path, objects, "json", indent)
            size_mb = path.stat().st_size / 1e6
            runs = []
            for _ in range(repeats):
                out = subprocess.run(
                    [sys.executable, "-c", CHILD, str(path), str(cpu)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                runs.append(json.loads(out.stdout))
            assert all(r["top"] == truth.culprit_keys[0] for r in runs), runs
            rows.append({"label": label, "size_mb": size_mb, "runs": runs})
            print(f"  scale {label}: done", file=sys.stderr)
    return rows


def print_scale(rows: list[dict[str, Any]], jobs: int) -> None:
    print(f"\n### Scale: {jobs:,} Jobs + {jobs:,} Pods, one core\n")
    print(
        "| export | size | triage s (median) | s (max) | CPU s (median) | peak RSS MB (max) "
        "| targets |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        seconds = [r["seconds"] for r in row["runs"]]
        cpu = statistics.median(r["cpu_s"] for r in row["runs"])
        rss = max(r["rss_mb"] for r in row["runs"])
        met = max(seconds) < TIME_TARGET_S and rss < MEMORY_TARGET_MB
        print(
            f"| {row['label']} | {row['size_mb']:.0f} MB | {statistics.median(seconds):.2f} "
            f"| {max(seconds):.2f} | {cpu:.2f} | {rss:.0f} | {'met' if met else 'MISSED'} "
            f"(< {TIME_TARGET_S:.0f} s, < {MEMORY_TARGET_MB} MB) |"
        )
    print(f"\nLoad average when the runs ended: {os.getloadavg()[0]:.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fleets", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--scale-jobs", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-scale", action="store_true")
    args = parser.parse_args()
    if not args.skip_accuracy:
        rows = accuracy(args.fleets, args.jobs, args.workers)
        print_accuracy(rows, args.fleets)
        print_priors(rows, args.fleets)
    if not args.skip_scale:
        print_scale(scale(args.scale_jobs, args.repeats), args.scale_jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
