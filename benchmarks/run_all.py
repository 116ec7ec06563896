"""Run every benchmark in this folder (``benchmarks/bench_*.py``), one after the other.

    .venv/bin/python benchmarks/run_all.py            # each with its own defaults
    .venv/bin/python benchmarks/run_all.py --quick    # small grids, a few minutes in all
    .venv/bin/python benchmarks/run_all.py --only bisection diff

``make bench`` runs the first form. Each benchmark prints its Markdown table on stdout
as it goes; this script adds a heading per benchmark, its wall time, and exits 1 if any
of them failed (a benchmark exits non-zero when a target it checks is missed).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Arguments for --quick: the same tables on a smaller grid.
QUICK_ARGS: dict[str, list[str]] = {
    "bisection": ["--trials", "5"],
    "chaos": ["--kills", "5", "--n", "16"],
    "diff": ["--repeat", "1"],
    "flaky": ["--quick"],
    "ray_example": ["--runs", "1"],
    "ray_overhead": ["--probes", "4"],
    "scale": ["--changed", "2000", "--env-settings", "20000", "--probes", "10"],
}


def benchmarks() -> dict[str, Path]:
    """Every ``bench_NAME.py`` here, by NAME."""
    return {p.stem.removeprefix("bench_"): p for p in sorted(HERE.glob("bench_*.py"))}


def main(argv: list[str] | None = None) -> int:
    found = benchmarks()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grids (see QUICK_ARGS)")
    parser.add_argument("--only", nargs="*", choices=sorted(found), help="run only these")
    args = parser.parse_args(argv)
    failed = []
    for name, path in found.items():
        if args.only and name not in args.only:
            continue
        extra = QUICK_ARGS.get(name, []) if args.quick else []
        print(f"\n## {name}: {path.name} {' '.join(extra)}\n", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(path), *extra], cwd=HERE.parent)
        wall = time.monotonic() - started
        print(f"\n<!-- {name}: exit {code}, {wall:.0f} s wall -->", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
