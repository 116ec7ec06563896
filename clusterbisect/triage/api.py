"""``triage(request)``: read the jobs, analyse them, write the pair (the edge).

The ``triage`` command, the ``triage`` agent tool and ``triage --bisect`` call this
with a :class:`TriageRequest`: the option groups of ``config.py`` (the same that give
the command's flags and the tool's schema) and where the jobs come from.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusterbisect.config import (
    KubeConnection,
    RayConnection,
    ScopeOptions,
    TriageOptions,
    TriageSourceOptions,
)
from clusterbisect.errors import InputError
from clusterbisect.specs.model import KUBERNETES, Spec
from clusterbisect.specs.yamlio import dump_yaml
from clusterbisect.triage.analysis import Analysis, analyse
from clusterbisect.triage.jobs import build_fleet
from clusterbisect.triage.model import Inventory
from clusterbisect.triage.result import TriageResult
from clusterbisect.triage.sources import read_sources

GOOD_FILE = "good.yaml"
BAD_FILE = "bad.yaml"
RESULT_FILE = "triage.json"


@dataclass
class TriageRequest:
    """What to triage and how.

    ``sources``: exported files and folders. ``cluster``: read this Kubernetes
    cluster's jobs (its namespace, or every one with ``select.all_namespaces``).
    ``ray_address``: read this Ray cluster's jobs. ``scope``: ``--ignore`` and
    ``--container``, as for ``diff`` and ``run``. ``now`` (seconds since the epoch)
    is what ``--since`` counts back from; the clock's time when None.
    """

    sources: Sequence[str] = ()
    options: TriageOptions = field(default_factory=TriageOptions)
    select: TriageSourceOptions = field(default_factory=TriageSourceOptions)
    scope: ScopeOptions = field(default_factory=ScopeOptions)
    cluster: KubeConnection | None = None
    ray_address: str | None = None
    now: float | None = None

    @classmethod
    def from_options(
        cls,
        sources: Sequence[str],
        read: Callable[[type[Any]], Any],
        kube_given: bool,
        ray_given: bool,
    ) -> TriageRequest:
        """The request of the ``triage`` command or tool: ``read(Group)`` gives each
        option group, typed (from click's parameters or the tool's arguments);
        ``kube_given``/``ray_given``: whether a Kubernetes connection option or a Ray
        address was given outright (see :func:`live_sources`)."""
        select: TriageSourceOptions = read(TriageSourceOptions)
        kube: KubeConnection = read(KubeConnection)
        ray: RayConnection = read(RayConnection)
        read_kube, ray_address = live_sources(
            sources, select, kube_given=kube_given, ray_address=ray.address, ray_given=ray_given
        )
        return cls(
            sources=list(sources),
            options=read(TriageOptions),
            select=select,
            scope=read(ScopeOptions),
            cluster=kube if read_kube else None,
            ray_address=ray_address,
        )

    def validate(self) -> None:
        """Bad input before anything is read (``InputError``)."""
        if not self.sources and self.cluster is None and not self.ray_address:
            raise InputError(
                "no jobs to triage: give exported files or folders, a cluster (-n NAMESPACE, "
                "-A) or a Ray cluster (--ray-address)"
            )
        self.options.validate()
        self.select.validate()

    def created_after(self) -> float | None:
        """The ``--since`` cutoff in seconds since the epoch (None: every job)."""
        since = self.select.since_seconds()
        if since is None:
            return None
        return (self.now if self.now is not None else time.time()) - since


def live_sources(
    sources: Sequence[str],
    select: TriageSourceOptions,
    *,
    kube_given: bool,
    ray_address: str | None,
    ray_given: bool,
) -> tuple[bool, str | None]:
    """Whether to read the Kubernetes cluster, and which Ray cluster to read (if any).

    With files and folders, a cluster is read only when asked for outright: the
    Kubernetes one with ``-A`` or ``-l``, a Ray one with ``--ray-address``. Without
    them, the Kubernetes cluster is read when any of its options is given
    (``kube_given``: ``-n``, ``--kubeconfig``, ``--context``) or when no Ray address is
    known; a Ray cluster when ``--ray-address`` is given (``ray_given``), or
    ``RAY_ADDRESS`` names one and no Kubernetes option is given. (``-n`` alone does not
    add the cluster to files: with ``--bisect`` it is where probes run.)
    """
    selected = select.all_namespaces or bool(select.selector)
    if sources:
        return selected, ray_address if ray_given else None
    ray = ray_address if ray_given or (ray_address and not (kube_given or selected)) else None
    kube = selected or kube_given or not ray
    return kube, ray


def triage(request: TriageRequest) -> TriageResult:
    """Triage the jobs ``request`` names. Raises ``InputError`` (exit 2) for bad input
    and ``BackendError`` (exit 3) when a cluster cannot be read."""
    return triage_analysis(request).result


def triage_analysis(request: TriageRequest) -> Analysis:
    """Like ``triage``, with the pair's specs and the priors (for ``--bisect``)."""
    request.validate()
    created_after = request.created_after()
    with _no_cycle_collection():
        return _triage(request, created_after)


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


def _triage(request: TriageRequest, created_after: float | None) -> Analysis:
    inventory = read_sources(request.sources) if request.sources else Inventory()
    if request.cluster is not None:
        from clusterbisect.triage.live import read_cluster

        inventory.extend(read_cluster(request.cluster, request.select, created_after=created_after))
    if request.ray_address:
        from clusterbisect.triage.ray_source import read_ray

        inventory.extend(read_ray(request.ray_address, logs=request.select.logs))
    analysis = analyse_inventory(inventory, request.options, request.scope, created_after)
    if request.options.out:
        analysis.result.files = write_outputs(analysis, Path(request.options.out))
    return analysis


def analyse_inventory(
    inventory: Inventory,
    options: TriageOptions,
    scope: ScopeOptions | None = None,
    created_after: float | None = None,
) -> Analysis:
    """Analyse objects already read: jobs, outcomes, signatures, suspects, the pair.

    No I/O. It consumes the inventory (emptied): the pods are dropped once their
    terminations are in the jobs, which halves the memory of a big fleet.
    """
    fleet = build_fleet(
        inventory, workload_label=options.workload_label, created_after=created_after
    )
    names = list(inventory.sources)
    unread = dict(inventory.unread)
    inventory.pods.clear()
    inventory.workloads.clear()
    inventory.ray_jobs.clear()
    analysis = analyse(fleet, options, scope or ScopeOptions(), names)
    analysis.result.unread = unread
    return analysis


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
