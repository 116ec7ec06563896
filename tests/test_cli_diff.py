"""`clusterbisect diff` through the real entry point: output, JSON contract, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import CLI, EXAMPLES, FIXTURES

from clusterbisect.cli import main

JOB_V1 = str(FIXTURES / "job_v1.yaml")
JOB_V2 = str(FIXTURES / "job_v2.yaml")


def run_cli(
    args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """Run ``main`` in-process as the console script would (sys.argv included)."""
    monkeypatch.setattr(sys, "argv", ["clusterbisect", *args])
    code = 0
    try:
        main(args)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_diff_table(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["diff", JOB_V1, JOB_V2], monkeypatch, capsys)
    assert code == 0, err
    assert out.startswith(f"7 changes between {JOB_V1} and {JOB_V2} (Job)")
    assert "~ containers[trainer].image" in out
    assert "hf_newtokenvalue111" not in out and "<redacted>" in out


def test_diff_json_contract(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(["diff", JOB_V1, JOB_V2, "--json"], monkeypatch, capsys)
    assert code == 0
    doc = json.loads(out)
    assert doc["count"] == 7 and doc["kind"] == "Job"
    assert (doc["good"], doc["bad"]) == (JOB_V1, JOB_V2)
    for change in doc["changes"]:
        assert set(change) == {"key", "change", "good", "bad", "category"}
        assert change["change"] in ("modified", "added", "removed")
        if change["change"] == "added":
            assert change["good"] is None
        if change["change"] == "removed":
            assert change["bad"] is None
    assert "hf_oldtokenvalue000" not in out


def test_diff_options(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["diff", JOB_V1, JOB_V2, "--json", "--ignore", "*.env.*", "--ignore", "volumes*"]
    code, out, _ = run_cli(args, monkeypatch, capsys)
    assert code == 0
    assert [c["key"] for c in json.loads(out)["changes"]] == [
        "containers[trainer].image",
        "containers[trainer].resources.limits.memory",
    ]
    args = ["diff", JOB_V1, JOB_V2, "--json", "--container", "trainer"]
    code, out, _ = run_cli(args, monkeypatch, capsys)
    assert code == 0 and json.loads(out)["count"] == 7


def test_an_ignore_that_matches_nothing_warns(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["diff", JOB_V1, JOB_V2, "--json", "--ignore", "containers[trainr].*"]
    code, out, err = run_cli(args, monkeypatch, capsys)
    document = json.loads(out)
    assert code == 0 and document["count"] == 7
    assert len(document["warnings"]) == 1 and "containers[trainr].*" in document["warnings"][0]
    assert "warning: ignore pattern 'containers[trainr].*' matches no setting" in err
    args = ["diff", JOB_V1, JOB_V2, "--json", "--ignore", "containers[trainer].*"]
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert json.loads(out)["warnings"] == [] and "warning" not in err


def test_identical_specs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(["diff", JOB_V1, JOB_V1], monkeypatch, capsys)
    assert (code, out) == (0, f"no differences between {JOB_V1} and {JOB_V1}\n")
    code, out, _ = run_cli(["diff", JOB_V1, JOB_V1, "--json"], monkeypatch, capsys)
    assert code == 0 and json.loads(out)["changes"] == [] and json.loads(out)["count"] == 0


BAD_INPUTS = {
    "empty": b"",
    "binary": bytes(range(256)) * 4,
    "invalid-yaml": b"apiVersion: batch/v1\nkind: Job\nspec:\n  template: [oops\n",
    "invalid-json": b'{"apiVersion": "batch/v1", "kind": "Job",,}',
    "unknown-kind": b"apiVersion: example.com/v1\nkind: Gizmo\nmetadata: {name: g}\n",
    "no-template": b"apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec: {}\n",
    "service": b"apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: []}\n",
}


@pytest.mark.parametrize("case", [*BAD_INPUTS, "missing", "different-kinds", "directory"])
@pytest.mark.parametrize("as_json", [False, True])
def test_bad_input_exit_2_one_line(
    case: str,
    as_json: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = tmp_path / f"{case}.yaml"
    if case in BAD_INPUTS:
        bad.write_bytes(BAD_INPUTS[case])
    elif case == "different-kinds":
        bad.write_bytes((FIXTURES / "deployment.yaml").read_bytes())
    elif case == "directory":
        bad.mkdir()
    args = ["diff", JOB_V1, str(bad), *(["--json"] if as_json else [])]
    code, out, err = run_cli(args, monkeypatch, capsys)
    assert code == 2
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and str(bad) in lines[0]
    if as_json:
        error = json.loads(out)["error"]
        assert error["code"] == "bad_input" and str(bad) in error["message"]
    else:
        assert out == ""


def test_as_a_real_process(tmp_path: Path) -> None:
    """The console script, start to finish: exit codes and streams."""
    cmd = [*CLI, "diff"]
    ok = subprocess.run([*cmd, JOB_V1, JOB_V2, "--json"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["count"] == 7
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(200))
    bad = subprocess.run([*cmd, JOB_V1, str(garbage)], capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    assert str(garbage) in bad.stderr and "binary" in bad.stderr


# --- a missing optional extra -----------------------------------------------------------

HIDE = "import sys; sys.modules.update({m: None for m in sys.argv.pop(1).split(',')}); "
MAIN = "from clusterbisect.cli import main; sys.exit(main(sys.argv[1:]))"


@pytest.mark.parametrize(
    ("hidden", "args", "extra"),
    [
        ("ray", ["run", "good.env", "bad.env", "--backend", "ray", "--", "true"], "ray"),
        ("kubernetes", ["run", "good.yaml", "bad.yaml", "--backend", "kubernetes"], "kubernetes"),
        ("kubernetes", ["cleanup", "--session", "x"], "kubernetes"),
        ("mcp", ["mcp"], "mcp"),
    ],
)
def test_a_missing_extra_is_a_usage_error_that_says_what_to_install(
    tmp_path: Path, hidden: str, args: list[str], extra: str
) -> None:
    (tmp_path / "good.env").write_text("A=1\n")
    (tmp_path / "bad.env").write_text("A=2\n")
    job = EXAMPLES / "training-upgrade"
    for name in ("good.yaml", "bad.yaml"):
        (tmp_path / name).write_text((job / name).read_text())
    (tmp_path / "kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    proc = subprocess.run(
        [sys.executable, "-c", HIDE + MAIN, hidden, *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "KUBECONFIG": str(tmp_path / "kubeconfig")},
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"pip install 'clusterbisect[{extra}]'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.glob(".clusterbisect/*/session.json"))  # nothing left behind
