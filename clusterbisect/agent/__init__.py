"""The agent interface: JSON-Schema tools, a JSON call dispatcher and an MCP server.

- :mod:`clusterbisect.agent.tools`: the tool definitions and what each one does;
- :mod:`clusterbisect.agent.formats`: those definitions in the shape an API expects;
- :mod:`clusterbisect.agent.dispatch`: validate a call, run it, bound the payload,
  turn errors into ``{"error": {"code", "message", "details"}}``;
- :mod:`clusterbisect.agent.mcp_server`: the same tools over MCP on stdio (needs the
  ``mcp`` extra, imported only there).
"""

from __future__ import annotations

from clusterbisect.agent.dispatch import call, error_document
from clusterbisect.agent.formats import definitions
from clusterbisect.agent.tools import TOOLS, get_tool

__all__ = ["TOOLS", "call", "definitions", "error_document", "get_tool"]
