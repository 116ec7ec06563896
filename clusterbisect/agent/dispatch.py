"""Calling a tool: validate the input against its schema, run it, bound the answer.

The same function serves ``clusterbisect call`` and the MCP server, so both give the
same documents and the same errors: ``{"error": {"code", "message", "details"}}``.
Replies and errors are read by a model: both are scrubbed of every secret this
process knows (``redact.scrub``).
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from clusterbisect.agent.tools import Reply, Tool, available, get_tool
from clusterbisect.errors import EXIT_BACKEND, ClusterBisectError, InputError
from clusterbisect.redact import scrub
from clusterbisect.specs.yamlio import MAX_DEPTH

# Payload bounds: an agent's context is precious. Anything cut says so and names the
# file holding everything.
MAX_STRING = 8_000  # characters per string (logs keep their tail: the error is at the end)
MAX_ITEMS = 200  # items per list, keys per mapping
TRUNCATED_MARKER = "[clusterbisect: truncated]"


class SchemaError(InputError):
    """The input does not match the tool's JSON Schema (exit 2)."""

    code = "invalid_input"


class UnknownTool(InputError):
    code = "unknown_tool"


def validate(tool: Tool, arguments: Any) -> dict[str, Any]:
    """The arguments if they match the tool's schema; else a SchemaError listing each
    problem with its JSON path."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(
        tool.input_schema, format_checker=Draft202012Validator.FORMAT_CHECKER
    )
    errors = sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
    if not errors:
        assert isinstance(arguments, dict)
        return arguments
    problems = [
        {
            "path": "/" + "/".join(str(p) for p in error.absolute_path),
            "message": error.message,
            "validator": str(error.validator),
        }
        for error in errors[:20]
    ]
    first = problems[0]
    raise SchemaError(
        f"input for tool {tool.name!r} does not match its schema: at {first['path']}: "
        f"{first['message']}",
        details={"tool": tool.name, "errors": problems, "see": "clusterbisect tools"},
    )


def find(name: str, read_only: bool = False) -> Tool:
    tool = get_tool(name)
    offered = [t.name for t in available(read_only)]
    if tool is None or tool.name not in offered:
        why = "launches jobs and is not offered read-only" if tool else "is not a tool"
        raise UnknownTool(
            f"{name!r} {why}; tools: {', '.join(offered)}", details={"tools": offered}
        )
    return tool


def parse_input(data: bytes, source: str) -> Any:
    """A tool's arguments from the bytes given: UTF-8 JSON, nothing else. Bad bytes,
    NaN or Infinity (not JSON numbers) and absurd nesting are bad input (exit 2)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(
            f"not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); "
            "the arguments must be a UTF-8 JSON document",
            source=source,
        ) from None
    try:
        return json.loads(text, parse_constant=_not_a_number)
    except RecursionError:
        raise InputError(f"nested more than {MAX_DEPTH} levels deep", source=source) from None
    except ValueError as err:
        raise InputError(f"invalid JSON: {err}", source=source) from None


def _not_a_number(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON number")


def check_arguments(arguments: Any) -> None:
    """Refuse what JSON Schema lets through: non-finite numbers (NaN passes every range
    check) and nesting deeper than ``MAX_DEPTH`` (the validator recurses)."""
    stack = [(arguments, 0, "")]
    while stack:
        value, depth, path = stack.pop()
        if depth > MAX_DEPTH:
            raise InputError(f"nested more than {MAX_DEPTH} levels deep", field=path or "/")
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"{value} is not a number this tool accepts", field=path or "/")
        if isinstance(value, dict):
            stack.extend((v, depth + 1, f"{path}/{k}") for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, depth + 1, f"{path}/{i}") for i, v in enumerate(value))


def call(name: str, arguments: Any, *, read_only: bool = False) -> Reply:
    """Validate and run tool ``name``; the reply's document is bounded in size.

    Raises ``ClusterBisectError`` (with its exit code) on any problem.
    """
    tool = find(name, read_only)
    check_arguments(arguments)
    reply = tool.handler(validate(tool, arguments))
    # Scrubbed before it is cut, so a cut never leaves half a secret behind.
    reply.document = bound(scrub(_jsonable(reply.document)), reply.full)
    return reply


def error_document(err: BaseException) -> tuple[dict[str, Any], int]:
    """The JSON error for ``err`` and the exit code that goes with it."""
    if isinstance(err, ClusterBisectError):
        return (
            {
                "error": {
                    "code": err.code,
                    "message": scrub(err.message),
                    "details": scrub(_jsonable(err.details)),
                }
            },
            err.exit_code,
        )
    if isinstance(err, KeyboardInterrupt):
        return {"error": {"code": "interrupted", "message": "interrupted", "details": {}}}, 130
    # A bug of ours: still one JSON document, never a traceback on stdout.
    return (
        {
            "error": {
                "code": "internal_error",
                "message": scrub(f"{type(err).__name__}: {err}"),
                "details": {},
            }
        },
        EXIT_BACKEND,
    )


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


# --- bounding payloads ------------------------------------------------------------------


def bound(document: dict[str, Any], full: str | None = None) -> dict[str, Any]:
    """Cut long strings (keeping their tail), long lists and big mappings.

    What was cut is listed under ``truncated`` with the path to the complete data.
    """
    cuts: list[dict[str, Any]] = []
    bounded = _bound(document, "", cuts)
    if cuts:
        bounded["truncated"] = {
            "marker": TRUNCATED_MARKER,
            "full": full,
            "fields": cuts[:50],
        }
    result: dict[str, Any] = bounded
    return result


def _bound(value: Any, path: str, cuts: list[dict[str, Any]]) -> Any:
    if isinstance(value, str):
        if len(value) <= MAX_STRING:
            return value
        cuts.append({"field": path or "/", "kept_chars": MAX_STRING, "total_chars": len(value)})
        return (
            f"{TRUNCATED_MARKER} ... {len(value) - MAX_STRING} characters cut ...\n"
            + value[-MAX_STRING:]
        )
    if isinstance(value, list):
        if len(value) > MAX_ITEMS:
            cuts.append({"field": path or "/", "kept_items": MAX_ITEMS, "total_items": len(value)})
        return [_bound(v, f"{path}/{i}", cuts) for i, v in enumerate(value[:MAX_ITEMS])]
    if isinstance(value, dict):
        items = list(value.items())
        if len(items) > MAX_ITEMS and path:  # the top level is ours and small
            cuts.append({"field": path, "kept_keys": MAX_ITEMS, "total_keys": len(items)})
            items = items[:MAX_ITEMS]
        return {k: _bound(v, f"{path}/{k}", cuts) for k, v in items}
    return value


# --- stdout belongs to the one JSON document ------------------------------------------------


@contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """While a tool runs, anything written to stdout (by us, a library or a child
    process inheriting the descriptor) goes to stderr instead."""
    real = sys.stdout
    try:
        fd = real.fileno()
    except (AttributeError, ValueError, io.UnsupportedOperation):
        fd = None
    if fd is None:  # not a real file (e.g. click's test runner)
        sys.stdout = sys.stderr
        try:
            yield
        finally:
            sys.stdout = real
        return
    real.flush()
    saved = os.dup(fd)
    try:
        os.dup2(sys.stderr.fileno(), fd)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, fd)
        os.close(saved)
