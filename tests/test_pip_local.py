"""pip freeze pairs bisected on the local backend: each probe in a virtual environment
with its pins installed from a local index of real wheels (tests/wheels.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import Cli, culprit_keys
from wheels import build_index, freeze_pair

from clusterbisect.runners.venvs import COMPLETE, ProbeEnvironments, find_uv, pin_set_key
from clusterbisect.specs import load_spec
from clusterbisect.specs.pip import install_lines

needs_uv = pytest.mark.skipif(find_uv() is None, reason="uv is not installed (the pip extra)")


@pytest.fixture
def freezes(tmp_path: Path) -> tuple[Path, Path]:
    """good.txt/bad.txt with a relative --find-links ./wheels, as a user would write."""
    build_index(tmp_path / "wheels")
    return freeze_pair(tmp_path, "./wheels")


@needs_uv
def test_a_pin_is_found_as_the_culprit(cli: Cli, freezes: tuple[Path, Path]) -> None:
    good, bad = freezes
    proc = cli(
        "run", str(good), str(bad), "--json", "--fail-on", "Weights only load failed",
        "--state-dir", "state", "--", "python", "work.py", expect=0,
    )  # fmt: skip
    result = json.loads(proc.stdout)
    assert culprit_keys(result) == [["pip.checkpoint-io"]]
    assert result["untestable"] == [] and result["changes_searched"] == 4
    (culprit,) = result["culprits"]
    assert culprit["changes"][0]["bad"] == "checkpoint-io==2.0"
    assert "checkpoint_io 2.0 refuses pickles" in culprit["proof"]["excerpt"]
    # One environment per pin set, each used as the probe's python.
    venvs = sorted(p.name for p in (cli.cwd / "state" / "local" / "venvs").iterdir())
    subsets = {tuple(p["subset"]) for p in result["probes"]}
    assert len(venvs) == len(subsets) < result["probe_count"]  # a repeated probe reused its
    assert all((cli.cwd / "state" / "local" / "venvs" / v / COMPLETE).is_file() for v in venvs)


@needs_uv
def test_a_pin_that_cannot_be_installed_is_unresolved_not_the_failure(
    cli: Cli, freezes: tuple[Path, Path]
) -> None:
    good, bad = freezes
    bad.write_text(bad.read_text().replace("checkpoint-io==2.0", "checkpoint-io==9.9"))
    proc = cli(
        "run", str(good), str(bad), "--json", "--fail-on", "Weights only load failed",
        "--", "python", "work.py", expect=1,
    )  # fmt: skip
    result = json.loads(proc.stdout)
    assert result["status"] == "not_reproducible"
    bad_runs = [p for p in result["probes"] if p["purpose"] == "baseline-bad"]
    assert bad_runs and all(p["outcome"] == "unresolved" for p in bad_runs)
    assert bad_runs[0]["infra_error"].startswith("installing the probe's pins: uv pip install")
    assert "checkpoint-io==9.9" in (Path(result["state_dir"]) / bad_runs[0]["log"]).read_text()


def test_environments_are_cached_by_pin_set_with_pip_too(tmp_path: Path) -> None:
    """Without uv, python -m venv and pip build the same environment; a pin set seen
    before is not built again, whatever the order of its lines."""
    build_index(tmp_path / "wheels")
    lines = ["--no-index", f"--find-links {tmp_path / 'wheels'}", "tqdm-lite==1.1"]
    environments = ProbeEnvironments(tmp_path / "venvs", installer="pip")
    first = environments.ensure(lines)
    assert not first.cached and first.path.name == pin_set_key(lines)
    python = first.path / "bin" / "python"
    version = subprocess.run(
        [str(python), "-c", "import tqdm_lite; print(tqdm_lite.VERSION)"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert version == "1.1\n"
    again = environments.ensure(list(reversed(lines)))
    assert again.cached and again.path == first.path and again.seconds == 0.0


def test_requirements_are_rendered_with_absolute_paths_and_no_credentials(tmp_path: Path) -> None:
    (tmp_path / "reqs.txt").write_text(
        "--index-url https://ci:hunter2token@pypi.corp.example/simple\n"
        "--find-links ./wheels\n-r base.txt\nnumpy==1.26.4\n"
    )
    spec = load_spec(str(tmp_path / "reqs.txt"))
    lines = install_lines(spec)
    assert lines[1:3] == [f"--find-links {tmp_path / 'wheels'}", f"-r {tmp_path / 'base.txt'}"]
    assert "hunter2token" in lines[0]  # the probe installs with the real index
    from clusterbisect.specs.pip import shown_lines

    assert "hunter2token" not in "".join(shown_lines(lines))


def test_step_mode_shows_the_pins_to_install(cli: Cli, freezes: tuple[Path, Path]) -> None:
    good, bad = freezes
    cli("start", str(good), str(bad), "--", "python", "work.py", expect=0)
    view = cli.json("next", "--probe", "p002")
    requirements = view["probe"]["rendered"]["requirements"]
    assert requirements[2:] == [
        "checkpoint-io==2.0",
        "tqdm-lite==1.1",
        "yaml-lite==3.1",
        "otel-lite==0.9",
    ]
    assert requirements[1] == f"--find-links {good.parent / 'wheels'}"
