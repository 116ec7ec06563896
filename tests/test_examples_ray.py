"""examples/ray-upgrade on a real local Ray: the pip pin is found among six changes.

This runs the README's command as is (plus --json and a state dir): the CLI starts
its own Ray for the session, installs the probes' pip runtime_envs from PyPI, prints
the result and then shuts that Ray down. Its time is measured in
benchmarks/bench_ray_example.py, not here.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import CLI, EXAMPLES

EXAMPLE = EXAMPLES / "ray-upgrade"


@pytest.mark.ray
def test_ray_upgrade_example_finds_the_semver_pin(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run(
        [*CLI, "run", "good.yaml", "bad.yaml"]
        + ["--backend", "ray", "--parallel", "2", "--fail-on", "AttributeError"]
        + ["--state-dir", str(tmp_path / "state"), "--json"],
        cwd=EXAMPLE,
        capture_output=True,
        text=True,
        env=env,
        timeout=400,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["status"] == "found"
    assert len(result["culprits"]) == 1
    (change,) = result["culprits"][0]["changes"]
    assert change["key"] == "runtime_env.pip.semver"
    assert (change["good"], change["bad"]) == ("semver==2.13.0", "semver==3.0.2")
    # Every probe ran on Ray and left its driver log in the state dir.
    logs = sorted((tmp_path / "state" / "logs").glob("p*.log"))
    assert len(logs) == result["probe_count"]
    assert any("semver 3.0.2" in log.read_text() for log in logs)
    # The session's Ray is gone (nothing records it any more) and its token with it;
    # Ray's own INFO lines never reached the output.
    assert not (tmp_path / "state" / "ray" / "local.json").exists()
    assert not (tmp_path / "state" / "ray" / "auth_token").exists()
    assert "INFO" not in proc.stderr and "Uploading package" not in proc.stderr
