"""`clusterbisect mcp` as a real subprocess, driven by the SDK's own stdio client."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import CLI

mcp = pytest.importorskip("mcp")

from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402

WORKLOAD = r"""
import os, sys
print("this goes to the probe's log, never to the MCP channel")
if os.environ.get("LR_SCHEDULE") == "cosine-restarts":
    print("FloatingPointError: loss is nan"); sys.exit(1)
print("ok")
"""


def write_inputs(tmp_path: Path) -> None:
    (tmp_path / "good.env").write_text(
        "LR_SCHEDULE=cosine\nBATCH=32\nNCCL_DEBUG=WARN\nOMP_NUM_THREADS=4\nHF_TOKEN=hf_good\n"
    )
    (tmp_path / "bad.env").write_text(
        "LR_SCHEDULE=cosine-restarts\nBATCH=64\nNCCL_DEBUG=INFO\nOMP_NUM_THREADS=8\n"
        "HF_TOKEN=hf_secret_bad\n"
    )
    (tmp_path / "work.py").write_text(WORKLOAD)


def as_dict(model: Any) -> dict[str, Any]:
    """An SDK result as a dict with the protocol's camelCase names (SDK 1.x and 2.x)."""
    return model.model_dump(by_alias=True)


async def with_session(tmp_path: Path, args: list[str], body: Any) -> Any:
    params = StdioServerParameters(
        command=sys.executable,
        args=[*CLI[1:], "mcp", *args],
        env=dict(os.environ),
        cwd=str(tmp_path),
    )
    with open(tmp_path / "server.stderr", "w") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write):  # noqa: SIM117
            async with ClientSession(read, write) as session:
                await session.initialize()
                return await body(session)


def test_list_tools_call_diff_and_a_full_local_bisection(tmp_path):
    write_inputs(tmp_path)

    async def body(session: ClientSession) -> dict[str, Any]:
        listed = await session.list_tools()
        tools = {t.name: as_dict(t) for t in listed.tools}
        diff = as_dict(await session.call_tool("diff", {"good": "good.env", "bad": "bad.env"}))
        run = as_dict(
            await session.call_tool(
                "run",
                {
                    "good": "good.env",
                    "bad": "bad.env",
                    "command": [sys.executable, "work.py"],
                    "fail_on": "loss is nan",
                    "state_dir": "mcp-run",
                },
            )
        )
        bad = as_dict(await session.call_tool("diff", {"good": "good.env"}))
        missing = as_dict(await session.call_tool("status", {"state_dir": "nowhere"}))
        return {"tools": tools, "diff": diff, "run": run, "bad": bad, "missing": missing}

    out = anyio.run(with_session, tmp_path, [], body)
    tools = out["tools"]
    assert {"diff", "start", "next", "record", "status", "result", "run", "cleanup"} <= set(tools)
    assert tools["diff"]["annotations"]["readOnlyHint"] is True
    assert tools["run"]["annotations"]["destructiveHint"] is True
    assert tools["cleanup"]["annotations"]["destructiveHint"] is True
    assert tools["record"]["annotations"]["readOnlyHint"] is False
    assert tools["diff"]["inputSchema"]["required"] == ["good", "bad"]

    diff = out["diff"]
    assert diff["isError"] is False
    changes = {c["key"]: c for c in diff["structuredContent"]["changes"]}
    assert set(changes) == {
        "env.BATCH",
        "env.HF_TOKEN",
        "env.LR_SCHEDULE",
        "env.NCCL_DEBUG",
        "env.OMP_NUM_THREADS",
    }
    assert changes["env.HF_TOKEN"]["bad"] == "<redacted>"
    assert "hf_secret_bad" not in diff["content"][0]["text"]
    assert json.loads(diff["content"][0]["text"]) == diff["structuredContent"]

    run = out["run"]
    assert run["isError"] is False, run["content"][0]["text"]
    result = run["structuredContent"]
    assert result["status"] == "found"
    assert [[c["key"] for c in culprit["changes"]] for culprit in result["culprits"]] == [
        ["env.LR_SCHEDULE"]
    ]
    assert result["state_dir"] == str(tmp_path / "mcp-run")
    assert "hf_secret_bad" not in run["content"][0]["text"]

    # Errors come back as tool results marked as errors, with the JSON error inside.
    assert out["bad"]["isError"] is True
    assert out["bad"]["structuredContent"]["error"]["code"] == "invalid_input"
    assert out["missing"]["isError"] is True
    assert out["missing"]["structuredContent"]["error"]["code"] == "bad_input"
    # The probes' own prints went to their logs, not to the protocol stream.
    assert "Traceback" not in (tmp_path / "server.stderr").read_text()


def test_read_only_serves_only_tools_that_launch_nothing(tmp_path):
    write_inputs(tmp_path)

    async def body(session: ClientSession) -> dict[str, Any]:
        listed = await session.list_tools()
        refused = as_dict(
            await session.call_tool(
                "run", {"good": "good.env", "bad": "bad.env", "command": ["true"]}
            )
        )
        started = as_dict(await session.call_tool("start", {"good": "good.env", "bad": "bad.env"}))
        return {"names": {t.name for t in listed.tools}, "refused": refused, "started": started}

    out = anyio.run(with_session, tmp_path, ["--read-only"], body)
    assert {"run", "resume", "cleanup"}.isdisjoint(out["names"])
    assert {"diff", "start", "next", "record", "status", "result"} <= out["names"]
    assert out["refused"]["isError"] is True
    assert out["refused"]["structuredContent"]["error"]["code"] == "unknown_tool"
    assert not list(tmp_path.glob(".clusterbisect/2*/journal.jsonl"))  # nothing ran
    started = out["started"]["structuredContent"]
    assert out["started"]["isError"] is False
    # Without a workload the local probe still shows its environment to set.
    probe = started["next"]["probe"]
    assert probe["purpose"] == "baseline-good" and probe["rendered"]["argv"] is None
    assert probe["rendered"]["env"]["LR_SCHEDULE"] == "cosine"
    assert probe["redacted"] == ["HF_TOKEN"]
    assert "hf_good" not in out["started"]["content"][0]["text"]
