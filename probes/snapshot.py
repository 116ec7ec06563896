#!/usr/bin/env python3
"""Capture the environment a job runs in, as one JSON document (standard library only).

Run it inside a working and a failing pod (or Ray task), then compare the two:

    kubectl exec POD -- python3 snapshot.py > good.json
    clusterbisect diff good.json bad.json

It records environment variables, the Python version and implementation, installed
packages (importlib.metadata), OS, kernel, CPU count and architecture, GPUs and the
driver (``nvidia-smi``, when present), resource limits (ulimits) and the size of
``/dev/shm``. The snapshot is raw input: secret-looking values are redacted by
``clusterbisect diff`` when shown, not here, so compare snapshots, don't publish them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
from typing import Any

SCHEMA_VERSION = 1
NVIDIA_SMI_TIMEOUT_S = 10.0

# ulimits worth comparing, by resource module name.
ULIMITS = {
    "RLIMIT_NOFILE": "nofile",
    "RLIMIT_NPROC": "nproc",
    "RLIMIT_STACK": "stack",
    "RLIMIT_MEMLOCK": "memlock",
    "RLIMIT_AS": "as",
    "RLIMIT_DATA": "data",
    "RLIMIT_CORE": "core",
    "RLIMIT_FSIZE": "fsize",
    "RLIMIT_CPU": "cpu",
}


def python_info() -> dict[str, Any]:
    """Version and implementation of the running interpreter."""
    return {
        "version": platform.python_version(),
        "implementation": platform.python_implementation(),
        "executable": sys.executable,
    }


def packages() -> dict[str, str]:
    """Installed distributions as ``name -> version`` (first one found wins)."""
    from importlib import metadata

    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"] if dist.metadata else None
        if name and name not in found:
            found[name] = dist.version
    return dict(sorted(found.items(), key=lambda kv: kv[0].lower()))


def os_info() -> dict[str, Any]:
    """Operating system, kernel release and, on Linux, the distribution name."""
    info: dict[str, Any] = {
        "system": platform.system(),
        "release": platform.release(),
        "version": platform.version(),
    }
    try:
        release = platform.freedesktop_os_release()
        info["distribution"] = release.get("PRETTY_NAME") or release.get("NAME")
    except (OSError, AttributeError):
        pass
    return info


def cpu_info() -> dict[str, Any]:
    """Logical CPU count, CPUs this process may use, and the architecture."""
    info: dict[str, Any] = {"count": os.cpu_count(), "arch": platform.machine()}
    if hasattr(os, "sched_getaffinity"):
        info["usable"] = len(os.sched_getaffinity(0))
    return info


def gpu_info() -> dict[str, Any]:
    """GPUs and driver from ``nvidia-smi``; ``{"present": False}`` without one."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return {"present": False}
    query = "name,driver_version,memory.total,compute_cap"
    argv = [smi, f"--query-gpu={query}", "--format=csv,noheader,nounits"]
    try:
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return {"present": True, "error": type(err).__name__}
    if proc.returncode != 0:
        return {"present": True, "error": (proc.stderr or proc.stdout).strip()[:200]}
    devices = []
    drivers = set()
    for line in proc.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        parts += [""] * (4 - len(parts))
        drivers.add(parts[1])
        devices.append({"name": parts[0], "memory_mib": parts[2], "compute_capability": parts[3]})
    info: dict[str, Any] = {
        "present": True,
        "count": len(devices),
        "driver_version": next(iter(drivers)) if len(drivers) == 1 else sorted(drivers),
        "names": sorted({d["name"] for d in devices}),
        "devices": devices,
    }
    cuda = _cuda_version(smi)
    if cuda:
        info["cuda_version"] = cuda
    return info


def _cuda_version(smi: str) -> str | None:
    try:
        proc = subprocess.run(
            [smi], capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    for token_line in proc.stdout.splitlines():
        if "CUDA Version:" in token_line:
            return token_line.split("CUDA Version:")[1].split()[0].strip("| ")
    return None


def ulimits() -> dict[str, Any]:
    """Soft and hard limits as ``[soft, hard]``, ``"unlimited"`` for no limit."""
    try:
        import resource
    except ImportError:  # not on this platform
        return {}
    out: dict[str, Any] = {}
    for attr, name in ULIMITS.items():
        which = getattr(resource, attr, None)
        if which is None:
            continue
        try:
            soft, hard = resource.getrlimit(which)
        except (OSError, ValueError):
            continue
        out[name] = [_limit(soft, resource.RLIM_INFINITY), _limit(hard, resource.RLIM_INFINITY)]
    return out


def _limit(value: int, infinity: int) -> int | str:
    return "unlimited" if value == infinity else value


def shm_info(path: str = "/dev/shm") -> dict[str, Any]:
    """Size of the shared-memory filesystem (PyTorch data loaders need plenty)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return {"present": False}
    return {"present": True, "size_bytes": st.f_frsize * st.f_blocks}


def snapshot() -> dict[str, Any]:
    """The whole snapshot. ``captured_at`` and ``hostname`` are noise to ``diff``."""
    return {
        "clusterbisect_snapshot": SCHEMA_VERSION,
        "captured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "hostname": socket.gethostname(),
        "env": dict(sorted(os.environ.items())),
        "python": python_info(),
        "packages": packages(),
        "os": os_info(),
        "cpu": cpu_info(),
        "gpu": gpu_info(),
        "ulimits": ulimits(),
        "shm": shm_info(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", "-o", help="Write the snapshot to this file, not stdout.")
    args = parser.parse_args(argv)
    text = json.dumps(snapshot(), indent=2, sort_keys=False) + "\n"
    if args.output:
        tmp = f"{args.output}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, args.output)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
