"""Load job specs from files, recognising the format from the content (never the name).

Formats: Kubernetes objects (YAML or JSON, multi-document, ``kind: List``, raw
``kubectl get -o yaml`` output), a Ray job (``entrypoint`` + ``runtime_env``), an env
dump or ``.env`` file, a ``pip freeze`` / requirements file, and the JSON snapshot
written by ``probes/snapshot.py``. Every loader strips noise (see ``noise.py``).

A file holding several workload objects can be narrowed with ``FILE#NAME`` or
``FILE#Kind/NAME``.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

from clusterbisect.errors import InputError
from clusterbisect.specs import envfile, kubernetes, pip, ray, snapshot
from clusterbisect.specs.model import Spec
from clusterbisect.specs.yamlio import MAX_DEPTH, YAMLError, load_all_yaml

__all__ = ["Spec", "load_spec", "load_specs", "parse_spec"]

# Files larger than this are not job specs; refusing them keeps a typo'd path from
# making us read a multi-gigabyte file.
MAX_BYTES = 64 * 1024 * 1024


def load_spec(source: str) -> Spec:
    """Load the spec in file ``source`` (optionally ``FILE#NAME`` to pick one object).

    Raises ``InputError`` (naming the file and the problem) for a missing, empty,
    binary or unparsable file, an unknown kind or an object without a pod template.
    """
    path, selector = _split_selector(source)
    text = _read_text(path)
    return parse_spec(text, path, selector=selector)


def load_specs(sources: list[str]) -> list[Spec]:
    """Load several specs; big files are parsed side by side in forked processes.

    Parsing YAML is most of the time ``diff`` takes on big specs, and the two files
    are independent: with a second core free this halves the wait. Errors are the
    same ``InputError`` as ``load_spec`` gives, the first source's first.
    """
    sizes = [_size(s) for s in sources]
    if len(sources) < 2 or not hasattr(os, "fork") or sum(sizes) < PARALLEL_BYTES:
        return [load_spec(s) for s in sources]
    pending = [_fork_load(s) for s in sources[1:]]
    results: list[Spec | InputError] = []
    try:
        results.append(load_spec(sources[0]))
    except InputError as err:
        results.append(err)
    results.extend(_collect(pid, fd, source) for pid, fd, source in pending)
    for result in results:
        if isinstance(result, InputError):
            raise result
    return [r for r in results if isinstance(r, Spec)]


# Below this many bytes in total, forking costs more than it saves.
PARALLEL_BYTES = 256 * 1024


def _size(source: str) -> int:
    try:
        return os.stat(_split_selector(source)[0]).st_size
    except OSError:
        return 0


def _fork_load(source: str) -> tuple[int, int, str]:
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: load, send the result back, leave without cleanup handlers
        code = 0
        try:
            os.close(read_fd)
            try:
                payload: Any = ("ok", load_spec(source))
            except InputError as err:
                payload = ("error", err.message)
            with os.fdopen(write_fd, "wb") as out:
                pickle.dump(payload, out, protocol=pickle.HIGHEST_PROTOCOL)
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    return pid, read_fd, source


def _collect(pid: int, read_fd: int, source: str) -> Spec | InputError:
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    if not data:  # the child died: load here instead, for the real error
        try:
            return load_spec(source)
        except InputError as err:
            return err
    status, value = pickle.loads(data)
    if status == "ok":
        spec: Spec = value
        return spec
    return InputError(str(value))


def parse_spec(text: str, source: str, *, selector: str | None = None) -> Spec:
    """Parse ``text`` (the content of ``source``) into a spec."""
    if not text.strip():
        raise InputError("file is empty, expected a job spec", source=source)
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped[:1] in ("{", "["):
        documents = _parse_json_or_yaml(text, source)
        return _from_documents(documents, source, selector)
    line_format = _line_format(text)
    if line_format == "env":
        return envfile.parse(text, source)
    if line_format == "pip":
        return pip.parse(text, source)
    try:
        documents = load_all_yaml(text)
    except YAMLError as err:
        raise InputError(f"invalid YAML: {err}", source=source) from None
    return _from_documents(documents, source, selector)


def _split_selector(source: str) -> tuple[str, str | None]:
    if "#" in source and not Path(source).exists():
        path, _, selector = source.rpartition("#")
        if path and selector:
            return path, selector
    return source, None


def _read_text(path: str) -> str:
    p = Path(path)
    try:
        if p.is_dir():
            raise InputError("is a directory, expected a spec file", source=path)
        size = p.stat().st_size
        if size > MAX_BYTES:
            raise InputError(f"file is too large ({size} bytes) for a job spec", source=path)
        data = p.read_bytes()
    except FileNotFoundError:
        raise InputError("file not found", source=path) from None
    except PermissionError:
        raise InputError("permission denied", source=path) from None
    except OSError as err:
        raise InputError(f"cannot read file ({err.strerror or err})", source=path) from None
    if b"\x00" in data[:65536]:
        raise InputError(
            "binary content, expected a text job spec (YAML, JSON, env, pip freeze)",
            source=path,
        )
    try:
        return data.decode("utf-8-sig")  # a leading BOM is not content
    except UnicodeDecodeError:
        raise InputError(
            "binary or non-UTF-8 content, expected a text job spec (YAML, JSON, env, pip)",
            source=path,
        ) from None


def _parse_json_or_yaml(text: str, source: str) -> list[Any]:
    try:
        document = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_nan)
        _check_depth(document)
        return [document]
    except json.JSONDecodeError as err:
        json_error = f"invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}"
    except RecursionError:
        json_error = f"nested more than {MAX_DEPTH} levels deep"
    except _JSONProblem as problem:
        # Valid JSON that is not a spec. The YAML reader names the lines of a duplicate.
        try:
            load_all_yaml(text)
        except YAMLError as err:
            if "duplicate key" in str(err):
                raise InputError(str(err), source=source) from None
        raise InputError(str(problem), source=source) from None
    # JSON-looking YAML (a flow mapping) is still accepted.
    try:
        return load_all_yaml(text)
    except YAMLError as err:
        if "levels deep" in str(err):
            json_error = str(err)
        raise InputError(json_error, source=source) from None


class _JSONProblem(ValueError):
    """Valid JSON syntax that is not a spec: a duplicate key, NaN, too deep."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _JSONProblem(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_nan(constant: str) -> Any:
    raise _JSONProblem(f"{constant} is not a JSON number")


def _check_depth(document: Any) -> None:
    """Refuse a document nested deeper than ``MAX_DEPTH`` (without recursing)."""
    stack = [(document, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _JSONProblem(f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def _line_format(text: str) -> str | None:
    """``"env"`` or ``"pip"`` when every meaningful line looks like one, else None."""
    lines = [ln.strip() for ln in text.splitlines()]
    meaningful = [ln for ln in lines if ln and not ln.startswith("#")]
    if not meaningful:
        return None
    if envfile.looks_like_env(meaningful):
        return "env"
    if pip.looks_like_pip(meaningful):
        return "pip"
    return None


def _from_documents(documents: list[Any], source: str, selector: str | None) -> Spec:
    # The YAML builder and json.loads give fresh data, aliases unshared.
    documents = [d for d in documents if d is not None]
    if (
        len(documents) == 1
        and isinstance(documents[0], list)
        and documents[0]
        and all(isinstance(d, dict) and "kind" in d for d in documents[0])
    ):
        documents = documents[0]  # a JSON/YAML array of objects
    if not documents:
        raise InputError("no document found, expected a job spec", source=source)
    if len(documents) == 1 and isinstance(documents[0], dict):
        doc = documents[0]
        if snapshot.is_snapshot(doc):
            return snapshot.parse(doc, source)
        if ray.is_ray_job(doc):
            return ray.parse(doc, source)
    if all(isinstance(d, dict) for d in documents) and any(
        "kind" in d or "apiVersion" in d for d in documents
    ):
        return kubernetes.parse_documents(documents, source, selector=selector, fresh=True)
    if len(documents) == 1 and isinstance(documents[0], str | int | float | bool):
        raise InputError(
            "unrecognised content: expected a Kubernetes object, a Ray job "
            "(entrypoint/runtime_env), an env file, a pip freeze or a snapshot",
            source=source,
        )
    if len(documents) == 1 and isinstance(documents[0], dict):
        raise InputError(
            "unknown format: a mapping without 'kind' (Kubernetes), 'entrypoint'/"
            "'runtime_env' (Ray job) or a snapshot marker",
            source=source,
        )
    raise InputError(
        "unrecognised content: expected a Kubernetes object, a Ray job, an env file, "
        "a pip freeze or a snapshot",
        source=source,
    )
