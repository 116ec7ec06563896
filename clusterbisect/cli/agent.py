"""For agents: ``tools`` (the definitions), ``call`` (one tool, JSON in and out), ``mcp``."""

from __future__ import annotations

import sys
from typing import Any

import click

from clusterbisect.cli.common import echo, emit_json


@click.command("tools")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mcp", "anthropic", "openai", "json"]),
    default="mcp",
    show_default=True,
    help="The shape: MCP tools, Anthropic or OpenAI tool definitions, or everything.",
)
@click.option("--read-only", is_flag=True, help="Only the tools that launch nothing.")
def tools_command(fmt: str, read_only: bool) -> None:
    """Print the tool definitions (JSON Schema inputs) for agents."""
    from clusterbisect.agent.formats import definitions

    emit_json(definitions(fmt, read_only))


@click.command("call")
@click.argument("tool")
@click.option("--input", "input_path", metavar="FILE|-", help="The JSON arguments (default: {}).")
@click.option("--read-only", is_flag=True, help="Refuse the tools that launch or delete jobs.")
def call_command(tool: str, input_path: str | None, read_only: bool) -> None:
    """Run one tool: JSON in, exactly one JSON document out.

    Errors are {"error": {"code", "message", "details"}} with the usual exit codes
    (2 for input that does not match the tool's schema). Logs go to stderr.
    """
    from clusterbisect.agent import dispatch

    try:
        arguments = _call_input(input_path)
        with dispatch.stdout_to_stderr():
            reply = dispatch.call(tool, arguments, read_only=read_only)
    except (Exception, KeyboardInterrupt) as err:
        document, code = dispatch.error_document(err)
        emit_json(document)
        echo(f"error: {document['error']['message']}", err=True)
        sys.exit(code)
    emit_json(reply.document)
    if reply.exit_code:
        sys.exit(reply.exit_code)


def _call_input(input_path: str | None) -> Any:
    from clusterbisect.agent.dispatch import parse_input
    from clusterbisect.errors import InputError

    if input_path is None:
        return {}
    source = "stdin" if input_path == "-" else input_path
    try:
        if input_path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(input_path, "rb") as handle:
                data = handle.read()
    except OSError as err:
        raise InputError(f"cannot read ({err.strerror or err})", source=source) from None
    return parse_input(data, source)


@click.command("mcp")
@click.option("--read-only", is_flag=True, help="Serve only the tools that launch nothing.")
def mcp_command(read_only: bool) -> None:
    """Serve the tools over the Model Context Protocol on stdio."""
    from clusterbisect.extras import require

    require("mcp", "the MCP server")
    from clusterbisect.agent.mcp_server import serve

    serve(read_only)
