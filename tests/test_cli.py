"""The command line as a program: its names, its completion, how it installs."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT, Cli

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None  # type: ignore[assignment]


def _kubectl_bisect(*args: str) -> subprocess.CompletedProcess[str]:
    """The kubectl-bisect console script's entry point, run as kubectl runs the plugin."""
    code = "import sys; from clusterbisect.cli import kubectl_main; kubectl_main(sys.argv[1:])"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False
    )


def test_kubectl_bisect_is_named_as_kubectl_users_type_it(cli: Cli) -> None:
    proc = _kubectl_bisect("--help")
    assert proc.returncode == 0 and proc.stdout.startswith("Usage: kubectl bisect [OPTIONS]")
    assert _kubectl_bisect("run", "--help").stdout.startswith("Usage: kubectl bisect run ")
    assert _kubectl_bisect("--version").stdout.startswith("kubectl bisect, version ")
    assert cli("--help", expect=0).stdout.startswith("Usage: clusterbisect [OPTIONS]")
    assert cli("--version", expect=0).stdout.startswith("clusterbisect, version ")


@pytest.mark.skipif(tomllib is None, reason="tomllib needs Python 3.11")
def test_the_console_scripts_and_the_license_metadata() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    scripts = project["project"]["scripts"]
    assert scripts == {
        "clusterbisect": "clusterbisect.cli:main",
        "kubectl-bisect": "clusterbisect.cli:kubectl_main",
    }
    # An SPDX expression and license-files, as setuptools >= 77 wants (a TOML table
    # is deprecated and warns at every install).
    assert project["project"]["license"] == "Apache-2.0"
    for name in project["project"]["license-files"]:
        assert (ROOT / name).is_file()
    assert "setuptools>=77" in project["build-system"]["requires"]


def test_shell_completion_completes_commands_and_options(cli: Cli) -> None:
    script = cli(extra_env={"_CLUSTERBISECT_COMPLETE": "bash_source"}, expect=0).stdout
    assert "_clusterbisect_completion()" in script and "complete -o nosort" in script
    words = {"COMP_WORDS": "clusterbisect re", "COMP_CWORD": "1"}
    proc = cli(extra_env={"_CLUSTERBISECT_COMPLETE": "bash_complete", **words}, expect=0)
    assert {"plain,resume", "plain,replay", "plain,report", "plain,reset"} <= set(
        proc.stdout.split()
    )
    words = {"COMP_WORDS": "clusterbisect run --back", "COMP_CWORD": "2"}
    proc = cli(extra_env={"_CLUSTERBISECT_COMPLETE": "bash_complete", **words}, expect=0)
    assert "plain,--backend" in proc.stdout.split()
