"""The tool definitions in the shapes the APIs expect: MCP, Anthropic, OpenAI, or all."""

from __future__ import annotations

from typing import Any

from clusterbisect.agent.tools import available
from clusterbisect.errors import InputError


def definitions(fmt: str = "mcp", read_only: bool = False) -> list[dict[str, Any]]:
    """The tool definitions in the shape an API expects.

    ``anthropic``: {name, description, input_schema}; ``openai``: Chat Completions
    function tools; ``mcp``: {name, title, description, inputSchema, annotations};
    ``json``: every field, including ``effect``.
    """
    tools = available(read_only)
    if fmt == "anthropic":
        return [
            {"name": t.name, "description": t.description, "input_schema": t.input_schema}
            for t in tools
        ]
    if fmt == "openai":
        return [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.input_schema,
                },
            }
            for t in tools
        ]
    if fmt == "mcp":
        return [t.mcp_definition() for t in tools]
    if fmt == "json":
        return [
            {
                "name": t.name,
                "title": t.title,
                "description": t.description,
                "input_schema": t.input_schema,
                "effect": t.effect,
                "launches_nothing": t.launches_nothing,
                "annotations": t.annotations(),
            }
            for t in tools
        ]
    raise InputError(f"unknown format {fmt!r}; expected anthropic, openai, mcp or json")
