#!/usr/bin/env python3
"""Probe: can the job's modules be imported (and are they the expected versions)?

Usage:
    python import_check.py torch numpy==2.1.3 transformers
    PROBE_IMPORTS="torch,numpy" python import_check.py

Each module may carry ``==VERSION``; the version is read from the module's
``__version__`` or, failing that, from the installed distribution of the same name.
``--isolate`` imports each module in its own interpreter, so that a native extension
that crashes the process (a segfault, an abort) is reported for that module instead
of killing the probe.

Prints one JSON line: ``{"probe": "import_check", "verdict": "pass"|"fail"|"error",
"modules": {...}}``. Exit code: 0 when every module imports (at the expected version),
1 when one does not, 2 on bad usage. Standard library only.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import time
from typing import Any

PROBE = "import_check"
# One module spec: a dotted module name, optionally pinned with ==VERSION.
SPEC = re.compile(
    r"^(?P<module>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)(?:==(?P<version>\S+))?$"
)


def emit(verdict: str, code: int, **fields: Any) -> int:
    """Print the one JSON verdict line and return the exit code."""
    print(json.dumps({"probe": PROBE, "verdict": verdict, **fields}, sort_keys=True), flush=True)
    return code


def module_version(module: Any, name: str) -> str | None:
    version = getattr(module, "__version__", None)
    if isinstance(version, str):
        return version
    try:
        return importlib.metadata.version(name.split(".")[0])
    except importlib.metadata.PackageNotFoundError:
        return None


def check_in_process(name: str, expected: str | None) -> dict[str, Any]:
    """Import ``name`` here and describe the result."""
    started = time.perf_counter()
    try:
        module = importlib.import_module(name)
    except BaseException as err:  # an import can raise anything, even SystemExit
        return {
            "ok": False,
            "error": f"{type(err).__name__}: {err}"[:500],
            "seconds": round(time.perf_counter() - started, 4),
        }
    result: dict[str, Any] = {
        "ok": True,
        "version": module_version(module, name),
        "seconds": round(time.perf_counter() - started, 4),
    }
    if expected is not None and result["version"] != expected:
        result["ok"] = False
        result["error"] = f"expected version {expected}, found {result['version']}"
    return result


def check_isolated(name: str, expected: str | None, timeout: float) -> dict[str, Any]:
    """Import ``name`` in a child interpreter running this script on one module."""
    spec = name if expected is None else f"{name}=={expected}"
    argv = [sys.executable, os.path.abspath(__file__), spec]
    try:
        child = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"import did not finish within {timeout:g}s"}
    for line in reversed(child.stdout.splitlines()):
        try:
            verdict = json.loads(line)
        except ValueError:
            continue
        if isinstance(verdict, dict) and verdict.get("probe") == PROBE:
            return dict(verdict["modules"][name])
    # No verdict line: the interpreter died during the import.
    tail = child.stderr.strip().splitlines()[-1:] or [""]
    return {
        "ok": False,
        "error": f"interpreter exited with code {child.returncode}: {tail[0]}"[:500],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Import modules and report one JSON line.")
    parser.add_argument("modules", nargs="*", help="module names, optionally with ==VERSION")
    parser.add_argument(
        "--env",
        default="PROBE_IMPORTS",
        help="environment variable with more modules, comma or space separated "
        "(default: PROBE_IMPORTS)",
    )
    parser.add_argument("--isolate", action="store_true", help="import each in its own process")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="per-module limit with --isolate"
    )
    args = parser.parse_args(argv)

    specs = list(args.modules) + re.split(r"[\s,]+", os.environ.get(args.env, "").strip())
    specs = [s for s in specs if s]
    if not specs:
        return emit("error", 2, error=f"no modules given (arguments or ${args.env})")
    parsed: list[tuple[str, str | None]] = []
    for spec in specs:
        match = SPEC.match(spec)
        if not match:
            return emit("error", 2, error=f"not a module name or name==version: {spec!r}")
        parsed.append((match["module"], match["version"]))

    results: dict[str, Any] = {}
    for name, expected in parsed:
        if args.isolate:
            results[name] = check_isolated(name, expected, args.timeout)
        else:
            results[name] = check_in_process(name, expected)
    failed = sorted(name for name, r in results.items() if not r["ok"])
    return emit(
        "fail" if failed else "pass",
        1 if failed else 0,
        modules=results,
        failed=failed,
        python=sys.version.split()[0],
    )


if __name__ == "__main__":
    sys.exit(main())
