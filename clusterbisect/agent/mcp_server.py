"""The tools over the Model Context Protocol, on stdio, with the official ``mcp`` SDK.

Built on the SDK 1.x low-level ``Server`` (``mcp.server.lowlevel``), which takes our
own JSON Schemas and annotations as they are. SDK 2.x renamed the high-level FastMCP
to MCPServer and rebuilt the low-level server (handlers passed to the constructor,
snake_case fields), so the ``mcp`` extra is pinned to ``>=1.10,<2`` (see
pyproject.toml). Imported only by ``clusterbisect mcp``.

stdout is the protocol channel: the server writes JSON-RPC to a private copy of the
descriptor and points descriptor 1 at stderr, so a stray print, a library banner or
a probe process inheriting stdout cannot corrupt the stream.
"""

from __future__ import annotations

import functools
import io
import json
import os
import sys
from typing import Any

from clusterbisect import __version__
from clusterbisect.agent import dispatch
from clusterbisect.agent.tools import available

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
    import mcp.types as types
    from mcp.server.lowlevel import Server
    from mcp.server.stdio import stdio_server

    server: Server[Any, Any] = Server(
        "clusterbisect", version=__version__, instructions=INSTRUCTIONS
    )
    tools = available(read_only)

    @server.list_tools()
    async def list_tools() -> list[types.Tool]:
        return [
            types.Tool(
                name=t.name,
                title=t.title,
                description=t.description,
                inputSchema=t.input_schema,
                annotations=types.ToolAnnotations(**t.annotations()),
            )
            for t in tools
        ]

    # Our dispatcher validates (the same way as `call`), so the SDK need not.
    @server.call_tool(validate_input=False)
    async def call_tool(name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        try:
            reply = await anyio.to_thread.run_sync(
                functools.partial(dispatch.call, name, arguments or {}, read_only=read_only)
            )
        except Exception as err:  # every error is a tool result the model can read
            document, _ = dispatch.error_document(err)
            return types.CallToolResult(
                content=[types.TextContent(type="text", text=json.dumps(document, indent=2))],
                structuredContent=document,
                isError=True,
            )
        return types.CallToolResult(
            content=[
                types.TextContent(
                    type="text", text=json.dumps(reply.document, indent=2, default=str)
                )
            ],
            structuredContent=json.loads(json.dumps(reply.document, default=str)),
            isError=False,
        )

    stdout = anyio.wrap_file(protocol_out)
    async with stdio_server(stdout=stdout) as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())
