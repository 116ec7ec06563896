"""Reading exported objects from files and folders into an ``Inventory`` (the edge).

Accepted content, recognised from the content, never the file name:

- ``kubectl get jobs,pods -o json|yaml``: a ``List`` (or ``JobList``, ``PodList``...),
  or one object per YAML document, or a JSON array of objects;
- Job, Pod, the Kubeflow training jobs (PyTorchJob, TFJob, MPIJob, ...), RayJob,
  JobSet and TrainJob objects;
- Ray job listings: ``ray list jobs --detail --format json|yaml`` and what
  ``JobSubmissionClient.list_jobs()`` returns, dumped as a JSON array of mappings
  (``[job.dict() for job in client.list_jobs()]``) or one mapping per document.

Objects of other kinds are counted in ``Inventory.skipped``. A file given by name
that holds no job, pod or Ray job is bad input (``InputError`` naming it); inside a
folder such files are skipped, but a folder without any job is bad input too.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from clusterbisect.errors import InputError
from clusterbisect.specs.kubernetes import KUBEFLOW_KINDS
from clusterbisect.specs.yamlio import YAMLError, load_all_yaml
from clusterbisect.triage.model import Inventory

# Kinds that are one run of a workload (a pod's owner among them is its job).
JOB_KINDS = frozenset({"Job", "RayJob", "JobSet", "TrainJob"} | KUBEFLOW_KINDS)
POD = "Pod"
# Exports bigger than this are refused: read such fleets from the cluster (paginated).
MAX_BYTES = 1 << 30
SUFFIXES = (".json", ".yaml", ".yml")
# Fields a Ray job listing entry has (JobDetails), at least one id and these two.
_RAY_ID_FIELDS = ("submission_id", "job_id")
_RAY_REQUIRED = ("status", "entrypoint")
_EXPECTED = (
    "expected exported Jobs and Pods (kubectl get jobs,pods -o yaml|json), Kubeflow "
    "jobs, RayJobs or a Ray job listing (ray list jobs --detail --format json)"
)


def read_sources(paths: Iterable[str]) -> Inventory:
    """Read every file and folder of ``paths`` into one inventory."""
    inventory = Inventory()
    for path in paths:
        inventory.extend(read_path(path))
    return inventory


def read_path(path: str) -> Inventory:
    """One file, or every ``.json``/``.yaml``/``.yml`` file under a folder."""
    p = Path(path)
    if p.is_dir():
        return _read_folder(p)
    inventory = Inventory(sources=[path])
    classify(parse_documents(_read_bytes(p), path), path, inventory)
    if not len(inventory):
        raise InputError(
            f"no jobs found ({_describe_skipped(inventory.skipped)}); {_EXPECTED}", source=path
        )
    return inventory


def _read_folder(folder: Path) -> Inventory:
    inventory = Inventory(sources=[str(folder)])
    files = sorted(
        f
        for f in folder.rglob("*")
        if f.is_file()
        and f.suffix.lower() in SUFFIXES
        and not any(part.startswith(".") for part in f.relative_to(folder).parts)
    )
    for file in files:
        classify(parse_documents(_read_bytes(file), str(file)), str(file), inventory)
    if not len(inventory):
        found = (
            f"{len(files)} files with {_describe_skipped(inventory.skipped)}"
            if files
            else "no .json, .yaml or .yml files"
        )
        raise InputError(f"no jobs found in the folder ({found}); {_EXPECTED}", source=str(folder))
    return inventory


def _describe_skipped(skipped: Counter[str]) -> str:
    if not skipped:
        return "no objects"
    kinds = ", ".join(f"{n} {kind}" for kind, n in skipped.most_common(5))
    return f"only {kinds}"


def _read_bytes(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise InputError(
                f"file is too large ({size} bytes, at most {MAX_BYTES}); split the export "
                "or read the jobs from the cluster (paginated)",
                source=str(path),
            )
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError("file not found", source=str(path)) from None
    except PermissionError:
        raise InputError("permission denied", source=str(path)) from None
    except OSError as err:
        raise InputError(f"cannot read file ({err.strerror or err})", source=str(path)) from None
    if b"\x00" in data[:65536]:
        raise InputError(f"binary content; {_EXPECTED}", source=str(path))
    return data


def parse_documents(data: bytes, source: str) -> list[Any]:
    """The documents of a JSON or YAML export (JSON is parsed by the fast decoder)."""
    start = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    if not start:
        raise InputError(f"file is empty; {_EXPECTED}", source=source)
    if start in (b"{", b"["):
        try:
            return [json.loads(data)]
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            json_error = str(err)
    else:
        json_error = ""
    try:
        text = data.decode("utf-8-sig")
        return [d for d in load_all_yaml(text) if d is not None]
    except UnicodeDecodeError:
        raise InputError(f"not UTF-8 text; {_EXPECTED}", source=source) from None
    except YAMLError as err:
        problem = f"invalid JSON ({json_error})" if json_error else f"invalid YAML: {err}"
        raise InputError(problem, source=source) from None


def classify(documents: list[Any], source: str, inventory: Inventory) -> None:
    """Sort the objects of ``documents`` into ``inventory`` by what they are."""
    for obj in _objects(documents):
        kind = obj.get("kind")
        if kind in JOB_KINDS:
            inventory.workloads.append((source, obj))
        elif kind == POD:
            inventory.pods.append((source, obj))
        elif kind is None and is_ray_job_entry(obj):
            inventory.ray_jobs.append((source, obj))
        else:
            inventory.skipped[str(kind) if kind else "mapping without kind"] += 1


def is_ray_job_entry(obj: dict[str, Any]) -> bool:
    """An entry of a Ray job listing (``JobDetails`` as a mapping)."""
    return (
        "kind" not in obj
        and any(obj.get(f) for f in _RAY_ID_FIELDS)
        and all(f in obj for f in _RAY_REQUIRED)
    )


def _objects(documents: list[Any]) -> Iterator[dict[str, Any]]:
    for doc in documents:
        if isinstance(doc, list):
            yield from _objects(doc)
        elif isinstance(doc, dict):
            kind = doc.get("kind")
            items = doc.get("items")
            if isinstance(kind, str) and kind.endswith("List") and isinstance(items, list):
                # Items of a typed list from the API (JobList) carry no kind of their own.
                item_kind = kind[: -len("List")] if kind != "List" else None
                for item in items:
                    if isinstance(item, dict):
                        if item_kind and "kind" not in item:
                            item["kind"] = item_kind
                        yield item
            else:
                yield doc
