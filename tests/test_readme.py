"""The README's commands, run as a new user runs them after ``make demo``: in a shell
where ``clusterbisect`` is not on PATH until the README's activation line puts it there.

The environment the tests run in stands for the ``.venv`` that ``make demo`` makes
(``make unit`` runs them with it); outside a virtual environment there is nothing to
activate and these tests are skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXAMPLES, ROOT

VENV = Path(sys.prefix)
pytestmark = pytest.mark.skipif(
    sys.prefix == sys.base_prefix or not (VENV / "bin" / "activate").is_file(),
    reason="the tests do not run in a virtual environment: nothing to activate",
)
# A shell as a new user has it: system programs only, no environment active.
BARE_PATH = os.pathsep.join(p for p in ("/usr/local/bin", "/usr/bin", "/bin") if Path(p).is_dir())


def console_commands(heading: str) -> list[str]:
    """The commands of the first ``console`` block under ``heading`` in the README:
    ``$ `` prompts dropped (where it has them), continuation lines joined, comments cut."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index(f"\n{heading}\n") :]
    block = re.search(r"```console\n(.*?)```", section, re.DOTALL)
    assert block is not None, f"no console block under {heading}"
    commands: list[str] = []
    pending = ""
    for line in block.group(1).splitlines():
        line = pending + line.removeprefix("$ ").strip()
        if line.endswith("\\"):
            pending = line[:-1]
            continue
        pending = ""
        command = re.sub(r"\s+#.*$", "", line).strip()
        if command and not command.startswith("#"):
            commands.append(command)
    return commands


def bare_shell(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env.update(PATH=BARE_PATH, NO_COLOR="1")
    return subprocess.run(
        ["bash", "-ec", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def a_checkout(tmp_path: Path) -> Path:
    """A checkout after ``make demo``: the training-upgrade example and ``.venv``."""
    shutil.copytree(EXAMPLES / "training-upgrade", tmp_path / "examples" / "training-upgrade")
    (tmp_path / ".venv").symlink_to(VENV)
    return tmp_path


def test_the_readme_activates_the_venv_make_demo_installed_into(tmp_path: Path) -> None:
    try_it = console_commands("## Try it")
    assert try_it[0] == "make demo"
    activate = try_it[1]
    assert activate == ". .venv/bin/activate"
    assert try_it.index("make test") > 1
    root = a_checkout(tmp_path)
    # Without it, the commands that follow are not found: what the README must say.
    missing = bare_shell("clusterbisect --version", root)
    assert missing.returncode == 127, missing.stdout + missing.stderr
    found = bare_shell(f"{activate}\nclusterbisect --version\nkubectl-bisect --version", root)
    assert found.returncode == 0, found.stderr
    assert found.stdout.startswith("clusterbisect, version") and "kubectl bisect" in found.stdout


def test_the_operators_commands_run_as_written_after_activating(tmp_path: Path) -> None:
    activate = console_commands("## Try it")[1]
    commands = console_commands("## For operators")
    assert commands[0] == "cd examples/training-upgrade"
    assert [c.split()[:2] for c in commands[1:]] == [
        ["clusterbisect", "diff"],
        ["clusterbisect", "run"],
        ["clusterbisect", "report"],
    ]
    # The one word a user fills in: the session directory `run` made.
    script = "\n".join([activate, *commands]).replace("<session>", "*")
    done = bare_shell(script, a_checkout(tmp_path))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "containers[trainer].env.TORCH_FORCE_WEIGHTS_ONLY_LOAD" in done.stdout
    assert "FOUND: containers[trainer].env.TORCH_FORCE_WEIGHTS_ONLY_LOAD" in done.stdout
    assert "# clusterbisect report" in done.stdout  # the markdown report


def test_the_demo_says_how_to_call_clusterbisect_when_it_is_not_on_path(tmp_path: Path) -> None:
    root = a_checkout(tmp_path)
    demo = f"{VENV / 'bin' / 'python'} {ROOT / 'examples' / 'training-upgrade' / 'demo.py'}"
    out = bare_shell(f"{demo} --state-dir demo-state", root)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = out.stdout.splitlines()
    at = lines.index("    clusterbisect report demo-state --format markdown")
    assert lines[at - 1].startswith(f"    . {VENV / 'bin' / 'activate'}")
    # Following it works; once active, the demo has nothing to add.
    again = bare_shell(f"{lines[at - 1].strip()}\n{lines[at].strip()}", root)
    assert again.returncode == 0 and again.stdout.startswith("# clusterbisect report")
    active = bare_shell(f". .venv/bin/activate\n{demo} --state-dir demo-2", root)
    assert active.returncode == 0, active.stdout[-3000:] + active.stderr[-3000:]
    assert "activate" not in active.stdout
