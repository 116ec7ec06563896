"""YAML reading and writing with the fast C loader when available, one-line errors."""

from __future__ import annotations

import datetime
from typing import Any

import yaml

try:  # libyaml is ~10x faster; the pure-Python loader is the fallback.
    _Loader: Any = yaml.CSafeLoader
    _Dumper: Any = yaml.CSafeDumper
except AttributeError:  # pragma: no cover - depends on how PyYAML was built
    _Loader = yaml.SafeLoader
    _Dumper = yaml.SafeDumper


class YAMLError(ValueError):
    """A YAML document could not be parsed; ``str()`` is one line with the position."""


def _one_line(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"


def load_all_yaml(text: str) -> list[Any]:
    """All documents of ``text``; raises ``YAMLError`` with a one-line message."""
    try:
        return list(yaml.load_all(text, Loader=_Loader))
    except yaml.YAMLError as err:
        raise YAMLError(_one_line(err)) from None
    except (ValueError, TypeError, RecursionError) as err:  # e.g. unhashable keys
        raise YAMLError(str(err).splitlines()[0] if str(err) else type(err).__name__) from None


def load_yaml(text: str) -> Any:
    """One YAML document; raises ``YAMLError`` with a one-line message."""
    docs = load_all_yaml(text)
    if len(docs) > 1:
        raise YAMLError("expected one YAML document, found several")
    return docs[0] if docs else None


def dump_yaml(data: Any) -> str:
    """Block-style YAML keeping key order (used to re-serialise embedded YAML strings)."""
    text: str = yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
    return text


def plain(data: Any) -> Any:
    """A JSON-shaped copy of ``data``: no shared sub-objects (YAML anchors and aliases
    load as one shared object, which applying changes must not edit twice), tuples as
    lists, dates as ISO strings."""
    if isinstance(data, dict):
        return {k if isinstance(k, str | int) else str(k): plain(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [plain(v) for v in data]
    if isinstance(data, datetime.date | datetime.datetime):
        return data.isoformat()
    return data
