"""No traceback, ever: one line and exit 2 (bad input) or 3 (this machine).

The cases of issue 15 end to end through the real CLI, then a property test: random
command lines over nasty files, and random arguments to the tools, in process; every
outcome is a result or one of our errors, never an exception of Python's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterbisect import stepmode
from clusterbisect.agent import dispatch
from clusterbisect.agent.tools import available
from clusterbisect.cli import main
from clusterbisect.config import LocalOptions, SessionConfig
from clusterbisect.errors import ClusterBisectError
from clusterbisect.options import fields_of


def fuzz(examples: int) -> Any:
    """Hypothesis settings for a property test over real files (no deadline: the
    machine is shared)."""
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def one_line(proc: subprocess.CompletedProcess[str], code: int) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    (tmp_path / "good.env").write_text("A=1\n")
    (tmp_path / "bad.env").write_text("A=2\n")
    return tmp_path


# --- the state directory ------------------------------------------------------------------


def read_only_dir(path: Path) -> bool:
    """Make ``path`` unwritable for us: chmod, or (as root, whom modes do not stop) the
    immutable attribute. False if neither works here."""
    path.mkdir(exist_ok=True)
    path.chmod(0o555)
    if not os.access(path, os.W_OK):
        return True
    if shutil.which("chattr"):
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
        if done.returncode == 0:
            return True
    path.chmod(0o755)
    return False


def writable_again(path: Path) -> None:
    if shutil.which("chattr"):
        subprocess.run(["chattr", "-i", str(path)], capture_output=True, check=False)
    path.chmod(0o755)


def test_an_unwritable_state_dir_is_one_line_and_exit_3(inputs: Path, cli: Cli) -> None:
    locked = inputs / "locked"
    if not read_only_dir(locked):
        pytest.skip("cannot make a directory unwritable here")
    try:
        for state in (locked, locked / "inner"):
            proc = cli("run", "good.env", "bad.env", "--state-dir", str(state), "--", "true")
            assert "cannot be written" in one_line(proc, 3)
    finally:
        writable_again(locked)


def test_a_state_dir_that_cannot_exist_is_one_line(inputs: Path, cli: Cli) -> None:
    (inputs / "a-file").write_text("")
    for state in ("a-file/x", "/proc/no-such-dir"):
        proc = cli("run", "good.env", "bad.env", "--state-dir", state, "--", "true")
        assert "cannot be written" in one_line(proc, 3)


def test_a_journal_that_became_immutable_is_one_line(inputs: Path, cli: Cli) -> None:
    state = inputs / "s"
    cli("start", "good.env", "bad.env", "--state-dir", str(state), "--", "true", expect=0)
    if not read_only_dir(state):
        pytest.skip("cannot make a directory unwritable here")
    try:
        proc = cli("resume", str(state), "--quiet")
        assert "cannot be written" in one_line(proc, 3)
    finally:
        writable_again(state)


def test_a_truncated_result_is_one_line_and_exit_2(inputs: Path, cli: Cli) -> None:
    state = inputs / "s"
    cli("run", "good.env", "bad.env", "--quiet", "--state-dir", str(state), "--", "true")
    (state / "result.json").write_text('{"status": "fo')
    line = one_line(cli("report", str(state)), 2)
    assert "result.json: is not a whole result" in line and "resume" in line


# --- input ------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_a_spec_nested_deep_is_one_line_and_exit_2(inputs: Path, cli: Cli, depth: int) -> None:
    (inputs / "deep.yaml").write_text("a: " + "[" * depth + "]" * depth + "\n")
    (inputs / "deep.json").write_text('{"a": ' + "[" * depth + "]" * depth + "}")
    for spec in ("deep.yaml", "deep.json"):
        assert "deep" in one_line(cli("diff", "good.env", spec), 2)
        assert "deep" in one_line(cli("run", spec, "bad.env", "--", "true"), 2)
        code, document = cli.call("diff", {"good": spec, "bad": "bad.env"})
        assert code == 2 and "deep" in document["error"]["message"]
    raw = '{"good": "good.env", "bad": "bad.env", "x": ' + "[" * depth + "]" * depth + "}"
    code, document = cli.call("diff", None, raw=raw)
    assert code == 2 and "levels deep" in document["error"]["message"]


def test_a_binary_file_given_to_replay_is_one_line_and_exit_2(inputs: Path, cli: Cli) -> None:
    (inputs / "binary.log").write_bytes(bytes(range(256)) * 8)
    assert "binary content" in one_line(cli("replay", "binary.log"), 2)


def test_non_utf8_input_to_call_is_one_line_and_exit_2(inputs: Path, cli: Cli) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "clusterbisect.cli", "call", "diff", "--input", "-"],
        input=b'\xff\xfe{"good": "good.env"}',
        cwd=inputs,
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 2 and b"Traceback" not in proc.stderr
    assert b"not UTF-8" in proc.stderr and json.loads(proc.stdout)["error"]["code"] == "bad_input"


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_nan_in_a_json_number_is_one_line_and_exit_2(inputs: Path, cli: Cli, number: str) -> None:
    raw = f'{{"good": "good.env", "bad": "bad.env", "timeout": {number}, "command": ["true"]}}'
    code, document = cli.call("run", None, raw=raw)
    assert code == 2 and document["error"]["code"] == "bad_input", document
    assert not (inputs / ".clusterbisect").exists()  # refused before anything ran


# --- a property test over the command line and the tools -----------------------------------


def nasty_files(root: Path) -> dict[str, str]:
    """Files and folders that have broken tools before, by name."""
    root.mkdir(exist_ok=True)
    files = {
        "good.env": b"A=1\nB=1\n",
        "bad.env": b"A=2\nB=1\n",
        "binary": bytes(range(256)) * 4,
        "latin1.env": "A=caf\xe9\n".encode("latin-1"),
        "truncated.json": b'{"status": "fo',
        "nan.json": b'{"a": NaN}',
        "deep.yaml": b"a: " + b"[" * 5000 + b"]" * 5000,
        "empty": b"",
        "dupes.yaml": b"a: 1\na: 2\n",
        "log-like": b'start {"good_source": 1}\nmark {"subset": [[1]], "outcome": "x"}\n',
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    (root / "folder").mkdir(exist_ok=True)
    broken = root / "broken-state"
    (broken / "logs").mkdir(parents=True, exist_ok=True)
    (broken / "session.json").write_text('{"session_id": "x", "config": {"good_source": 3}}')
    (broken / "journal.jsonl").write_text('{"probe_id": "p001"}\nnot json\n{"torn')
    (broken / "result.json").write_text("[1, 2")
    paths = {name: str(root / name) for name in [*files, "folder", "broken-state"]}
    paths["missing"] = str(root / "missing")
    return paths


COMMANDS = ["diff", "report", "replay", "status", "log", "next", "good", "reset", "resume"]


@fuzz(120)
@given(data=st.data())
def test_random_command_lines_never_raise(
    data: st.DataObject,
    tmp_path_factory: pytest.TempPathFactory,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path_factory.getbasetemp() / "nasty"
    paths = nasty_files(root)
    monkeypatch.chdir(root)
    command = data.draw(st.sampled_from(COMMANDS))
    words = data.draw(
        st.lists(
            st.one_of(
                st.sampled_from(sorted(paths.values())),
                st.sampled_from(["--json", "--state-dir", "--format", "markdown", "--probe"]),
                st.text(max_size=12),
            ),
            max_size=4,
        )
    )
    code: object = 0  # a command that succeeds returns (``diff`` of equal specs)
    try:
        main([command, *words])
    except SystemExit as exited:
        code = exited.code
    _out, err = capsys.readouterr()
    assert code in (0, 1, 2, 3), (command, words, err)
    assert "internal error" not in err, (command, words, err)
    assert "Traceback" not in err


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
# Tools that launch nothing (run, resume, start and cleanup can start processes).
TOOLS = [t.name for t in available(read_only=False) if t.name not in ("run", "resume", "start")]
TOOLS = [name for name in TOOLS if name != "cleanup"]


@fuzz(200)
@given(data=st.data())
def test_random_tool_arguments_never_raise(
    data: st.DataObject,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path_factory.getbasetemp() / "nasty-tools"
    paths = nasty_files(root)
    monkeypatch.chdir(root)
    tool = data.draw(st.sampled_from(TOOLS))
    path = st.sampled_from(sorted(paths.values()))
    keys = ["good", "bad", "state_dir", "log_file", "log_text", "probe", "outcome", "exit_code"]
    arguments: Any = data.draw(
        st.one_of(
            JSON,
            st.dictionaries(st.sampled_from(keys), st.one_of(path, JSON), max_size=4),
        )
    )
    try:
        dispatch.call(tool, arguments)
    except ClusterBisectError as err:
        assert err.exit_code in (1, 2, 3)


FIELDS = sorted(
    {f.name for group in (*SessionConfig.GROUPS.values(), LocalOptions) for f in fields_of(group)}
)
GROUP = st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=3)
START_KEYS = ["good_source", "bad_source", "good_copy", "backend", "command", "dry_run"]
GROUP_KEYS = [*SessionConfig.GROUPS, "backend_options"]


@fuzz(150)
@given(data=st.data())
def test_random_logs_given_to_replay_never_raise(
    data: st.DataObject,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A log's start line is a stored config: every field is checked as the CLI would."""
    root = tmp_path_factory.getbasetemp() / "nasty-logs"
    paths = nasty_files(root)
    monkeypatch.chdir(root)
    path = st.sampled_from([paths["good.env"], paths["bad.env"], paths["binary"]])
    start: dict[str, Any] = {
        "good_source": paths["good.env"],
        "bad_source": paths["bad.env"],
        **data.draw(st.dictionaries(st.sampled_from(START_KEYS), st.one_of(path, JSON))),
        **data.draw(st.dictionaries(st.sampled_from(GROUP_KEYS), GROUP | JSON)),
    }
    mark = st.dictionaries(st.sampled_from(["subset", "outcome", "log"]), JSON)
    marks = data.draw(st.lists(mark, max_size=2))
    text = "start " + json.dumps(start) + "\n" + "".join(f"mark {json.dumps(m)}\n" for m in marks)
    state = root / f"state-{data.draw(st.integers(0, 10**9))}"
    try:
        stepmode.replay(text, "fuzz.log", state)
    except ClusterBisectError as err:
        assert err.exit_code in (2, 3), err.message
