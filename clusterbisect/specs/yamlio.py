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


_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_ScalarNode = yaml.ScalarNode
_MappingNode = yaml.MappingNode
# First characters that an implicit tag (bool, int, float, null, timestamp...) can have.
_RESOLVABLE_FIRST = frozenset(k for k in _Loader.yaml_implicit_resolvers if k)
# Alias expansion ("billion laughs") must not blow up memory: cap the nodes built.
MAX_NODES = 1_000_000
# Real specs nest about 20 levels; far deeper is an attack or a bug, refused early so
# that nothing later recurses that deep.
MAX_DEPTH = 100


class _FastLoader(_Loader):
    """The safe loader with a memo for plain-scalar tags (keys like ``name`` and
    ``value`` repeat thousands of times; resolving each costs a regex walk)."""

    _tags: dict[str, str] = {}

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if self.yaml_path_resolvers:  # pragma: no cover - the safe loader has none
            return super().resolve(kind, value, implicit)
        if kind is _ScalarNode:
            if not implicit[0]:
                return _STR_TAG  # quoted: always a string
            if value and value[0] not in _RESOLVABLE_FIRST:
                return _STR_TAG  # no implicit type starts with this character
            tag = self._tags.get(value)
            if tag is None:
                tag = super().resolve(kind, value, implicit)
                if len(self._tags) < 100_000:
                    self._tags[value] = tag
            return tag
        return _MAP_TAG if kind is _MappingNode else _SEQ_TAG


class _Builder:
    """Builds plain Python data from composed nodes, fast for the common tags.

    Unlike the standard constructor, an alias yields a fresh copy, never a shared
    object, so editing one place of a document cannot change another.
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.budget = MAX_NODES

    def build(self, node: Any, depth: int = 0) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise YAMLError(f"document too large (more than {MAX_NODES} nodes after aliases)")
        if depth > MAX_DEPTH:
            raise YAMLError(f"{_where(node)}nested more than {MAX_DEPTH} levels deep")
        cls = node.__class__
        if cls is yaml.ScalarNode:
            if node.tag == _STR_TAG:
                return node.value
            return self.loader.construct_object(node, deep=True)
        if cls is yaml.SequenceNode and node.tag == _SEQ_TAG:
            return [self.build(item, depth + 1) for item in node.value]
        if cls is yaml.MappingNode and node.tag == _MAP_TAG:
            if any(k.tag == _MERGE_TAG for k, _ in node.value):
                return self.loader.construct_object(node, deep=True)
            return self._mapping(node, depth)
        return self.loader.construct_object(node, deep=True)

    def _mapping(self, node: Any, depth: int) -> dict[Any, Any]:
        """A mapping; a key given twice is an error naming both lines (YAML 1.2 and
        kubectl refuse it, PyYAML would silently keep the last one)."""
        out: dict[Any, Any] = {}
        first: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self.build(key_node, depth + 1)
            if key in first:
                raise YAMLError(
                    f"{_where(key_node)}duplicate key {key!r} (first at line "
                    f"{first[key].start_mark.line + 1})"
                )
            first[key] = key_node
            out[key] = self.build(value_node, depth + 1)
        return out


def _where(node: Any) -> str:
    mark = getattr(node, "start_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""


def _one_line(err: yaml.YAMLError) -> str:
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"


def load_all_yaml(text: str) -> list[Any]:
    """All documents of ``text``; raises ``YAMLError`` with a one-line message."""
    loader = _FastLoader(text)
    try:
        builder = _Builder(loader)
        documents = []
        while loader.check_node():
            documents.append(builder.build(loader.get_node()))
        return documents
    except yaml.YAMLError as err:
        raise YAMLError(_one_line(err)) from None
    except (ValueError, TypeError, RecursionError) as err:  # e.g. unhashable keys
        raise YAMLError(str(err).splitlines()[0] if str(err) else type(err).__name__) from None
    finally:
        loader.dispose()


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
