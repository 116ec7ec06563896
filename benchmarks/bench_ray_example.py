"""examples/ray-upgrade end to end on a local Ray: time to the verdict, and teardown.

Runs the example's README command (``clusterbisect run good.yaml bad.yaml --backend
ray --parallel 2 --fail-on AttributeError``, plus ``--json`` and a state dir) as a
user would, ``--runs`` times, and measures from outside the process:

- *verdict*: from the start until the result is on stdout (the tool prints it as soon
  as the search ends);
- *wall*: until the process exits (the result, then the teardown: the local Ray
  stopped, its temp dir handed to a background process);
- *teardown*: wall - verdict;
- *probes*: the sum of the probes' own run times (``duration_s`` in the result), and
  the result's own ``elapsed_s``.

Target (issue 18): wall within 1.5x the sum of the probes' run times. The pip
virtualenvs are built by Ray from PyPI for each distinct set of pins (Ray installs
with ``--no-cache-dir``); later runs meet a warm index/proxy. Prints one Markdown
table; exits 1 when a run misses the target or finds another culprit.

    RAY_ADDRESS= .venv/bin/python benchmarks/bench_ray_example.py [--runs 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "ray-upgrade"
TARGET = 1.5


def one_run(state: Path) -> dict[str, float]:
    argv = [sys.executable, "-m", "clusterbisect.cli", "run", "good.yaml", "bad.yaml"]
    argv += ["--backend", "ray", "--parallel", "2", "--fail-on", "AttributeError"]
    argv += ["--state-dir", str(state), "--json", "--quiet"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    began = time.perf_counter()
    proc = subprocess.Popen(
        argv, cwd=EXAMPLE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    text = ""
    verdict = None
    for line in proc.stdout:  # the JSON document ends with a "}" line of its own
        text += line
        if line.rstrip() == "}":
            verdict = time.perf_counter() - began
            break
    _rest, err = proc.communicate()
    wall = time.perf_counter() - began
    if proc.returncode != 0 or verdict is None:
        raise SystemExit(f"the run failed ({proc.returncode}): {err[-2000:]}")
    result = json.loads(text)
    keys = [[c["key"] for c in culprit["changes"]] for culprit in result["culprits"]]
    if keys != [["runtime_env.pip.semver"]]:
        raise SystemExit(f"wrong culprits: {keys}")
    return {
        "probes": float(result["probe_count"]),
        "probe_sum": sum(p["duration_s"] or 0.0 for p in result["probes"]),
        "elapsed": float(result["elapsed_s"]),
        "verdict": verdict,
        "wall": wall,
        "teardown": wall - verdict,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args(argv)
    print("| run | probes | sum of probe run times s | verdict s | result elapsed_s "
          "| teardown s | wall s | wall / probe sum |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    missed = False
    for run in range(1, args.runs + 1):
        with tempfile.TemporaryDirectory(prefix="cb-bench-") as tmp:
            m = one_run(Path(tmp) / "state")
        ratio = m["wall"] / m["probe_sum"]
        missed |= ratio > TARGET
        print(
            f"| {run} | {m['probes']:.0f} | {m['probe_sum']:.1f} | {m['verdict']:.1f} "
            f"| {m['elapsed']:.1f} | {m['teardown']:.1f} | {m['wall']:.1f} | {ratio:.2f} |",
            flush=True,
        )
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
