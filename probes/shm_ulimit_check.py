#!/usr/bin/env python3
"""Probe: is there enough shared memory, and are the resource limits high enough?

Data loader workers pass batches through /dev/shm, and NCCL keeps its buffers there;
the default container /dev/shm of 64 MiB makes them die with "bus error" or
"unable to write to file </torch_...>". Open-file and process limits break loaders
with many workers ("Too many open files", "can't start new thread"), and a small
locked-memory limit breaks RDMA.

Usage:
    python shm_ulimit_check.py [--min-shm-mb 1024] [--min-nofile 65536]
        [--min-nproc 4096] [--min-memlock-kb 0] [--min-stack-kb 0] [--shm-path /dev/shm]
        [--write-test-mb 0]

Each threshold is checked against the soft limit (``unlimited`` always passes); 0
disables a check. ``--write-test-mb N`` also writes and removes an N MiB file in the
shared-memory path, which catches a size limit that statvfs does not show.

Prints one JSON line: ``{"probe": "shm_ulimit_check", "verdict": "pass"|"fail",
"checks": [...]}``. Exit code: 0 on pass, 1 when a check fails, 2 on bad usage.
Standard library only (Unix).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Any

PROBE = "shm_ulimit_check"
MIB = 1024 * 1024


def emit(verdict: str, code: int, **fields: Any) -> int:
    """Print the one JSON verdict line and return the exit code."""
    print(json.dumps({"probe": PROBE, "verdict": verdict, **fields}, sort_keys=True), flush=True)
    return code


def limit_check(
    name: str, resource_id: int, minimum: int, unit: int, unit_name: str
) -> dict[str, Any]:
    """Compare the soft limit of ``resource_id`` (in ``unit`` bytes or counts) with ``minimum``."""
    import resource

    soft, hard = resource.getrlimit(resource_id)

    def show(value: int) -> int | str:
        return "unlimited" if value == resource.RLIM_INFINITY else value // unit

    ok = soft == resource.RLIM_INFINITY or soft // unit >= minimum
    return {
        "check": name,
        "ok": ok,
        "soft": show(soft),
        "hard": show(hard),
        "minimum": minimum,
        "unit": unit_name,
    }


def shm_check(path: str, min_mb: int, write_mb: int) -> dict[str, Any]:
    result: dict[str, Any] = {"check": "shm", "path": path, "minimum": min_mb, "unit": "MiB"}
    try:
        stats = os.statvfs(path)
    except OSError as err:
        return {**result, "ok": False, "error": f"{type(err).__name__}: {err}"}
    result["size"] = stats.f_frsize * stats.f_blocks // MIB
    result["free"] = stats.f_frsize * stats.f_bavail // MIB
    result["ok"] = result["size"] >= min_mb
    if write_mb > 0:
        result["write_test"] = write_test(path, write_mb)
        result["ok"] = result["ok"] and result["write_test"]["ok"]
    return result


def write_test(path: str, size_mb: int) -> dict[str, Any]:
    """Write ``size_mb`` MiB into ``path`` for real, then remove it."""
    chunk = b"\0" * MIB
    written = 0
    try:
        with tempfile.NamedTemporaryFile(dir=path, prefix="shm-probe-") as fh:
            for _ in range(size_mb):
                fh.write(chunk)
                written += 1
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as err:
        return {
            "ok": False,
            "mb": size_mb,
            "written_mb": written,
            "error": f"{type(err).__name__}: {err}",
        }
    return {"ok": True, "mb": size_mb}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check /dev/shm and ulimits; one JSON line.")
    parser.add_argument("--shm-path", default="/dev/shm")
    parser.add_argument("--min-shm-mb", type=int, default=1024)
    parser.add_argument("--write-test-mb", type=int, default=0)
    parser.add_argument("--min-nofile", type=int, default=65536)
    parser.add_argument("--min-nproc", type=int, default=4096)
    parser.add_argument("--min-memlock-kb", type=int, default=0)
    parser.add_argument("--min-stack-kb", type=int, default=0)
    args = parser.parse_args(argv)
    numbers = [args.min_shm_mb, args.write_test_mb, args.min_nofile, args.min_nproc]
    if min(numbers + [args.min_memlock_kb, args.min_stack_kb]) < 0:
        return emit("error", 2, error="thresholds must be >= 0")
    try:
        import resource
    except ImportError:
        return emit("error", 2, error="the resource module is not available (not a Unix system)")

    checks = []
    if args.min_shm_mb or args.write_test_mb:
        checks.append(shm_check(args.shm_path, args.min_shm_mb, args.write_test_mb))
    wanted = [
        ("nofile", "RLIMIT_NOFILE", args.min_nofile, 1, "files"),
        ("nproc", "RLIMIT_NPROC", args.min_nproc, 1, "processes"),
        ("memlock", "RLIMIT_MEMLOCK", args.min_memlock_kb, 1024, "KiB"),
        ("stack", "RLIMIT_STACK", args.min_stack_kb, 1024, "KiB"),
    ]
    for name, attr, minimum, unit, unit_name in wanted:
        if minimum and hasattr(resource, attr):
            checks.append(limit_check(name, getattr(resource, attr), minimum, unit, unit_name))
    failed = [c["check"] for c in checks if not c["ok"]]
    return emit("fail" if failed else "pass", 1 if failed else 0, checks=checks, failed=failed)


if __name__ == "__main__":
    sys.exit(main())
