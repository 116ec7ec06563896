"""The virtual environments of pip freeze probes on the local backend: build time and
disk, with uv and with venv + pip, cold and from the cache.

    .venv/bin/python benchmarks/bench_venvs.py
    .venv/bin/python benchmarks/bench_venvs.py --repeat 3

A session's probes need one environment per pin set (``runners/venvs.py``). This
builds the pin sets of tests/wheels.py's incident from a local index of real wheels
(no network), as a session would:

- first pin set, cold: a new session with an empty uv cache (``UV_CACHE_DIR`` fresh);
- next pin sets, warm: other pin sets of the same session (uv links from its cache);
- again: a pin set the session already built (a retry, a second confirmation): the
  cache by pin set answers without building;

and reports the median seconds and the size of one environment on disk. The wheels
are tiny, so this is the environments' own overhead; real pins add their download
(once per wheel with uv's cache) and unpacking.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from wheels import build_index  # noqa: E402

from clusterbisect.runners.venvs import ProbeEnvironments, find_uv  # noqa: E402

PIN_SETS = [
    ["checkpoint-io==1.0", "tqdm-lite==1.0", "yaml-lite==3.0"],
    ["checkpoint-io==2.0", "tqdm-lite==1.1", "yaml-lite==3.1", "otel-lite==0.9"],
    ["checkpoint-io==2.0", "tqdm-lite==1.0", "yaml-lite==3.0"],
    ["checkpoint-io==1.0", "tqdm-lite==1.1", "yaml-lite==3.1", "otel-lite==0.9"],
]


def size_of(path: Path) -> int:
    """Bytes on disk (hard links to uv's cache counted once, as du does)."""
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0]) * 1024


def one_session(installer: str, index: Path, work: Path) -> dict[str, float]:
    """Build every pin set once, then one again; seconds per kind and the size."""
    os.environ["UV_CACHE_DIR"] = str(work / "uv-cache")  # cold for each session
    environments = ProbeEnvironments(work / "venvs", installer=installer)
    header = ["--no-index", f"--find-links {index}"]
    times = []
    for pins in PIN_SETS:
        started = time.monotonic()
        built = environments.ensure([*header, *pins])
        times.append(time.monotonic() - started)
        assert not built.cached
    started = time.monotonic()
    again = environments.ensure([*header, *PIN_SETS[0]])
    assert again.cached
    return {
        "cold": times[0],
        "warm": statistics.median(times[1:]),
        "again": time.monotonic() - started,
        "size": size_of(again.path),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="sessions per installer")
    args = parser.parse_args(argv)
    installers = ["uv", "pip"] if find_uv() else ["pip"]
    print("| installer | first pin set (cold) | next pin set (warm) | again (cached) | size |")
    print("|---|---|---|---|---|")
    for installer in installers:
        runs = []
        for _ in range(args.repeat):
            work = Path(tempfile.mkdtemp(prefix="cb-venvs-"))
            try:
                index = build_index(work / "wheels")
                runs.append(one_session(installer, index, work))
            finally:
                shutil.rmtree(work, ignore_errors=True)
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(
            f"| {installer} | {med['cold']:.2f} s | {med['warm']:.2f} s | "
            f"{med['again'] * 1000:.1f} ms | {med['size'] / 1024:.0f} KiB |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
