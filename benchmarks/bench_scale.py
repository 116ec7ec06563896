"""Big inputs end to end: 20,000 changed settings, an 89k-variable environment, and
what the local probe's keeper costs.

    .venv/bin/python benchmarks/bench_scale.py                 # ~1-2 min
    .venv/bin/python benchmarks/bench_scale.py --changed 5000 --probes 20

- **20,000 changed settings**: two env files whose every variable differs, one of them
  the culprit. ``clusterbisect diff --json`` and ``clusterbisect run`` (local backend,
  a small Python workload) each run as a fresh process: wall time and the process's peak
  memory (max RSS, from ``getrusage`` of a wrapper that runs nothing else).
- **89,000 variables**: two env files sharing 89,000 variables (about 3 MB of
  environment, over Linux's default 2 MB for argv + environment) and differing in
  two: `run` must not fail with "Argument list too long".
- **Per-probe overhead**: ``LocalRunner.run`` of a probe that runs ``true``, against
  a bare ``subprocess.run(["true"])``: the keeper (a Python process, the subreaper) is
  the difference.

Exits 1 if a run does not find its culprit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CLI = [sys.executable, "-m", "clusterbisect.cli"]
# Runs ARGV as a child and prints its wall time, CPU time (user + system, the child and
# what it waited for: probes included) and peak RSS (KiB) as JSON on stderr.
MEASURE = """
import json, resource, subprocess, sys, time
started = time.monotonic()
done = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
wall = time.monotonic() - started
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = usage.ru_utime + usage.ru_stime
sys.stdout.buffer.write(done.stdout)
print(json.dumps({"wall": wall, "cpu": cpu, "rss_kib": usage.ru_maxrss, "code": done.returncode}),
      file=sys.stderr)
"""


def measured(argv: list[str], cwd: Path) -> tuple[dict[str, Any], str]:
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, *argv], cwd=cwd, capture_output=True, text=True, check=True
    )
    return json.loads(done.stderr.strip().splitlines()[-1]), done.stdout


def write_env_pair(folder: Path, shared: int, changed: int) -> tuple[str, str]:
    common = [f"SHARED_{i:06d}=value-{i:06d}-of-a-realistic-length" for i in range(shared)]
    for which in ("good", "bad"):
        lines = common + [f"CHANGED_{i:06d}={which}-{i}" for i in range(changed)]
        (folder / f"{which}.env").write_text("\n".join(lines) + "\n")
    return str(folder / "good.env"), str(folder / "bad.env")


def workload(folder: Path, culprit: str) -> str:
    """A Python workload that fails when ``culprit`` is bad. Not a shell script: dash
    takes ~20 s and bash minutes to start with 89,000 variables (their variable tables
    are not made for it), which would measure the shell, not clusterbisect."""
    script = folder / "work.py"
    script.write_text(
        f"#!{sys.executable} -S\nimport os, sys\n"
        f"if os.environ.get({culprit!r}, '').startswith('bad'):\n"
        "    print('CUDA error')\n    sys.exit(1)\n"
    )
    script.chmod(0o755)
    return str(script)


def scenario(folder: Path, shared: int, changed: int, culprit: str) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    good, bad = write_env_pair(folder, shared, changed)
    work = workload(folder, culprit)
    diff, out = measured([*CLI, "diff", good, bad, "--json"], folder)
    changes = len(json.loads(out)["changes"])
    run, out = measured([*CLI, "run", good, bad, "--json", "--quiet", "--", work], folder)
    result = json.loads(out)
    env_bytes = (folder / "good.env").stat().st_size
    keys = [[c["key"] for c in culprit["changes"]] for culprit in result["culprits"]]
    return {
        "settings": shared + changed,
        "changes": changes,
        "env_mib": env_bytes / (1 << 20),
        "diff": diff,
        "run": run,
        "status": result.get("status"),
        "found": keys == [[f"env.{culprit}"]],
        "probes": result.get("probe_count"),
    }


def probe_overhead(count: int, folder: Path) -> tuple[float, float]:
    from clusterbisect.runners.base import Probe, RunnerContext
    from clusterbisect.runners.local import LocalRunner
    from clusterbisect.specs.model import Spec

    spec = Spec("env", "env", "x", {"env": {}})
    runner = LocalRunner(RunnerContext())
    kept, bare = [], []
    for i in range(count):
        probe = Probe(f"p{i}", "s", spec, [], folder / f"p{i}.log", 60, ["true"])
        started = time.monotonic()
        runner.run([probe])
        kept.append(time.monotonic() - started)
        started = time.monotonic()
        subprocess.run(["true"], check=True)
        bare.append(time.monotonic() - started)
    return statistics.median(kept), statistics.median(bare)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changed", type=int, default=20_000)
    parser.add_argument("--env-settings", type=int, default=89_000)
    parser.add_argument("--probes", type=int, default=50)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        root = Path(tmp)
        culprit = f"CHANGED_{args.changed * 2 // 3:06d}"
        rows.append(("changed settings", scenario(root / "changed", 0, args.changed, culprit)))
        big = scenario(root / "env", args.env_settings - 2, 2, "CHANGED_000001")
        rows.append(("big environment", big))
        kept, bare = probe_overhead(args.probes, root)
    print(
        "| input | settings | changes | env file MiB | diff wall s | diff CPU s | diff peak MiB "
        "| run wall s | run CPU s | run peak MiB | probes | verdict |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for label, row in rows:
        verdict = "right culprit" if row["found"] else f"WRONG ({row['status']})"
        diff, run = row["diff"], row["run"]
        print(
            f"| {label} | {row['settings']:,} | {row['changes']:,} | {row['env_mib']:.1f} "
            f"| {diff['wall']:.2f} | {diff['cpu']:.2f} | {diff['rss_kib'] / 1024:.0f} "
            f"| {run['wall']:.2f} | {run['cpu']:.2f} | {run['rss_kib'] / 1024:.0f} "
            f"| {row['probes']} | {verdict} |"
        )
    print(
        f"\nPer-probe wall time, median of {args.probes}: {kept * 1000:.0f} ms through "
        f"LocalRunner (keeper included), {bare * 1000:.0f} ms for a bare `true`. "
        f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    return 0 if all(row["found"] for _, row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
