#!/usr/bin/env python3
"""Probe: do collective operations work (torch.distributed, world size 2 on localhost)?

Starts ``--world-size`` worker processes on this machine that form a process group
over TCP on 127.0.0.1 (gloo by default) and run an all_reduce, a broadcast and a
barrier, checking the results. This is what breaks first when a communication setting
or library is wrong (a bad NCCL_/GLOO_ interface name, a mismatched torch build, a
missing shared-memory mount), and it takes seconds instead of a training run.

When torch (or torch.distributed, or the chosen backend) is not importable, the probe
is skipped cleanly: verdict ``skipped``, exit code 0.

Usage:
    python collective_smoke.py [--world-size 2] [--backend gloo] [--timeout 60]

Prints one JSON line: ``{"probe": "collective_smoke", "verdict":
"pass"|"fail"|"skipped", ...}``. Exit code: 0 on pass or skip, 1 on failure, 2 on bad
usage. Standard library only (torch is used when present).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

PROBE = "collective_smoke"


def emit(verdict: str, code: int, **fields: Any) -> int:
    """Print the one JSON verdict line and return the exit code."""
    print(json.dumps({"probe": PROBE, "verdict": verdict, **fields}, sort_keys=True), flush=True)
    return code


def torch_status(backend: str) -> tuple[str | None, str | None]:
    """(torch version, reason to skip); the reason is None when the probe can run."""
    try:
        import torch
        import torch.distributed as dist
    except Exception as err:  # ImportError, or an OSError from a broken native library
        return None, f"torch is not importable: {type(err).__name__}: {err}"[:300]
    version = str(torch.__version__)
    if not dist.is_available():
        return version, "this torch build has no torch.distributed"
    available = {
        "gloo": dist.is_gloo_available(),
        "nccl": dist.is_nccl_available(),
        "mpi": dist.is_mpi_available(),
    }
    if not available.get(backend, False):
        return version, f"the {backend} backend is not available in this torch build"
    return version, None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker(rank: int, world_size: int, port: int, backend: str, timeout: float) -> int:
    """One rank: join the group, run the collectives, print one JSON result line."""
    import datetime

    import torch
    import torch.distributed as dist

    result: dict[str, Any] = {"rank": rank}
    started = time.perf_counter()
    try:
        dist.init_process_group(
            backend,
            init_method=f"tcp://127.0.0.1:{port}",
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout),
        )
        device = "cpu"
        if backend == "nccl":
            torch.cuda.set_device(rank % torch.cuda.device_count())
            device = "cuda"
        # all_reduce: every rank contributes rank + 1; the sum is n(n+1)/2.
        values = torch.full((1024,), float(rank + 1), device=device)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        expected = world_size * (world_size + 1) / 2
        result["all_reduce"] = bool(torch.all(values == expected).item())
        # broadcast: rank 0's tensor reaches everyone.
        token = torch.arange(16, dtype=torch.float32, device=device) * (1 if rank == 0 else 0)
        dist.broadcast(token, src=0)
        result["broadcast"] = bool(torch.equal(token.cpu(), torch.arange(16, dtype=torch.float32)))
        dist.barrier()
        result["barrier"] = True
        result["ok"] = result["all_reduce"] and result["broadcast"]
    except Exception as err:
        result["ok"] = False
        result["error"] = f"{type(err).__name__}: {err}"[:500]
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    result["seconds"] = round(time.perf_counter() - started, 3)
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


def run_group(world_size: int, backend: str, timeout: float) -> dict[str, Any]:
    """Start the ranks as child processes and collect their results."""
    port = free_port()
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    children = []
    for rank in range(world_size):
        argv = [
            sys.executable,
            os.path.abspath(__file__),
            "--worker",
            str(rank),
            "--world-size",
            str(world_size),
            "--port",
            str(port),
            "--backend",
            backend,
            "--timeout",
            str(timeout),
        ]
        children.append(
            subprocess.Popen(
                argv,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,  # its own process group, so a hang is killed whole
            )
        )
    deadline = time.monotonic() + timeout + 30.0  # room for torch's own import time
    ranks: list[dict[str, Any]] = []
    for rank, child in enumerate(children):
        try:
            out, err = child.communicate(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in children:
                if other.poll() is None:
                    os.killpg(other.pid, signal.SIGKILL)
            out, err = child.communicate()
            ranks.append({"rank": rank, "ok": False, "error": "timed out (killed)"})
            continue
        ranks.append(parse_rank(rank, child.returncode, out, err))
    return {"ranks": ranks, "port": port}


def parse_rank(rank: int, code: int, out: str, err: str) -> dict[str, Any]:
    for line in reversed(out.splitlines()):
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("rank") == rank:
            return data
    tail = err.strip().splitlines()[-1:] or [""]
    return {"rank": rank, "ok": False, "error": f"exited with code {code}: {tail[0]}"[:500]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="torch.distributed smoke test; one JSON line.")
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--backend", default="gloo", choices=["gloo", "nccl", "mpi"])
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for the collectives")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        return worker(args.worker, args.world_size, args.port, args.backend, args.timeout)
    if args.world_size < 2 or args.timeout <= 0:
        return emit("error", 2, error="--world-size must be >= 2 and --timeout > 0")

    version, skip = torch_status(args.backend)
    if skip:
        return emit("skipped", 0, reason=skip, torch=version)
    started = time.perf_counter()
    group = run_group(args.world_size, args.backend, args.timeout)
    failed = [r for r in group["ranks"] if not r.get("ok")]
    fields = {
        "torch": version,
        "backend": args.backend,
        "world_size": args.world_size,
        "ranks": group["ranks"],
        "seconds": round(time.perf_counter() - started, 3),
    }
    if failed:
        return emit("fail", 1, error=f"{len(failed)} of {args.world_size} ranks failed", **fields)
    return emit("pass", 0, **fields)


if __name__ == "__main__":
    sys.exit(main())
