"""``clusterbisect triage`` as people and agents run it: the command, its exit codes,
the ``triage`` tool, ``--bisect`` and ``run --priors`` (real processes, real journals).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import TRAINER, Cli, culprit_keys, secret_fleet

FLAG = TRAINER + "env.FLAG"
Rows = list[tuple[dict[str, str], str]]


def twenty() -> Rows:
    """FLAG=on: 9 of 10 failed; FLAG=off: 0 of 10. Each job has its own run id, seed
    and learning rate (as real runs do), so any two jobs differ in three settings or
    more, which sort before FLAG."""
    flags = ["on"] * 10 + ["off"] * 10
    outcomes = ["failed"] * 9 + ["succeeded"] * 11
    return [
        (
            {"A_RUN_ID": f"run-{i}", "B_SEED": str(1000 + i), "C_LR": f"{i}e-4", "FLAG": flag},
            outcome,
        )
        for i, (flag, outcome) in enumerate(zip(flags, outcomes, strict=True))
    ]


WORKLOAD = "import os, sys; sys.exit(1 if os.environ.get('FLAG') == 'on' else 0)"


def test_triage_prints_the_contract_document_and_exits_0(
    cli: Cli, fleet_file: Callable[..., str]
) -> None:
    path = fleet_file(twenty())
    result = cli.json("triage", path, expect=0)
    assert {"jobs", "failed", "succeeded", "signatures", "suspects", "pair", "files"} <= set(result)
    assert (result["jobs"], result["failed"], result["succeeded"]) == (20, 9, 11)
    top = result["suspects"][0]
    assert (top["key"], top["value"], top["failed"], top["total"]) == (FLAG, "on", 9, 10)
    assert {"failure_rate", "rate_without", "score", "bundle"} <= set(top)
    assert result["pair"]["changes"] >= 1 and result["files"] == {}
    text = cli("triage", path, expect=0).stdout
    assert "Suspects for the 9 failures" in text and FLAG in text


def test_exit_1_when_nothing_is_significant_or_nothing_failed(
    cli: Cli, fleet_file: Callable[..., str]
) -> None:
    eight = [({"FLAG": "on"}, "failed")] * 3 + [({"FLAG": "on"}, "succeeded")]
    eight += [({"FLAG": "off"}, "succeeded")] * 4
    assert cli.json("triage", fleet_file(eight), expect=1)["status"] == "no_significant_suspect"
    calm = fleet_file([({"FLAG": "on"}, "succeeded")] * 4, name="calm.json")
    assert cli.json("triage", calm, expect=1)["status"] == "nothing_to_explain"


def test_bad_input_is_one_line_and_exit_2(
    cli: Cli, fleet_file: Callable[..., str], tmp_path: Path
) -> None:
    path = fleet_file(twenty())

    def one_line(*args: str) -> str:
        """The error line of ``triage ARGS`` (exit 2, one line, no traceback)."""
        stderr = cli("triage", *args, expect=2).stderr
        assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
        return stderr

    assert "nope.json" in one_line(str(tmp_path / "nope.json"))
    assert cli.json("triage", str(tmp_path / "nope.json"), expect=2)["error"]["code"] == (
        "bad_input"
    )
    assert "--since: expected a duration" in one_line(path, "--since", "soon")
    assert "--signature: invalid regular expression" in one_line(path, "--signature", "(")
    # A number out of range is click's usage error (as for every command): exit 2.
    assert "--top" in cli("triage", path, "--top", "0", expect=2).stderr
    other = tmp_path / "cm.yaml"
    other.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n")
    assert "no jobs found (only 1 ConfigMap)" in one_line(str(other))
    (tmp_path / "empty").mkdir()
    assert "no jobs found in the folder" in one_line(str(tmp_path / "empty"))
    no_success = fleet_file([({"FLAG": "on"}, "failed")] * 3, name="all-failed.json")
    assert "no succeeded job to compare the failures with" in one_line(no_success)
    assert "no container named" not in cli("triage", path, "--container", "trainer").stderr
    assert "no job has a container named 'x'" in one_line(path, "--container", "x")


def test_secrets_never_reach_the_output(cli: Cli, tmp_path: Path) -> None:
    token = "hf_s3cr3tvalue42"
    path = secret_fleet(tmp_path / "f.json", token)
    for args in (("--json",), ()):
        proc = cli("triage", path, "--out", str(tmp_path / "out"), *args, expect=0)
        assert token not in proc.stdout + proc.stderr
    assert token not in (tmp_path / "out" / "triage.json").read_text()
    assert token in (tmp_path / "out" / "bad.yaml").read_text()  # a probe needs it


class Forbidden(BaseHTTPRequestHandler):
    """An API server that refuses everything (403), as an RBAC without rights does."""

    def do_GET(self) -> None:
        body = json.dumps(
            {
                "kind": "Status",
                "status": "Failure",
                "code": 403,
                "reason": "Forbidden",
                "message": f"jobs.batch is forbidden: cannot list {self.path}",
            }
        ).encode()
        self.send_response(403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def forbidding_cluster(tmp_path: Path) -> Iterator[Path]:
    """A kubeconfig for a local HTTP server that answers 403 to every request."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Forbidden)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    config = tmp_path / "kubeconfig"
    config.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "ml"}}
                ],
                "current-context": "x",
            }
        )
    )
    try:
        yield config
    finally:
        server.shutdown()
        thread.join()


def test_a_cluster_that_refuses_is_exit_3_naming_the_permission(
    cli: Cli, forbidding_cluster: Path
) -> None:
    proc = cli("triage", "--kubeconfig", str(forbidding_cluster), expect=3)
    assert "missing permission to list jobs.batch in namespace 'ml'" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_the_tool_gives_the_same_document_and_is_read_only(
    cli: Cli, fleet_file: Callable[..., str]
) -> None:
    path = fleet_file(twenty())
    code, document = cli.call("triage", {"sources": [path]})
    assert code == 0
    assert document == cli.json("triage", path)
    tools = {t["name"]: t for t in cli.json("tools", "--format", "json", "--read-only")}
    assert tools["triage"]["effect"] == "read_only"
    assert tools["triage"]["annotations"]["readOnlyHint"] is True
    code, error = cli.call("triage", {"sources": [path], "since": "soon"})
    assert code == 2 and error["error"]["code"] == "invalid_input"
    code, error = cli.call("triage", {"sources": [path], "bisect": True})
    assert code == 2  # the tool launches nothing: no --bisect


def test_bisect_hands_the_pair_to_run_with_the_ranking_as_priors(
    cli: Cli, fleet_file: Callable[..., str], tmp_path: Path
) -> None:
    path = fleet_file(twenty())
    done = cli.json(
        "triage",
        path,
        "--bisect",
        "--state-dir",
        "s",
        "--",
        sys.executable,
        "-c",
        WORKLOAD,
        expect=0,
    )
    bisection = done["bisection"]
    assert done["status"] == "suspects_found" and bisection["status"] == "found"
    assert culprit_keys(bisection) == [[FLAG]]
    # The pair differs in the run id, the seed, the rate and FLAG. Baselines, good +
    # FLAG (the top suspect, tried first), bad - FLAG; the default search runs good +
    # FLAG a second time before it reports it. (Without priors: 7, see the next test.)
    assert done["pair"]["changes"] == 4
    assert bisection["probe_count"] == 5
    assert bisection["probes"][2]["subset"] == [FLAG]
    assert bisection["priors"]["weights"][FLAG] == 1.0
    assert any("searched first: " + FLAG in n for n in bisection["notes"])
    assert (tmp_path / done["files"]["good"]).parent == tmp_path / "s" / "triage"
    # The text form: the triage table, then the bisection's report.
    text = cli(
        "triage", path, "--bisect", "--quiet", "--", sys.executable, "-c", WORKLOAD, expect=0
    ).stdout
    assert "Suspects for the 9 failures" in text and "culprit" in text.lower()


def test_run_priors_takes_a_triage_result_and_the_session_keeps_it(
    cli: Cli, fleet_file: Callable[..., str], tmp_path: Path
) -> None:
    path = fleet_file(twenty())
    cli("triage", path, "--out", "t", expect=0)
    files = tmp_path / "t"
    args = [str(files / "good.yaml"), str(files / "bad.yaml")]
    workload = ["--", sys.executable, "-c", WORKLOAD]
    plain = cli.json("run", *args, "--state-dir", "a", *workload, expect=0)
    primed = cli.json(
        "run",
        *args,
        "--priors",
        str(files / "triage.json"),
        "--state-dir",
        "b",
        *workload,
        expect=0,
    )
    assert culprit_keys(plain) == culprit_keys(primed) == [[FLAG]]
    assert plain["priors"] is None
    assert (plain["probe_count"], primed["probe_count"]) == (7, 5)
    stored = json.loads((tmp_path / "b" / "session.json").read_text())["config"]
    assert stored["prior_weights"][FLAG] == 1.0
    # Step mode takes them too: the first search probe is the top suspect alone.
    cli("start", *args, "--priors", str(files / "triage.json"), *workload, expect=0)
    cli("good", expect=0)
    cli("bad", expect=0)
    assert cli.json("next")["probe"]["changes"] == [FLAG]  # compact: the keys


def test_bad_priors_are_bad_input(cli: Cli, fleet_file: Callable[..., str], tmp_path: Path) -> None:
    cli("triage", fleet_file(twenty()), "--out", "t", expect=0)
    (tmp_path / "p.json").write_text('{"jobs": 3}')
    proc = cli("run", "t/good.yaml", "t/bad.yaml", "--priors", "p.json", "--", "true", expect=2)
    assert "p.json: suspects: expected a triage result" in proc.stderr
    assert not (tmp_path / ".clusterbisect").exists()  # no session was made


def test_bisect_stops_before_run_when_there_is_nothing_to_bisect(
    cli: Cli, fleet_file: Callable[..., str]
) -> None:
    calm = fleet_file([({"FLAG": "on"}, "succeeded")] * 4)
    proc = cli("triage", calm, "--bisect", "--", "true", expect=1)
    assert "error: nothing to bisect: none of the 4 jobs failed" in proc.stderr
    done = cli.json("triage", calm, "--bisect", "--", "true", expect=1)
    assert done["status"] == "nothing_to_explain" and done["bisection"] is None
    # The local backend needs the workload: a usage error before the fleet is read.
    assert "needs the probe workload" in cli("triage", calm, "--bisect", expect=2).stderr
