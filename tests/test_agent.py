"""The agent interface through `clusterbisect call` and `tools`: JSON in, JSON out.

The main test drives a whole bisection with `call` alone, running every probe itself
as a real subprocess with the environment `next` gives, and checks that it reaches
the culprit `clusterbisect run` finds on the same inputs.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import EnvPair, culprit_keys

from clusterbisect.agent import dispatch
from clusterbisect.agent.formats import definitions
from clusterbisect.agent.tools import TOOLS
from clusterbisect.cli import cli as cli_group

# Fails with a CUDA-like error when TRIGGER_A and TRIGGER_B are both "bad", crashes
# differently (exit 3, no signature) when ODD is set, passes otherwise.
WORKLOAD = r"""
import os, sys
if os.environ.get("ODD") == "bad":
    print("Segmentation fault somewhere else"); sys.exit(3)
if os.environ.get("TRIGGER") == "bad":
    print("noise line"); print("RuntimeError: CUDA error: illegal memory access"); sys.exit(1)
print("training finished")
"""


def write_inputs(
    env_pair: Callable[..., EnvPair], n: int = 12, trigger: int = 7
) -> tuple[str, str, list[str]]:
    good = [f"VAR_{i:02d}=good" for i in range(n)]
    bad = [f"VAR_{i:02d}=bad" for i in range(n)]
    bad[trigger] = "TRIGGER=bad"
    good[trigger] = "TRIGGER=good"
    pair = env_pair([*good, "REMOVED_LATER=1"], [*bad, "ADDED_LATER=1"], WORKLOAD)
    return pair.good, pair.bad, pair.command


def run_probe_myself(probe: dict[str, Any], tmp_path: Path) -> tuple[int, Path]:
    """What an agent does with `next`: run the argv with the env, unset what it says."""
    env = dict(os.environ)
    for name in probe["unset"]:
        env.pop(name, None)
    env.update(probe["rendered"]["env"])
    log = tmp_path / f"agent-{probe['id']}.log"
    with open(log, "wb") as out:
        proc = subprocess.run(
            probe["rendered"]["argv"], env=env, stdout=out, stderr=subprocess.STDOUT, check=False
        )
    return proc.returncode, log


def test_whole_bisection_through_call_matches_run(tmp_path, cli, env_pair):
    good, bad, command = write_inputs(env_pair)
    signature = {"fail_on": "CUDA error"}

    # The reference: one `run`.
    expected = cli.json(
        "run", good, bad, "--fail-on", "CUDA error", "--state-dir", str(tmp_path / "auto"),
        "--quiet", "--", *command,
    )  # fmt: skip
    assert culprit_keys(expected) == [["env.TRIGGER"]]

    # The same bisection, driven by hand through `call`.
    code, started = cli.call(
        "start",
        {"good": good, "bad": bad, "command": command, "state_dir": "by-hand", **signature},
    )
    assert code == 0, started
    assert started["changes_searched"] == expected["changes_searched"]
    assert (tmp_path / ".clusterbisect" / "CURRENT").read_text().strip() == str(
        tmp_path / "by-hand"
    )
    view = started["next"]
    seen = []
    while not view["done"]:
        probe = view["probe"]
        assert probe["changes_applied"] == len(probe["changes"])
        exit_code, log = run_probe_myself(probe, tmp_path)
        # Report what was observed; the session's signature (fail_on) decides.
        code, recorded = cli.call("record", {"exit_code": exit_code, "log_file": str(log)})
        assert code == 0, recorded
        assert recorded["recorded"]["probe"] == probe["id"]
        assert recorded["recorded"]["classified_by"] == "signature"
        seen.append((probe["purpose"], recorded["recorded"]["outcome"]))
        view = recorded["next"]
        assert len(seen) < 30, "the search does not converge"
    assert seen[0] == ("baseline-good", "pass")
    assert seen[1] == ("baseline-bad", "fail")

    code, result = cli.call("result", {})
    assert code == 0
    assert result["status"] == "found"
    assert culprit_keys(result) == culprit_keys(expected)
    assert result["probe_count"] == expected["probe_count"]
    assert [p["subset"] for p in result["probes"]] == [p["subset"] for p in expected["probes"]]
    assert all(p["source"] == "manual" for p in result["probes"])
    # The evidence: the failing probe's log was kept and excerpted.
    proof = result["culprits"][0]["proof"]
    assert "CUDA error" in proof["excerpt"]
    assert (tmp_path / "by-hand" / proof["log"]).is_file()
    assert json.loads((tmp_path / "by-hand" / "result.json").read_text())["status"] == "found"

    code, status = cli.call("status", {})
    assert status["done"] is True and status["manual_probes"] == result["probe_count"]
    code, ended = cli.call("reset", {})
    assert ended["was_current"] is True
    assert not (tmp_path / ".clusterbisect" / "CURRENT").exists()
    code, error = cli.call("status", {})
    assert code == 2 and error["error"]["code"] == "bad_input"


def test_a_different_failure_reported_by_exit_code_is_unresolved(tmp_path, cli, env_pair):
    good, bad, command = write_inputs(env_pair, n=4, trigger=1)
    code, started = cli.call(
        "start",
        {"good": good, "bad": bad, "command": command, "fail_on": "CUDA error"},
    )
    first = started["next"]["probe"]["id"]
    code, recorded = cli.call(
        "record", {"exit_code": 3, "log_text": "Segmentation fault somewhere else\n"}
    )
    assert code == 0
    entry = recorded["recorded"]
    assert entry["probe"] == first and entry["outcome"] == "unresolved"
    assert "exit code 3" in entry["observed"]
    assert Path(entry["log"]).read_text() == "Segmentation fault somewhere else\n"
    # An unresolved probe is retried once: the same probe is asked for again.
    assert recorded["next"]["probe"]["changes"] == started["next"]["probe"]["changes"]


def test_record_names_a_pending_probe_and_rejects_others(tmp_path, cli, env_pair):
    good, bad, command = write_inputs(env_pair, n=4, trigger=1)
    code, started = cli.call("start", {"good": good, "bad": bad, "command": command})
    pending = started["next"]["pending"]
    assert [p["purpose"] for p in pending] == ["baseline-good", "baseline-bad"]
    code, error = cli.call("record", {"probe": "p099", "outcome": "pass"})
    assert code == 2
    assert error["error"]["details"]["pending"] == ["p001", "p002"]
    code, shown = cli.call("next", {"probe": "p002"})
    assert shown["probe"]["purpose"] == "baseline-bad"
    code, recorded = cli.call("record", {"probe": "p001", "outcome": "good"})
    assert recorded["recorded"]["outcome"] == "pass"
    code, error = cli.call("record", {})
    assert code == 2 and "outcome" in error["error"]["message"]


def test_tools_formats(tmp_path, cli):
    for fmt, name_of in (
        ("anthropic", lambda t: t["name"]),
        ("openai", lambda t: t["function"]["name"]),
        ("mcp", lambda t: t["name"]),
    ):
        tools = cli.json("tools", "--format", fmt)
        names = [name_of(t) for t in tools]
        assert {"diff", "start", "next", "record", "status", "result", "run", "cleanup"} <= set(
            names
        )
    anthropic = definitions("anthropic")
    assert all(set(t) == {"name", "description", "input_schema"} for t in anthropic)
    assert all(t["input_schema"]["type"] == "object" for t in anthropic)
    mcp_tools = {t["name"]: t for t in definitions("mcp")}
    assert mcp_tools["diff"]["annotations"]["readOnlyHint"] is True
    assert mcp_tools["run"]["annotations"]["destructiveHint"] is True
    assert mcp_tools["cleanup"]["annotations"]["destructiveHint"] is True
    assert mcp_tools["record"]["annotations"]["readOnlyHint"] is False
    read_only = {t["name"] for t in definitions("mcp", read_only=True)}
    assert {"run", "resume", "cleanup"}.isdisjoint(read_only)
    assert {"diff", "start", "next", "record", "status", "result"} <= read_only


# Malformed inputs: not an object, an unknown property, and a wrong type for a property.
def _wrong_type(schema: dict[str, Any]) -> Any:
    kind = schema.get("type")
    if kind == "string" or "enum" in schema:
        return 12345
    if kind == "array":
        return "not-a-list"
    if kind == "object":
        return ["not", "an", "object"]
    return "not-a-number"


def malformed_inputs(tool) -> list[tuple[str, Any]]:
    props = tool.input_schema["properties"]
    name, schema = next(iter(props.items()))
    return [
        ("a list", []),
        ("a string", "diff good bad"),
        ("an unknown property", {"no_such_option": True}),
        (f"a wrong type for {name}", {name: _wrong_type(schema)}),
    ]


@pytest.mark.parametrize("tool", TOOLS, ids=[t.name for t in TOOLS])
def test_every_tool_rejects_malformed_input_with_exit_2(tool, cli):
    # Through a real process once per tool (stdout must hold exactly the JSON error) ...
    code, document = cli.call(tool.name, {"no_such_option": 1})
    assert code == 2
    assert document["error"]["code"] == "invalid_input"
    assert document["error"]["details"]["errors"][0]["path"] == "/"
    # ... and every kind of malformed input through the same command, in process.
    runner = CliRunner()
    for label, arguments in malformed_inputs(tool):
        result = runner.invoke(
            cli_group, ["call", tool.name, "--input", "-"], input=json.dumps(arguments)
        )
        assert result.exit_code == 2, (label, result.output)
        error = json.loads(result.stdout)["error"]
        assert error["code"] == "invalid_input", label
        assert set(error) == {"code", "message", "details"}


def test_bad_json_and_unknown_tools_are_json_errors(tmp_path, cli):
    code, document = cli.call("diff", None, raw="{not json")
    assert code == 2 and document["error"]["code"] == "bad_input"
    code, document = cli.call("frobnicate", {})
    assert code == 2 and document["error"]["code"] == "unknown_tool"
    assert "diff" in document["error"]["details"]["tools"]
    # Valid by the schema but wrong on disk: still a JSON error naming the file.
    code, document = cli.call("diff", {"good": "missing.env", "bad": "missing.env"})
    assert code == 2 and "missing.env" in document["error"]["message"]
    # A tool that launches jobs is refused read-only.
    proc = cli(
        "call", "run", "--read-only", "--input", "-", input=json.dumps({"good": "a", "bad": "b"}),
        expect=None,
    )  # fmt: skip
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["error"]["code"] == "unknown_tool"


def test_run_tool_gives_the_contract_and_exit_codes(tmp_path, cli, env_pair):
    good, bad, command = write_inputs(env_pair, n=6, trigger=4)
    code, result = cli.call(
        "run", {"good": good, "bad": bad, "command": command, "state_dir": "s1"}
    )
    assert code == 0
    assert result["status"] == "found"
    assert culprit_keys(result) == [["env.TRIGGER"]]
    assert {"probe_count", "rounds", "state_dir", "culprits"} <= set(result)
    # Nothing fails with an impossible signature: not reproducible, exit 1.
    code, result = cli.call(
        "run",
        {"good": good, "bad": bad, "command": command, "fail_on": "never printed"},
    )
    assert code == 1 and result["status"] == "not_reproducible"


def test_long_payloads_are_bounded_with_a_marker_and_the_full_path(tmp_path):
    document = {
        "log": "x" * 20_000 + "the error at the end",
        "items": list(range(1000)),
        "state_dir": str(tmp_path),
    }
    bounded = dispatch.bound(document, full=str(tmp_path / "result.json"))
    assert len(bounded["log"]) < 9_000
    assert bounded["log"].startswith(dispatch.TRUNCATED_MARKER)
    assert bounded["log"].endswith("the error at the end")
    assert len(bounded["items"]) == dispatch.MAX_ITEMS
    assert bounded["truncated"]["full"] == str(tmp_path / "result.json")
    fields = {f["field"] for f in bounded["truncated"]["fields"]}
    assert fields == {"/log", "/items"}
    assert dispatch.bound({"small": "ok"}) == {"small": "ok"}


def test_next_payload_is_bounded_for_many_changes(tmp_path, cli):
    n = 600
    (tmp_path / "good.env").write_text("".join(f"V{i}=good\n" for i in range(n)))
    (tmp_path / "bad.env").write_text("".join(f"V{i}=bad\n" for i in range(n)))
    code, _ = cli.call("start", {"good": "good.env", "bad": "bad.env", "command": ["true"]})
    assert code == 0
    code, view = cli.call("next", {"probe": "p002"})
    probe = view["probe"]
    assert probe["changes_applied"] == n
    assert len(probe["changes"]) == dispatch.MAX_ITEMS
    assert view["truncated"]["full"] == probe["rendered_file"]
    assert Path(probe["rendered_file"]).read_text().count("V599") >= 1


def test_cleanup_needs_a_session_or_all_and_reports_a_missing_cluster(tmp_path, cli):
    code, document = cli.call("cleanup", {})
    assert code == 2 and "all=true" in document["error"]["message"]
    env = {**os.environ, "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none")}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    proc = cli(
        "call", "cleanup", "--input", "-", env=env, expect=None,
        input=json.dumps({"session_id": "20261127-000000-abcdef"}),
    )  # fmt: skip
    assert proc.returncode == 3, proc.stderr
    assert json.loads(proc.stdout)["error"]["code"] == "backend_error"
