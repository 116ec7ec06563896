"""No secret is shown to people or models; every probe still gets the real value.

A canary in each place a secret hides (canary_helpers.py), and every command: ``diff``,
``run`` (local, a Kubernetes and a Ray dry run, Ray for real), ``report`` in every
format, step mode with ``exec`` and with the private env file, ``call`` and MCP, all
with ``--log-format json --log-level debug``. Nothing people or models read holds a
canary; in the state directory only the private 0600 files do. The workloads check by
hash that they got the real values: a culprit found is a delivery proven. The live
cluster's half is test_canary_live.py.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path
from typing import Any

import anyio
import kubernetes_validate
import pytest
import yaml
from canary_helpers import (
    AWS_KEY,
    INDEX_TOKEN,
    RAY_PIP_TOKEN,
    assert_no_canary,
    assert_state_dir,
    write_env_pair,
    write_k8s_pair,
    write_pip_pair,
    write_ray_pair,
)
from conftest import CLI, Cli, culprit_keys

from clusterbisect.redact import REDACTED

LOUD = ("--log-format", "json", "--log-level", "debug")
CULPRIT = [["env.HF_TOKEN"]]


def loud(
    cli: Cli, *args: str, expect: int | None = 0, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """The CLI with debug logs as JSON on stderr; stdout and stderr hold no canary."""
    proc = cli(*LOUD, *args, expect=expect, **kwargs)
    assert_no_canary(proc.stdout, proc.stderr)
    return proc


def loud_json(cli: Cli, *args: str, **kwargs: Any) -> Any:
    at = args.index("--") if "--" in args else len(args)
    return json.loads(loud(cli, *args[:at], "--json", *args[at:], **kwargs).stdout)


def secret_of(result: dict[str, Any]) -> dict[str, Any]:
    (change,) = result["culprits"][0]["changes"]
    assert change["good"] == change["bad"] == REDACTED
    return change["secret"]


def test_diff_hides_every_kind_of_secret(tmp_path: Path, cli: Cli) -> None:
    write_env_pair(tmp_path)
    pairs = [
        ("good.env", "bad.env"),
        write_k8s_pair(tmp_path),
        write_pip_pair(tmp_path),
        write_ray_pair(tmp_path),
    ]
    for good, bad in pairs:
        loud(cli, "diff", str(good), str(bad))
        shown = loud_json(cli, "diff", str(good), str(bad))
        assert shown["count"] > 0
        # The keys name what changed and never hold a secret (a pip index: by host).
        assert_no_canary(json.dumps([c["key"] for c in shown["changes"]]))
        code, reply = cli.call("diff", {"good": str(good), "bad": str(bad)})
        assert code == 0 and reply["count"] == shown["count"]
        assert_no_canary(json.dumps(reply))
    changes = {c["key"]: c for c in loud_json(cli, "diff", "good.env", "bad.env")["changes"]}
    assert changes["env.DATABASE_URL"]["bad"] == f"postgres://app:{REDACTED}@db2:5432/train"


def test_run_on_this_machine_and_every_report(tmp_path: Path, cli: Cli) -> None:
    command = write_env_pair(tmp_path)
    state = tmp_path / "state"
    run = loud(
        cli,
        "run",
        "good.env",
        "bad.env",
        "--fail-on",
        "401",
        "--state-dir",
        str(state),
        "--",
        *command,
    )
    assert "FOUND: env.HF_TOKEN" in run.stdout and "Secrets involved" in run.stdout
    assert "round 1:" in run.stderr and "matched: 401" in run.stderr  # progress, scrubbed
    result = json.loads(loud(cli, "report", str(state), "--format", "json").stdout)
    assert culprit_keys(result) == CULPRIT  # every probe got the real values (or: unresolved)
    secret = secret_of(result)
    assert secret["changed"] is True and secret["good"] != secret["bad"]
    loud(cli, "report", str(state), "--format", "markdown")
    loud(cli, "log", "--state-dir", str(state))
    loud(cli, "status", "--state-dir", str(state))
    private = assert_state_dir(state)
    assert "inputs/good.env" in private and "inputs/config.json" in private
    assert any(p.startswith("logs/") for p in private)
    # The raw logs hold what the workload printed, as it printed it (mode 0600).
    assert AWS_KEY in (state / "logs" / "p001.log").read_text()
    # Resumed, the session still runs its workload with the real argv (inputs/config.json).
    again = loud_json(cli, "resume", str(state))
    assert culprit_keys(again) == CULPRIT


def test_an_error_that_quotes_a_secret_is_scrubbed(tmp_path: Path, cli: Cli) -> None:
    write_env_pair(tmp_path)
    argv = ["--token=cnryErrorToken7Qz"]  # no such program: the error names it
    proc = loud(cli, "run", "good.env", "bad.env", "--state-dir", "s", "--", *argv, expect=3)
    assert "cannot start the probe workload" in proc.stderr
    code, reply = cli.call(
        "run", {"good": "good.env", "bad": "bad.env", "command": argv, "state_dir": "s2"}
    )
    assert code == 3 and "cannot start" in reply["error"]["message"]
    assert_no_canary(json.dumps(reply))


def runnable(paths: list[Path]) -> list[dict[str, Any]]:
    """The manifests meant to be applied: valid, and not one hidden value in them (but
    in the annotation that lists the applied changes for people, as `diff` shows them)."""
    docs = []
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            for item in doc.get("items", [doc]) if doc.get("kind") == "List" else [doc]:
                kubernetes_validate.validate(item, "1.33.0", strict=True)
                docs.append(item)
                shown = json.loads(json.dumps(item))
                shown["metadata"].get("annotations", {}).pop("clusterbisect.io/changes", None)
                assert REDACTED not in json.dumps(shown), f"{path} cannot be applied as written"
    return docs


def applied_files(use: str) -> list[Path]:
    return [Path(w) for w in shlex.split(use.replace("&&", " ")) if w.endswith(".yaml")]


@pytest.mark.parametrize("annotation", [False, True], ids=["secret-env-and-args", "annotation"])
def test_kubernetes_dry_run_and_step_mode_write_runnable_manifests(
    tmp_path: Path, cli: Cli, annotation: bool
) -> None:
    good, bad = write_k8s_pair(tmp_path, annotation=annotation)
    state = tmp_path / "dry"
    plan = loud_json(
        cli, "run", str(good), str(bad), "--backend", "kubernetes", "-n", "clusterbisect",
        "--dry-run", "--state-dir", str(state),
    )  # fmt: skip
    assert plan["status"] == "dry_run" and plan["plan"]
    for entry in plan["plan"]:
        assert "private_file" in entry and entry["private_file"].endswith(".secret.yaml")
        docs = runnable(applied_files(entry["use"]))
        assert [d["kind"] for d in docs][-1] == "Job" and "Secret" in {d["kind"] for d in docs}
        shown = Path(entry["manifest"]).read_text()
        assert_no_canary(shown)
        if not annotation:  # the shown Job itself is applied, next to its Secret
            assert entry["manifest"] in entry["use"]
    private = assert_state_dir(state)
    assert any(p.startswith("dry-run/") and p.endswith(".secret.yaml") for p in private)

    started = loud_json(
        cli, "start", str(good), str(bad), "--backend", "kubernetes", "-n", "clusterbisect",
        "--state-dir", str(tmp_path / "step"),
    )  # fmt: skip
    probe = started["next"]["probe"]
    runnable(applied_files(probe["use"]))
    assert Path(probe["private_file"]).stat().st_mode & 0o777 == 0o600
    assert_state_dir(tmp_path / "step")


def test_ray_dry_run_keeps_the_real_submission_private(tmp_path: Path, cli: Cli) -> None:
    good, bad = write_ray_pair(tmp_path, pip=True)
    state = tmp_path / "dry"
    plan = loud_json(
        cli, "run", str(good), str(bad), "--backend", "ray", "--dry-run", "--state-dir", str(state)
    )
    for entry in plan["plan"]:
        submission = json.loads(Path(entry["private_file"]).read_text())
        pip = submission["runtime_env"].get("pip")
        assert pip is None or RAY_PIP_TOKEN in pip[0]
        assert_no_canary(Path(entry["manifest"]).read_text())
    assert assert_state_dir(state)


def test_pip_index_credentials_never_reach_a_key_or_an_output(tmp_path: Path, cli: Cli) -> None:
    good, bad = write_pip_pair(tmp_path)
    shown = loud_json(cli, "diff", str(good), str(bad))
    changes = {c["key"]: c for c in shown["changes"]}
    assert sorted(changes) == ["pip.--index-url", "pip.numpy"]
    assert changes["pip.--index-url"]["bad"] == (
        f"--index-url https://ci-user:{REDACTED}@pypi-mirror.corp.example/simple"
    )
    assert INDEX_TOKEN in good.read_text()


def run_own_way(probe: dict[str, Any], command: list[str], log: Path) -> int:
    """What an agent does with the private env file: source it, run, never read it."""
    script = '. "$1" && shift && exec "$@"'
    with open(log, "wb") as out:
        return subprocess.call(
            ["sh", "-c", script, "sh", probe["private_file"], *command],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_step_mode_bisects_a_revoked_token_without_showing_it(tmp_path: Path, cli: Cli) -> None:
    command = write_env_pair(tmp_path)
    started = loud_json(cli, "start", "good.env", "bad.env", "--fail-on", "401", "--", *command)
    view = started["next"]
    # The baselines, run the agent's own way with the env file, recorded with their logs.
    for _ in range(2):
        probe = view["probe"]
        assert probe["redacted"] == [
            "AWS_SECRET_ACCESS_KEY",
            "DATABASE_URL",
            "HF_TOKEN",
            "HTTPS_PROXY",
        ]
        assert probe["exec"].startswith(f"clusterbisect exec {probe['id']} --state-dir ")
        log = tmp_path / f"{probe['id']}.out"
        code = run_own_way(probe, command, log)
        marked = loud_json(cli, "mark", "--exit-code", str(code), "--log", str(log))
        assert marked["recorded"]["outcome"] == (
            "pass" if probe["purpose"] == "baseline-good" else "fail"
        )
        view = marked["next"]
    # The rest with `exec`: the probe's real environment, its outcome recorded.
    while not view["done"]:
        ran = loud_json(cli, "exec", view["probe"]["id"])
        assert ran["recorded"]["outcome"] != "unresolved"  # the real values arrived
        view = ran["next"]
    assert culprit_keys(view["result"]) == CULPRIT and secret_of(view["result"])["changed"]
    state = Path(started["state_dir"])
    for fmt in ("text", "markdown", "json"):
        loud(cli, "report", str(state), "--format", fmt)
    loud(cli, "status")
    loud(cli, "log")
    private = assert_state_dir(state)
    assert any(p.startswith("probes/") and p.endswith(".env") for p in private)


def test_step_mode_over_call(tmp_path: Path, cli: Cli) -> None:
    command = write_env_pair(tmp_path)

    def call(tool: str, **arguments: Any) -> Any:
        proc = cli(*LOUD, "call", tool, "--input", "-", input=json.dumps(arguments), expect=None)
        assert_no_canary(proc.stdout, proc.stderr)
        return json.loads(proc.stdout)

    view = call("start", good="good.env", bad="bad.env", command=command, fail_on="401")["next"]
    while not view["done"]:
        view = call("exec", probe=view["probe"]["id"])["next"]
    assert culprit_keys(view["result"]) == CULPRIT
    for fmt in ("json", "markdown", "text"):
        call("result", format=fmt)
    call("log")
    call("status")
    assert_state_dir(Path(view["state_dir"]))


def test_step_mode_and_run_over_mcp(tmp_path: Path) -> None:
    mcp = pytest.importorskip("mcp")
    from mcp.client.stdio import stdio_client

    command = write_env_pair(tmp_path)
    replies: list[str] = []

    async def call(session: Any, tool: str, arguments: dict[str, Any]) -> Any:
        reply = (await session.call_tool(tool, arguments)).model_dump(by_alias=True)
        replies.append(json.dumps(reply))
        assert reply["isError"] is False, reply["content"][0]["text"]
        return reply["structuredContent"]

    async def body(session: Any) -> dict[str, Any]:
        await call(session, "diff", {"good": "good.env", "bad": "bad.env"})
        started = await call(
            session,
            "start",
            {"good": "good.env", "bad": "bad.env", "command": command, "fail_on": "401"},
        )
        view = started["next"]
        while not view["done"]:
            view = (await call(session, "exec", {"probe": view["probe"]["id"]}))["next"]
        await call(session, "result", {"format": "markdown"})
        await call(session, "log", {})
        run = await call(
            session,
            "run",
            {"good": "good.env", "bad": "bad.env", "command": command, "fail_on": "401",
             "state_dir": "mcp-run"},
        )  # fmt: skip
        return {"step": view["result"], "run": run, "state": started["state_dir"]}

    async def serve() -> dict[str, Any]:
        params = mcp.StdioServerParameters(
            command=CLI[0], args=[*CLI[1:], *LOUD, "mcp"], env=dict(os.environ), cwd=str(tmp_path)
        )
        with open(tmp_path / "server.stderr", "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write):  # noqa: SIM117
                async with mcp.ClientSession(read, write) as session:
                    await session.initialize()
                    return await body(session)

    out = anyio.run(serve)
    assert culprit_keys(out["step"]) == CULPRIT and culprit_keys(out["run"]) == CULPRIT
    assert_no_canary(*replies, (tmp_path / "server.stderr").read_text())
    assert_state_dir(Path(out["state"]))
    assert_state_dir(tmp_path / "mcp-run")


@pytest.mark.ray
def test_run_on_ray(tmp_path: Path, cli: Cli) -> None:
    good, bad = write_ray_pair(tmp_path, pip=False)
    command = write_env_pair(tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    state = tmp_path / "ray-state"
    result = loud_json(
        cli, "run", str(good), str(bad), "--backend", "ray", "--fail-on", "401",
        "--state-dir", str(state), "--", *command, env=env, timeout=900,
    )  # fmt: skip
    assert culprit_keys(result) == [["runtime_env.env_vars.HF_TOKEN"]]
    assert secret_of(result)["changed"] is True
    # Every probe that ran got the real values (one Ray could not take is unresolved).
    ran = [p for p in result["probes"] if p["outcome"] != "unresolved"]
    assert ran and all("received every real value" in (state / p["log"]).read_text() for p in ran)
    assert_state_dir(state)
