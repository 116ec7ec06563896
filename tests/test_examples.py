"""The examples, run for real: each workload, and each incident bisected on the local backend.

Every bisection goes through the command line (``python -m clusterbisect.cli``) with
``--json`` and checks the culprit keys in the contract's output.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import EXAMPLES, ROOT, Cli

from clusterbisect.specs import load_spec
from clusterbisect.specs.workload import spec_env

UPGRADE = EXAMPLES / "training-upgrade"
INTERACTION = EXAMPLES / "interaction"
FLAKY = EXAMPLES / "flaky"

UPGRADE_CULPRIT = "containers[trainer].env.TORCH_FORCE_WEIGHTS_ONLY_LOAD"
UPGRADE_SIGNATURE = "Weights only load failed"
INTERACTION_CULPRIT = {"env.HF_HOME", "env.HF_HUB_OFFLINE"}
INTERACTION_SIGNATURE = "couldn't connect to 'https://huggingface.co'"
FLAKY_CULPRIT = "containers[trainer].env.DATALOADER_TIMEOUT"
FLAKY_SIGNATURE = "RuntimeError: DataLoader timed out"


def bisect(
    cli: Cli, cwd: Path, good: str, bad: str, state_dir: Path, *options: str
) -> dict[str, Any]:
    """``clusterbisect run ... --json``; return the parsed result (exit code 0 required)."""
    args = ["run", good, bad, "--state-dir", str(state_dir), "--json", "--quiet", *options]
    return json.loads(cli(*args, cwd=cwd).stdout)


def culprit_sets(result: dict[str, Any]) -> list[set[str]]:
    return [{c["key"] for c in culprit["changes"]} for culprit in result["culprits"]]


def workload(script: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run an example workload with ``env`` on top of the current environment."""
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=script.parent,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --- training-upgrade -----------------------------------------------------------------


def test_training_upgrade_diff_is_the_realistic_incident(cli: Cli) -> None:
    done = cli("diff", "good.yaml", "bad.yaml", "--json", cwd=UPGRADE)
    assert done.returncode == 0, done.stderr
    changes = {c["key"]: c for c in json.loads(done.stdout)["changes"]}
    assert 40 <= len(changes) <= 50
    assert changes[UPGRADE_CULPRIT]["change"] == "added"
    assert changes[UPGRADE_CULPRIT]["bad"] == "1"
    assert changes["containers[trainer].image"]["change"] == "modified"
    assert sum(k.startswith("containers[trainer].env.") for k in changes) >= 30
    # The kubectl noise (uid, resourceVersion, status, managedFields, controller labels)
    # must not show up as changes.
    for key in changes:
        assert not any(
            noise in key
            for noise in ("uid", "resourceVersion", "status", "managedFields", "job-name")
        ), key


def test_training_job_passes_with_the_good_settings_and_all_benign_changes() -> None:
    good = spec_env(load_spec(str(UPGRADE / "good.yaml")))
    bad = spec_env(load_spec(str(UPGRADE / "bad.yaml")))
    assert workload(UPGRADE / "train.py", good).returncode == 0
    # Every env change of the upgrade except the culprit: the job still trains fine.
    benign = {**good, **{k: v for k, v in bad.items() if k != "TORCH_FORCE_WEIGHTS_ONLY_LOAD"}}
    for removed in set(good) - set(bad):
        benign.pop(removed)
    done = workload(UPGRADE / "train.py", benign)
    assert done.returncode == 0, done.stderr[-2000:]
    assert '"event": "final_eval"' in done.stdout


def test_training_job_crashes_at_the_final_checkpoint_load_with_the_culprit() -> None:
    good = spec_env(load_spec(str(UPGRADE / "good.yaml")))
    done = workload(UPGRADE / "train.py", {**good, "TORCH_FORCE_WEIGHTS_ONLY_LOAD": "1"})
    assert done.returncode == 1
    assert "_pickle.UnpicklingError: Weights only load failed" in done.stderr
    assert "GLOBAL __main__.TrainState was not an allowed global" in done.stderr
    # It trained and checkpointed before dying, like the real job.
    assert "saved checkpoint-60" in done.stdout
    assert "final_eval" not in done.stdout


def test_training_upgrade_bisection_finds_the_culprit(tmp_path: Path, cli: Cli) -> None:
    result = bisect(
        cli,
        UPGRADE,
        "good.yaml",
        "bad.yaml",
        tmp_path / "state",
        "--fail-on",
        UPGRADE_SIGNATURE,
        "--",
        sys.executable,
        "train.py",
    )
    assert result["status"] == "found"
    assert culprit_sets(result) == [{UPGRADE_CULPRIT}]
    assert result["culprits"][0]["changes"][0]["bad"] == "1"
    searched = result["changes_searched"]
    assert searched >= 30
    # Baselines, a halving search, and the two confirmations.
    assert result["probe_count"] <= 2 + math.ceil(math.log2(searched)) + 2
    untestable = json.dumps(result["untestable"])
    assert "containers[trainer].image" in untestable
    assert "resources" in untestable
    assert result["state_dir"] == str(tmp_path / "state")


def test_training_upgrade_bisection_in_parallel(tmp_path: Path, cli: Cli) -> None:
    result = bisect(
        cli,
        UPGRADE,
        "good.yaml",
        "bad.yaml",
        tmp_path / "state",
        "--fail-on",
        UPGRADE_SIGNATURE,
        "--parallel",
        "3",
        "--",
        sys.executable,
        "train.py",
    )
    assert culprit_sets(result) == [{UPGRADE_CULPRIT}]
    assert result["rounds"] < result["probe_count"]


def test_make_demo_script_prints_the_culprit(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(UPGRADE / "demo.py"), "--state-dir", str(tmp_path / "demo")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "$ clusterbisect diff good.yaml bad.yaml" in out
    assert "containers[trainer].env.NCCL_DEBUG" in out  # the diff was shown
    assert f"Culprit: {UPGRADE_CULPRIT}" in out
    assert (tmp_path / "demo").is_dir()


# --- interaction ----------------------------------------------------------------------


def test_interaction_each_change_alone_is_harmless_together_they_crash() -> None:
    good = spec_env(load_spec(str(INTERACTION / "good.env")))
    bad = spec_env(load_spec(str(INTERACTION / "bad.env")))
    script = INTERACTION / "finetune.py"
    assert workload(script, good).returncode == 0
    assert workload(script, {**good, "HF_HOME": bad["HF_HOME"]}).returncode == 0
    assert workload(script, {**good, "HF_HUB_OFFLINE": bad["HF_HUB_OFFLINE"]}).returncode == 0
    both = workload(script, {**good, "HF_HOME": bad["HF_HOME"], "HF_HUB_OFFLINE": "1"})
    assert both.returncode == 1
    assert "OSError: We couldn't connect to 'https://huggingface.co'" in both.stderr
    assert "LocalEntryNotFoundError" in both.stderr


def test_interaction_bisection_reports_one_culprit_of_two_changes(tmp_path: Path, cli: Cli) -> None:
    result = bisect(
        cli,
        INTERACTION,
        "good.env",
        "bad.env",
        tmp_path / "state",
        "--fail-on",
        INTERACTION_SIGNATURE,
        "--",
        sys.executable,
        "finetune.py",
    )
    assert result["status"] == "found"
    assert culprit_sets(result) == [INTERACTION_CULPRIT]
    assert result["untestable"] in ([], {})


# --- flaky ----------------------------------------------------------------------------


def test_flaky_workload_fails_about_half_the_time_only_with_the_culprit() -> None:
    script = FLAKY / "stream_train.py"
    good = [workload(script, {"DATALOADER_TIMEOUT": "0"}).returncode for _ in range(5)]
    assert good == [0] * 5
    runs = [workload(script, {"DATALOADER_TIMEOUT": "30"}) for _ in range(16)]
    failures = [r for r in runs if r.returncode != 0]
    # p is about 0.5: 16 runs that all pass or all fail happen once in ~30,000.
    assert 0 < len(failures) < len(runs)
    assert all("RuntimeError: DataLoader timed out after 30 seconds" in r.stderr for r in failures)


def test_flaky_workload_replays_with_a_seed() -> None:
    script = FLAKY / "stream_train.py"
    env = {"DATALOADER_TIMEOUT": "0", "SHARD_LATENCY_SEED": "42", "LOG_LEVEL": "DEBUG"}
    first, second = workload(script, env), workload(script, env)
    assert first.returncode == second.returncode == 0
    reads = [[ln for ln in r.stdout.splitlines() if " read " in ln] for r in (first, second)]
    assert reads[0] == reads[1] and len(reads[0]) == 8


def test_flaky_bisection_finds_the_culprit_with_the_flake_aware_strategy(
    tmp_path: Path, cli: Cli
) -> None:
    result = bisect(
        cli,
        FLAKY,
        "good.yaml",
        "bad.yaml",
        tmp_path / "state",
        "--fail-on",
        FLAKY_SIGNATURE,
        "--flaky",
        "--confidence",
        "0.999",
        "--parallel",
        "4",
        "--",
        sys.executable,
        "stream_train.py",
    )
    assert result["status"] == "found"
    assert culprit_sets(result) == [{FLAKY_CULPRIT}]
    assert result["culprits"][0]["confidence"] >= 0.99
    assert result["culprits"][0]["changes"][0]["bad"] == "30"
    # The report states the rates it learned: about one run in two with the culprit.
    p, q = result["estimates"]["p"], result["estimates"]["q"]
    assert 0.1 < p < 0.95 and q < 0.25
    report = cli("report", str(tmp_path / "state"), cwd=FLAKY).stdout
    assert f"Failure rates: {p:.2f} with the culprit (p), {q:.2f} without it (q)" in report


@pytest.mark.parametrize("example", ["training-upgrade", "interaction", "flaky"])
def test_each_example_has_a_readme_with_the_local_command(example: str) -> None:
    readme = (EXAMPLES / example / "README.md").read_text()
    assert "clusterbisect run" in readme
    assert "--fail-on" in readme
