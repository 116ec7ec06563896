"""How fast is `clusterbisect diff` on big specs, and what does start-up import?

Generates pairs of 10,000-setting specs (a Kubernetes Job with 10 containers of
1,000 env vars each, an env file, a pip freeze), runs ``clusterbisect diff --json``
on each as a fresh process (wall time, interpreter start included; target < 1 s) and
checks that ``clusterbisect --help`` and ``diff`` import neither ray nor kubernetes.

    .venv/bin/python benchmarks/bench_diff.py [--settings 10000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

TARGET_S = 1.0
HEAVY = ("ray", "kubernetes")


def job_pair(n: int, rng: random.Random) -> tuple[dict[str, Any], dict[str, Any]]:
    """Two Jobs with ~n settings each; ~5% modified, ~1% added, ~1% removed."""
    per = max(1, n // 10)
    containers = []
    for c in range(10):
        env = [{"name": f"VAR_{c}_{i}", "value": f"v{i}"} for i in range(per - 1)]
        containers.append({"name": f"c{c}", "image": f"img:{c}", "env": env})
    good = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "big", "uid": "u1", "resourceVersion": "1"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": containers}}},
    }
    bad = json.loads(json.dumps(good))
    bad["metadata"].update(name="big-2", uid="u2", resourceVersion="2")
    for container in bad["spec"]["template"]["spec"]["containers"]:
        env = container["env"]
        for entry in env:
            if rng.random() < 0.05:
                entry["value"] += "-changed"
        kept = [e for e in env if rng.random() >= 0.01]
        kept += [{"name": f"NEW_{container['name']}_{i}", "value": "x"} for i in range(per // 100)]
        container["env"] = kept
    return good, bad


def env_pair(n: int, rng: random.Random) -> tuple[str, str]:
    good = {f"VAR_{i}": f"value-{i}" for i in range(n)}
    bad = {k: (v + "-x" if rng.random() < 0.05 else v) for k, v in good.items()}
    return "".join(f"{k}={v}\n" for k, v in good.items()), "".join(
        f"{k}={v}\n" for k, v in bad.items()
    )


def pip_pair(n: int, rng: random.Random) -> tuple[str, str]:
    good = [f"package-{i}==1.{i % 10}.0" for i in range(n)]
    bad = [p.replace("==1.", "==2.") if rng.random() < 0.05 else p for p in good]
    return "\n".join(good) + "\n", "\n".join(bad) + "\n"


def cli_argv() -> list[str]:
    script = Path(sys.executable).parent / "clusterbisect"
    return [str(script)] if script.exists() else [sys.executable, "-m", "clusterbisect.cli"]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_diff(
    good: Path, bad: Path, repeat: int
) -> tuple[list[float], list[float], dict[str, Any]]:
    """Wall and CPU seconds of each run (CPU time shows less of the machine's load)."""
    times, cpu, doc = [], [], {}
    for _ in range(repeat):
        cpu_start = _children_cpu()
        start = time.perf_counter()
        proc = subprocess.run(
            [*cli_argv(), "diff", str(good), str(bad), "--json"],
            capture_output=True,
            text=True,
            check=False,
        )
        times.append(time.perf_counter() - start)
        cpu.append(_children_cpu() - cpu_start)
        if proc.returncode != 0:
            raise SystemExit(f"diff failed ({proc.returncode}): {proc.stderr.strip()}")
        doc = json.loads(proc.stdout)
    return times, cpu, doc


def settings_count(path: Path) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from clusterbisect.settings import flatten
    from clusterbisect.specs import load_spec

    return len(flatten(load_spec(str(path))))


# Runs the CLI in-process, then reports which heavy modules got imported.
_IMPORT_CHECK = """
import json, sys
from clusterbisect.cli import main
sys.argv = ["clusterbisect", *{args!r}]
try:
    main({args!r})
except SystemExit:
    pass
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
sys.__stderr__.write("HEAVY=" + json.dumps(heavy) + "\\n")
"""


def imported_heavy(args: list[str]) -> tuple[list[str], float]:
    code = _IMPORT_CHECK.format(args=args, heavy=HEAVY)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    line = next(ln for ln in proc.stderr.splitlines() if ln.startswith("HEAVY="))
    return json.loads(line[len("HEAVY=") :]), elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(7)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-diff-") as tmp:
        root = Path(tmp)
        good_job, bad_job = job_pair(args.settings, rng)
        cases = {
            "kubernetes Job (YAML)": (yaml.safe_dump(good_job), yaml.safe_dump(bad_job)),
            "env file": env_pair(args.settings, rng),
            "pip freeze": pip_pair(args.settings, rng),
        }
        for name, (good_text, bad_text) in cases.items():
            good, bad = root / f"{len(rows)}-good", root / f"{len(rows)}-bad"
            good.write_text(good_text)
            bad.write_text(bad_text)
            times, cpu, doc = time_diff(good, bad, args.repeat)
            rows.append((name, settings_count(good), doc["count"], times, cpu))
        help_heavy, _ = imported_heavy(["--help"])
        diff_heavy, _ = imported_heavy(["diff", str(root / "0-good"), str(root / "0-bad")])

    print(f"`clusterbisect diff --json`, a fresh process per run ({args.repeat} runs)\n")
    print(
        "| spec | settings | changes | wall min s | wall median s | wall max s "
        "| CPU median s | < 1 s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    failed = False
    for name, n, count, times, cpu in rows:
        ok = statistics.median(times) < TARGET_S
        failed |= not ok
        print(
            f"| {name} | {n} | {count} | {min(times):.3f} | {statistics.median(times):.3f} "
            f"| {max(times):.3f} | {statistics.median(cpu):.3f} | {'yes' if ok else 'NO'} |"
        )
    print(f"\n(load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)\n")
    print("| command | ray / kubernetes modules imported |")
    print("|---|---|")
    for label, heavy in (("clusterbisect --help", help_heavy), ("clusterbisect diff", diff_heavy)):
        print(f"| `{label}` | {', '.join(heavy) if heavy else 'none'} |")
        failed |= bool(heavy)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
