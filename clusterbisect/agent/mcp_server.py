"""The tools over the Model Context Protocol, on stdio, with the official ``mcp`` SDK.

Built on the SDK's low-level ``Server`` (``mcp.server.lowlevel``), which takes our
own JSON Schemas and annotations as they are. Both SDK lines work: 1.x registers
handlers with decorators, 2.x (which also renamed the high-level FastMCP to
MCPServer) takes them in the constructor; :func:`_serve` picks by the constructor's
signature. Imported only by ``clusterbisect mcp``.

stdout is the protocol channel: the server writes JSON-RPC to a private copy of the
descriptor and points descriptor 1 at stderr, so a stray print, a library banner or
a probe process inheriting stdout cannot corrupt the stream.
"""

from __future__ import annotations

import functools
import inspect
import io
import json
import os
import sys
from typing import Any

from clusterbisect import __version__
from clusterbisect.agent import dispatch
from clusterbisect.agent.tools import Tool, available

INSTRUCTIONS = (
    "clusterbisect finds the setting that makes a job fail. Call `diff` on a working and "
    "a failing job spec to see what changed. Then either call `run` to bisect on a "
    "backend in one go, or drive it yourself: `start`, then repeat `next` -> run the "
    "probe your own way -> `record`, until `next` reports done; `result` gives the "
    "culprit. Tools marked destructive launch jobs or delete them."
)


def serve(read_only: bool = False) -> None:
    """Serve the tools on stdin/stdout until the client disconnects."""
    import anyio

    protocol_out = _take_stdout()
    anyio.run(functools.partial(_serve, read_only, protocol_out))


def _take_stdout() -> io.TextIOWrapper:
    sys.stdout.flush()
    private = os.dup(1)
    os.dup2(2, 1)
    return io.TextIOWrapper(os.fdopen(private, "wb"), encoding="utf-8", line_buffering=True)


async def _serve(read_only: bool, protocol_out: io.TextIOWrapper) -> None:
    import anyio
    from mcp.server.lowlevel import Server
    from mcp.server.stdio import stdio_server

    tools = available(read_only)
    if "on_call_tool" in inspect.signature(Server.__init__).parameters:
        server = _server_v2(Server, tools, read_only)
    else:
        server = _server_v1(Server, tools, read_only)
    stdout = anyio.wrap_file(protocol_out)
    async with stdio_server(stdout=stdout) as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())


def _server_v1(server_class: Any, tools: list[Tool], read_only: bool) -> Any:
    """SDK 1.x: handlers are registered with decorators."""
    server = server_class("clusterbisect", version=__version__, instructions=INSTRUCTIONS)

    @server.list_tools()
    async def list_tools() -> list[Any]:
        return _tool_list(tools)

    # Our dispatcher validates (the same way as `call`), so the SDK need not.
    @server.call_tool(validate_input=False)
    async def call_tool(name: str, arguments: dict[str, Any]) -> Any:
        return await _call(name, arguments, read_only)

    return server


def _server_v2(server_class: Any, tools: list[Tool], read_only: bool) -> Any:
    """SDK 2.x: handlers are passed to the constructor; it validates nothing itself
    unless given the schemas, and our dispatcher validates as `call` does."""
    import mcp.types as types

    async def on_list_tools(_context: Any, _params: Any) -> Any:
        return types.ListToolsResult(tools=_tool_list(tools))

    async def on_call_tool(_context: Any, params: Any) -> Any:
        return await _call(params.name, params.arguments, read_only)

    return server_class(
        "clusterbisect",
        version=__version__,
        instructions=INSTRUCTIONS,
        on_list_tools=on_list_tools,
        on_call_tool=on_call_tool,
    )


# Types are validated from their protocol (camelCase) names, which both SDK lines
# accept: 1.x names its fields so, 2.x (snake_case fields) takes them as aliases.


def _tool_list(tools: list[Tool]) -> list[Any]:
    import mcp.types as types

    return [types.Tool.model_validate(t.mcp_definition()) for t in tools]


async def _call(name: str, arguments: dict[str, Any] | None, read_only: bool) -> Any:
    """Run one tool in a worker thread; every error is a result the model can read."""
    import anyio
    import mcp.types as types

    try:
        reply = await anyio.to_thread.run_sync(
            functools.partial(dispatch.call, name, arguments or {}, read_only=read_only)
        )
    except Exception as err:
        document, _ = dispatch.error_document(err)
        is_error = True
    else:
        document, is_error = json.loads(json.dumps(reply.document, default=str)), False
    return types.CallToolResult.model_validate(
        {
            "content": [{"type": "text", "text": json.dumps(document, indent=2)}],
            "structuredContent": document,
            "isError": is_error,
        }
    )
