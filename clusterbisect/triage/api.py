"""``triage(sources, options)``: read the jobs, analyse them, write the pair (the edge).

This is the function the ``triage`` command, the ``triage`` agent tool and
``--bisect`` are meant to call (see docs/triage.md, "Not yet wired").
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from clusterbisect.errors import InputError
from clusterbisect.specs.model import KUBERNETES, Spec
from clusterbisect.specs.yamlio import dump_yaml
from clusterbisect.triage.analysis import Analysis, analyse
from clusterbisect.triage.jobs import build_fleet
from clusterbisect.triage.model import Inventory
from clusterbisect.triage.options import TriageOptions
from clusterbisect.triage.result import TriageResult
from clusterbisect.triage.sources import read_sources

GOOD_FILE = "good.yaml"
BAD_FILE = "bad.yaml"
RESULT_FILE = "triage.json"


def triage(sources: Sequence[str], options: TriageOptions | None = None) -> TriageResult:
    """Triage the jobs in ``sources`` (files and folders) and the cluster or Ray cluster
    that ``options`` names. Raises ``InputError`` (exit 2) for bad input and
    ``BackendError`` (exit 3) when a cluster cannot be read."""
    return triage_analysis(sources, options).result


def triage_analysis(sources: Sequence[str], options: TriageOptions | None = None) -> Analysis:
    """Like ``triage``, with the pair's specs and the priors (for ``--bisect``)."""
    options = options or TriageOptions()
    if not sources and options.cluster is None and not options.ray_address:
        raise InputError(
            "no jobs to triage: give exported files or folders, a cluster (-n NAMESPACE, "
            "-A) or a Ray cluster (--ray-address)"
        )
    now = options.now if options.now is not None else time.time()
    created_after = now - options.since_s if options.since_s else None
    with _no_cycle_collection():
        return _triage(sources, options, created_after)


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Pause the cyclic garbage collector while the fleet is read and analysed.

    Parsing an export allocates millions of objects, and each allocation burst makes
    the collector walk every object alive: 40% of the time on 10,000 Jobs. The data
    holds no reference cycles (plain JSON and dataclasses), so reference counting
    frees all of it; the collector is back on as before when triage returns.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _triage(
    sources: Sequence[str], options: TriageOptions, created_after: float | None
) -> Analysis:
    inventory = read_sources(sources) if sources else Inventory()
    if options.cluster is not None:
        from clusterbisect.triage.live import read_cluster

        inventory.extend(read_cluster(options.cluster, created_after=created_after))
    if options.ray_address:
        from clusterbisect.triage.ray_source import read_ray

        inventory.extend(read_ray(options.ray_address, logs=options.ray_logs))
    analysis = analyse_inventory(inventory, options, created_after)
    if options.out_dir is not None:
        analysis.result.files = write_outputs(analysis, options.out_dir)
    return analysis


def analyse_inventory(
    inventory: Inventory, options: TriageOptions, created_after: float | None = None
) -> Analysis:
    """Analyse objects already read: jobs, outcomes, signatures, suspects, the pair.

    No I/O. It consumes the inventory (emptied): the pods are dropped once their
    terminations are in the jobs, which halves the memory of a big fleet.
    """
    fleet = build_fleet(
        inventory, workload_label=options.workload_label, created_after=created_after
    )
    names = list(inventory.sources)
    inventory.pods.clear()
    inventory.workloads.clear()
    inventory.ray_jobs.clear()
    return analyse(fleet, options, names)


def write_outputs(analysis: Analysis, out_dir: Path) -> dict[str, str]:
    """Write the pair's specs and the result into ``out_dir``; their paths by name.

    The spec files hold the jobs' real values (a probe needs them), so they are
    readable by their owner only (0600), like a session's inputs. The result file is
    redacted: it is what ``run --priors`` reads and people may share.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    if analysis.good is not None and analysis.bad is not None:
        for name, spec in ((GOOD_FILE, analysis.good), (BAD_FILE, analysis.bad)):
            path = out_dir / name
            _write_private(path, dump_yaml(manifest(spec)))
            files[name.split(".")[0]] = str(path)
    result_path = out_dir / RESULT_FILE
    files["result"] = str(result_path)
    analysis.result.files = dict(files)
    result_path.write_text(json.dumps(analysis.result.to_dict(), indent=2) + "\n", "utf-8")
    return files


def manifest(spec: Spec) -> dict[str, Any]:
    """A spec as a file ``load_spec`` reads back to the same settings (name restored)."""
    if spec.format != KUBERNETES:
        return dict(spec.document)
    metadata = {k: spec.extra[k] for k in ("name", "namespace") if spec.extra.get(k)}
    metadata.update(spec.document.get("metadata") or {})
    out: dict[str, Any] = {"apiVersion": spec.api_version, "kind": spec.kind}
    out["metadata"] = metadata
    out.update({k: v for k, v in spec.document.items() if k not in out})
    return out


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT
