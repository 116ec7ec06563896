"""The chaos benchmark: SIGKILL a real local `run` at random points, `resume`, compare.

    .venv/bin/python benchmarks/bench_chaos.py                  # 20 kills, n = 64
    .venv/bin/python benchmarks/bench_chaos.py --kills 50 --n 128 --seed 3

A bisection of ``n`` env variables (one culprit; each probe sleeps a little and
leaves a background child) runs once uninterrupted; then each kill point (a random
number of journaled probes plus a random delay, ``benchmarks/chaos.py``) kills a fresh
run with SIGKILL and resumes it. Printed: where the kills landed, and for how many
resumed sessions the verdict equalled the uninterrupted one, the journal was valid,
the probe ids unique, the probes the same (none twice, none lost) and no probe
process was left. Exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.chaos import Scenario, kill_and_resume, kill_points, uninterrupted, wait_dead


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--probe-sleep", type=float, default=0.05)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-chaos-") as tmp:
        root = Path(tmp)
        scenario = Scenario(root / "inputs", n=args.n, culprit=args.n // 3)
        scenario.probe_sleep = args.probe_sleep
        scenario.write()
        started = time.monotonic()
        reference = uninterrupted(scenario, root / "reference")
        whole_s = time.monotonic() - started
        outcomes = []
        for number, (after, delay) in enumerate(kill_points(reference, args.kills, args.seed)):
            state = root / f"kill{number:03d}"
            outcomes.append(kill_and_resume(scenario, state, reference, after, delay, wait_dead))
    inside = [o for o in outcomes if not o.finished_first]
    rows = [
        ("kills", len(outcomes)),
        ("landed during the run", len(inside)),
        ("landed before the session was made (run again)", sum(o.before_session for o in outcomes)),
        ("left a torn journal line (cut off on resume)", sum(o.torn_tail for o in outcomes)),
        ("same verdict as uninterrupted", sum(o.same_verdict for o in outcomes)),
        ("journal valid after resume", sum(o.journal_valid for o in outcomes)),
        ("probe ids unique", sum(o.ids_unique for o in outcomes)),
        ("same probes, none twice, none lost", sum(o.same_probes for o in outcomes)),
        ("no probe process left", sum(not o.leftovers for o in outcomes)),
    ]
    print(
        f"n = {args.n}, uninterrupted: {reference['status']} "
        f"{[c['changes'][0]['key'] for c in reference['culprits']]} in "
        f"{reference['probe_count']} probes, {whole_s:.1f} s wall\n"
    )
    print("| | count |\n|---|---:|")
    for label, count in rows:
        print(f"| {label} | {count} |")
    resumes = [o.resume_s for o in outcomes]
    print(
        f"\nresume wall time: median {statistics.median(resumes):.2f} s, "
        f"max {max(resumes):.2f} s (load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs)"
    )
    failed = [o for o in outcomes if not o.ok]
    for outcome in failed:
        print(f"FAILED: {outcome}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
