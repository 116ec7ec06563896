"""Triage of a real local Ray's jobs (marker ``ray``): ``--ray-address``, ``RAY_ADDRESS``,
and the two listings a user can export from it (``ray list jobs --detail --format json``
and ``JobSubmissionClient.list_jobs()`` dumped as JSON), all read by the command.

One Ray head (token authentication, its token under the test's temp dir, started and
stopped by its own PIDs: never ``ray stop``) runs twelve jobs of one entrypoint: six
with the culprit env var, which fail, and six without it; an unrelated setting is
rolled out at random, and every job carries a secret token that the failing jobs
print.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import CLI

pytestmark = pytest.mark.ray

JOBS = 12
CULPRIT = "runtime_env.env_vars.CKPT_FORMAT"
SECRET = "hf_live_0123456789abcdefTRIAGE"  # the jobs' HF_TOKEN: never in what we print
SCRIPT = """
import os, sys
run = os.environ["RUN_ID"]
if os.environ["CKPT_FORMAT"] == "v3":
    print("loading /ckpt/" + run + "/step-1200.pt with token " + os.environ["HF_TOKEN"])
    sys.exit("RuntimeError: checkpoint format v3 not supported (" + run + ", token "
             + os.environ["HF_TOKEN"] + ")")
print("step 100, loss 0.12")
"""


@dataclass
class RayFleet:
    address: str
    env: dict[str, str]  # what a client of this token-authenticated Ray needs
    culprits: int


def _wait_finished(client: Any, ids: list[str], timeout_s: float = 300) -> None:
    """Until every job is in a terminal state (a state, not a sleep of a guessed length)."""
    from ray.job_submission import JobStatus

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(client.get_job_status(i).is_terminal() for i in ids):
            assert {client.get_job_status(i) for i in ids} <= {
                JobStatus.SUCCEEDED,
                JobStatus.FAILED,
            }
            return
        time.sleep(0.5)
    raise AssertionError(f"the {len(ids)} Ray jobs did not finish in {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def ray_fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayFleet]:
    pytest.importorskip("ray")
    from clusterbisect.runners.ray.cluster import LocalRay, LocalRayOptions

    local = LocalRay(LocalRayOptions(num_cpus=2), tmp_path_factory.mktemp("triage-ray"))
    local.start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(local.token_path))
        from ray.job_submission import JobSubmissionClient

        client = JobSubmissionClient(local.address, headers=local.headers())
        rng = random.Random(17)
        bad = set(rng.sample(range(JOBS), JOBS // 2))
        ids = [
            client.submit_job(
                entrypoint=shlex.join(["python", "-c", SCRIPT]),
                runtime_env={
                    "env_vars": {
                        "RUN_ID": f"run-{i:02d}",
                        "CKPT_FORMAT": "v3" if i in bad else "v2",
                        "OMP_NUM_THREADS": rng.choice(["4", "8"]),
                        "HF_TOKEN": SECRET,
                    }
                },
            )
            for i in range(JOBS)
        ]
        _wait_finished(client, ids)
        yield RayFleet(local.address, env, len(bad))
    finally:
        local.stop()


def triage(ray: RayFleet, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = subprocess.run(
        [*CLI, "triage", "--json", *args],
        capture_output=True,
        text=True,
        env=env or ray.env,
        timeout=300,
        check=False,
    )
    assert SECRET not in proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stderr[-3000:]
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def assert_found(result: dict[str, Any], ray: RayFleet) -> None:
    assert result["status"] == "suspects_found"
    assert (result["jobs"], result["failed"], result["succeeded"]) == (
        JOBS,
        ray.culprits,
        JOBS - ray.culprits,
    )
    top = result["suspects"][0]
    assert (top["key"], top["value"], top["significant"]) == (CULPRIT, "v3", True)
    assert (top["failed"], top["total"], top["failed_without"]) == (ray.culprits,) * 2 + (0,)
    (signature,) = result["signatures"]
    assert "checkpoint format v<n> not supported" in signature["signature"]
    assert signature["count"] == ray.culprits
    assert CULPRIT in result["pair"]["candidates"]


def test_ray_address_reads_the_jobs_api_with_logs(ray_fleet: RayFleet) -> None:
    result = triage(ray_fleet, "--ray-address", ray_fleet.address, "--logs", "5")
    assert_found(result, ray_fleet)
    assert result["sources"] == [f"ray {ray_fleet.address}"]
    # The secret shows redacted in the suspects' keys, and scrubbed from the failures.
    assert "<redacted>" in json.dumps(result["signatures"])


def test_ray_address_from_the_environment(ray_fleet: RayFleet) -> None:
    result = triage(ray_fleet, env={**ray_fleet.env, "RAY_ADDRESS": ray_fleet.address})
    assert_found(result, ray_fleet)
    assert result["sources"] == [f"ray {ray_fleet.address}"]


def test_exported_listings_of_the_cli_and_the_sdk(ray_fleet: RayFleet, tmp_path: Path) -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "ray.scripts.scripts", "list", "jobs", "--detail"]
        + ["--format", "json", "--address", ray_fleet.address],
        capture_output=True,
        text=True,
        env=ray_fleet.env,
        timeout=120,
        check=True,
    )
    cli_listing = tmp_path / "ray-list-jobs.json"
    cli_listing.write_text(listed.stdout)
    sdk_listing = tmp_path / "list_jobs.json"
    dump = (
        "import json, sys\n"
        "from ray.job_submission import JobSubmissionClient\n"
        "jobs = JobSubmissionClient(sys.argv[1]).list_jobs()\n"
        "print(json.dumps([j.model_dump() for j in jobs]))\n"
    )
    dumped = subprocess.run(
        [sys.executable, "-c", dump, ray_fleet.address],
        capture_output=True,
        text=True,
        env=ray_fleet.env,
        timeout=120,
        check=True,
    )
    sdk_listing.write_text(dumped.stdout)
    for listing in (cli_listing, sdk_listing):
        result = triage(ray_fleet, str(listing))
        assert_found(result, ray_fleet)
        assert result["sources"] == [str(listing)]
