"""Per-probe overhead of the Ray backend against the local backend.

The same trivial workload (``python -c pass``) runs as probes through both runners:
the local one (a subprocess) and the Ray one (a Ray job on a local Ray head started
for the run, as ``clusterbisect run --backend ray`` does without an address). It
measures the Ray start-up once, then the wall time per probe:

- serial, with the same runtime_env every time (a warm job supervisor worker pool),
- serial, with new ``env_vars`` for every probe (what a bisection does: each probe
  applies a different subset of changes, so each needs a fresh worker),
- K probes at once (``--parallel K``), as time per probe,

and the shutdown of the session's Ray. Prints one Markdown table.

    .venv/bin/python benchmarks/bench_ray_overhead.py [--probes 10] [--parallel 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from clusterbisect.runners.base import Probe, RunnerContext
from clusterbisect.runners.local import LocalRunner
from clusterbisect.runners.ray import RayRunner
from clusterbisect.specs.model import RAY_JOB, Spec

WORKLOAD = [sys.executable, "-c", "pass"]


def make_probes(state: Path, prefix: str, count: int, env_per_probe: bool) -> list[Probe]:
    probes = []
    for i in range(count):
        env = {"PROBE_INDEX": str(i)} if env_per_probe else {"PROBE_INDEX": "same"}
        doc = {"entrypoint": "unused", "runtime_env": {"env_vars": env}}
        spec = Spec(RAY_JOB, "RayJobSpec", "bench.yaml", doc)
        probe_id = f"{prefix}{i:03d}"
        probes.append(
            Probe(probe_id, "bench", spec, [], state / "logs" / f"{probe_id}.log", command=WORKLOAD)
        )
    return probes


def per_probe(runner: LocalRunner | RayRunner, probes: list[Probe], batch: int) -> list[float]:
    """Wall seconds per probe, running ``batch`` probes at a time."""
    times = []
    for start in range(0, len(probes), batch):
        chunk = probes[start : start + batch]
        began = time.perf_counter()
        results = runner.run(chunk)
        elapsed = time.perf_counter() - began
        if any(r.exit_code != 0 for r in results):
            raise SystemExit(f"a probe failed: {[r.infra_error or r.output for r in results]}")
        times.extend([elapsed / len(chunk)] * len(chunk))
    return times


def row(backend: str, case: str, times: list[float], local_mean: float | None) -> str:
    mean = statistics.mean(times)
    median = statistics.median(times)
    extra = f"{mean - local_mean:+.2f}" if local_mean is not None else "-"
    cells = [backend, case, str(len(times)), f"{mean:.3f}", f"{median:.3f}", f"{max(times):.3f}"]
    return "| " + " | ".join([*cells, extra]) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=10)
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        state = Path(tmp)
        local = LocalRunner()
        local_serial = per_probe(local, make_probes(state, "l", args.probes, True), 1)
        local_parallel = per_probe(local, make_probes(state, "m", args.probes, True), args.parallel)

        ray = RayRunner(RunnerContext(parallel=args.parallel, private_dir=state / "ray"))
        began = time.perf_counter()
        ray.client()
        startup = time.perf_counter() - began
        try:
            ray.run(make_probes(state, "w", 1, False))  # first job: the job agent warms up
            same_env = per_probe(ray, make_probes(state, "s", args.probes, False), 1)
            new_env = per_probe(ray, make_probes(state, "n", args.probes, True), 1)
            parallel = per_probe(ray, make_probes(state, "p", args.probes, True), args.parallel)
        finally:
            began = time.perf_counter()
            ray.close()
            shutdown = time.perf_counter() - began

    local_mean = statistics.mean(local_serial)
    local_par_mean = statistics.mean(local_parallel)
    print(f"Workload: {' '.join(WORKLOAD)}; {args.probes} probes per row.\n")
    print("| backend | case | probes | mean s/probe | median | max | vs local |")
    print("|---|---|---|---|---|---|---|")
    print(row("local", "serial", local_serial, None))
    print(row("local", f"{args.parallel} at once", local_parallel, None))
    print(row("ray", "serial, same runtime_env", same_env, local_mean))
    print(row("ray", "serial, new env_vars each", new_env, local_mean))
    print(row("ray", f"{args.parallel} at once, new env_vars", parallel, local_par_mean))
    print()
    print(f"Ray start-up (once per session, until the Jobs API answers): {startup:.2f} s")
    print(f"Ray shutdown (jobs stopped, head and its processes killed): {shutdown:.2f} s")


if __name__ == "__main__":
    main()
