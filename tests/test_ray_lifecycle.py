"""The Ray backend's isolation and lifecycle on real Rays (marker ``ray``).

- an existing cluster (``--ray-address``): a head started here, by PID, from a
  directory of its own and with a variable in its node environment (as a pod template
  would set it). The workload is shipped as the job's working_dir, a variable the bad
  env removes is unset although the node sets it, the probes' job records are deleted,
  Ray's log lines stay out of the output, and ``cleanup`` stops a session's leftovers;
- the session's own local Ray: the caller's environment does not reach the probes, it
  runs on the job's interpreter with the GPUs asked for, and a run killed with SIGKILL
  leaves a Ray that ``resume`` stops before it runs anything.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import CLI, EXAMPLES, culprit_keys

from clusterbisect.runners.ray.cluster import PORT_FLAGS, choose_python, free_port

pytestmark = pytest.mark.ray


def _psutil():
    """Ray's own psutil, which importing Ray puts on the path."""
    importlib.import_module("ray")
    return importlib.import_module("psutil")


@dataclass
class Head:
    address: str
    pid: int
    cwd: Path


def _wait_for(check, what: str, seconds: float = 120.0) -> None:
    """Wait for a state (never for a time): ``check()`` true, or fail naming ``what``."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


def _answers(address: str, headers: dict[str, str] | None = None) -> bool:
    request = urllib.request.Request(f"{address}/api/version", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def _stop_tree(pid: int) -> None:
    """Stop a `ray start --block` process and everything it started, by PID."""
    psutil = _psutil()
    try:
        tree = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return
    os.kill(pid, signal.SIGINT)
    _gone, alive = psutil.wait_procs(tree, timeout=20)
    for proc in alive:
        proc.kill()
    psutil.wait_procs(alive, timeout=10)


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """A Ray head of our own (auth disabled), started from its own directory, whose node
    environment sets LEGACY_CACHE."""
    home = tmp_path_factory.mktemp("head-home")
    temp = Path(tempfile.mkdtemp(prefix="cbh-"))  # short: Ray's socket paths
    ports = {name: free_port() for name in PORT_FLAGS}
    keep = ("PATH", "LANG", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
    env = {k: v for k, v in os.environ.items() if k in keep or k.startswith("PIP_")}
    env.update(
        HOME=str(home), RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", LEGACY_CACHE="1"
    )
    argv = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block"]
    argv += ["--disable-usage-stats", "--node-ip-address=127.0.0.1", "--num-cpus=4"]
    argv += ["--dashboard-host=127.0.0.1", "--include-dashboard=true", f"--temp-dir={temp}"]
    argv += ["--min-worker-port=0", "--max-worker-port=0"]
    argv += [f"--{name}={port}" for name, port in ports.items()]
    with open(home / "head.log", "wb") as out:
        proc = subprocess.Popen(
            argv, cwd=home, env=env, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    address = f"http://127.0.0.1:{ports['dashboard-port']}"
    try:
        _wait_for(lambda: _answers(address) or proc.poll() is not None, "the Ray head")
        assert proc.poll() is None, (home / "head.log").read_text()[-2000:]
        yield Head(address, proc.pid, home)
    finally:
        _stop_tree(proc.pid)
        proc.wait(timeout=30)
        shutil.rmtree(temp, ignore_errors=True)


def _cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return {**env, "RAY_AUTH_MODE": "disabled", **extra}


def _session_jobs(head: Head, session_id: str) -> list[str]:
    from ray.job_submission import JobSubmissionClient

    jobs = JobSubmissionClient(head.address).list_jobs()
    return [
        j.submission_id
        for j in jobs
        if (j.metadata or {}).get("clusterbisect.session") == session_id
    ]


def test_the_interaction_example_on_an_existing_cluster(head, tmp_path):
    """The README's command, from the example's directory, against a head started
    elsewhere: the workload reaches the jobs as their working_dir."""
    example = EXAMPLES / "interaction"
    assert head.cwd != example and not (head.cwd / "finetune.py").exists()
    proc = subprocess.run(
        [*CLI, "run", "good.env", "bad.env", "--backend", "ray", "--ray-address", head.address]
        + ["--parallel", "4", "--fail-on", "couldn't connect to 'https://huggingface.co'"]
        + ["--state-dir", str(tmp_path / "state"), "--json", "--", "python", "finetune.py"],
        cwd=example, env=_cli_env(), capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # stdout holds the result and nothing of Ray's
    assert culprit_keys(result) == [["env.HF_HOME", "env.HF_HUB_OFFLINE"]]
    # Ray's INFO lines (package upload, dashboard_sdk) are the tool's debug log only.
    assert "Uploading package" not in proc.stderr and "dashboard_sdk" not in proc.stderr
    assert "INFO" not in proc.stderr
    # Every probe's log is kept in the state dir; its job record left the cluster.
    assert len(list((tmp_path / "state" / "logs").glob("p*.log"))) == result["probe_count"]
    assert _session_jobs(head, result["session_id"]) == []


def test_a_removed_variable_is_absent_although_the_node_sets_it(head, tmp_path):
    """The bad env no longer sets LEGACY_CACHE; the Ray node does (LEGACY_CACHE=1). A
    runtime_env cannot remove it, so the workload starts through `env -u`."""
    (tmp_path / "good.env").write_text("MODE=train\nLEGACY_CACHE=1\n")
    (tmp_path / "bad.env").write_text("MODE=eval\n")
    code = (
        "import os, sys\n"
        "if 'LEGACY_CACHE' not in os.environ: sys.exit('checkpoint index missing')\n"
        "print('mode', os.environ['MODE'])\n"
    )
    (tmp_path / "job.py").write_text(code)
    proc = subprocess.run(
        [*CLI, "--log-level", "debug", "--log-format", "json", "run", "good.env", "bad.env"]
        + ["--backend", "ray", "--ray-address", head.address, "--fail-on", "checkpoint index"]
        + ["--state-dir", str(tmp_path / "state"), "--json", "--", "python", "job.py"],
        cwd=tmp_path, env=_cli_env(), capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert culprit_keys(result) == [["env.LEGACY_CACHE"]]
    assert result["untestable"] == []
    # At debug level Ray's lines are there, as our log events naming Ray's logger.
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    assert any(e.get("logger", "").startswith("ray.") for e in events)


def test_cleanup_stops_and_deletes_one_sessions_leftovers(head, cli):
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(head.address)
    left = {}
    for session in ("20261201-000000-aaaaaa", "20261201-000000-bbbbbb"):
        left[session] = client.submit_job(
            entrypoint="sleep 300",
            submission_id=f"clusterbisect-{session}-p001-abc123",
            metadata={"clusterbisect.session": session, "clusterbisect.probe": "p001"},
        )
    _wait_for(
        lambda: all(client.get_job_status(j).value == "RUNNING" for j in left.values()),
        "the leftover jobs to run",
    )
    env = _cli_env()
    first, second = left
    report = cli.json(
        "cleanup", "--backend", "ray", "--session", first, "--ray-address", head.address, env=env
    )
    assert report["stopped"] == report["deleted"] == [left[first]]
    assert report["not_stopped"] == []
    assert client.get_job_status(left[second]).value == "RUNNING"  # another session's
    # Without a session, another's jobs are listed and nothing goes without --all.
    refused = cli("cleanup", "--backend", "ray", "--ray-address", head.address, env=env, expect=2)
    assert f"1 probe job(s) of 1 session(s): {second}" in refused.stderr
    assert client.get_job_status(left[second]).value == "RUNNING"
    proc = cli(
        "cleanup", "--backend", "ray", "--all", "--ray-address", head.address, env=env, expect=0
    )
    assert "1 running clusterbisect job(s) stopped, 1 job record(s) deleted" in proc.stdout
    assert _session_jobs(head, second) == []


# --- the session's own local Ray ---------------------------------------------------------


def _job_interpreter(where: Path) -> Path:
    """A virtualenv that is not the tool's: first without Ray, then with this Ray (the
    tool's site-packages through a .pth file), as a job's image might have it."""
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", str(where)], check=True)
    python = where / "bin" / "python"
    _python, why = choose_python(str(python), {"PATH": os.environ["PATH"]})
    assert "has Ray none" in why  # not usable yet: the tool's own interpreter instead
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    Path(site, "tool.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def test_a_killed_run_leaves_a_ray_that_resume_stops_first(tmp_path):
    """SIGKILL the CLI mid-probe: its local Ray lives on, recorded in the state dir.
    `resume` stops it, then finishes. Along the way: the caller's environment (FOO, and
    CALLER_ONLY which no spec names) never reaches a probe, the Ray runs on the job's
    interpreter, and it has the GPUs asked for."""
    psutil = _psutil()
    python = _job_interpreter(tmp_path / "jobpy")
    hold, marker = tmp_path / "hold", tmp_path / "running"
    hold.touch()
    (tmp_path / "job.py").write_text(
        "import os, pathlib, sys, time\n"
        f"hold, marker = pathlib.Path({str(hold)!r}), pathlib.Path({str(marker)!r})\n"
        "if hold.exists():\n"
        "    marker.touch()\n"
        "    while hold.exists(): time.sleep(0.2)\n"
        "if os.environ.get('CALLER_ONLY'): sys.exit('the caller env leaked')\n"
        "if os.environ.get('FOO'): sys.exit('FOO breaks the loader')\n"
        "print('ok')\n"
    )
    (tmp_path / "good.env").write_text("A=1\n")
    (tmp_path / "bad.env").write_text("A=2\nFOO=1\n")
    state = tmp_path / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(FOO="1", CALLER_ONLY="1")  # exported in the caller's shell
    argv = [*CLI, "run", "good.env", "bad.env", "--backend", "ray", "--ray-num-gpus", "2"]
    argv += ["--fail-on", "FOO breaks", "--state-dir", str(state), "--json"]
    argv += ["--", str(python), "job.py"]
    proc = subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        _wait_for(lambda: marker.exists() or proc.poll() is not None, "the first probe to run")
        assert proc.poll() is None, proc.communicate()[1].decode()[-3000:]
        record = json.loads((state / "ray" / "local.json").read_text())
        head = psutil.Process(record["pid"])
        assert head.cmdline()[0] == str(python) == record["python"]
        token = (state / "ray" / "auth_token").read_text()
        nodes = urllib.request.Request(
            f"{record['address']}/api/v0/nodes?detail=true",
            headers={"Authorization": f"Bearer {token}"},
        )
        with urllib.request.urlopen(nodes, timeout=30) as answer:
            (node,) = json.load(answer)["data"]["result"]["result"]
        assert node["resources_total"]["GPU"] == 2
        tree = [head, *head.children(recursive=True)]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert head.is_running()  # left behind by the killed run
    hold.unlink()
    resumed = subprocess.run(
        [*CLI, "resume", str(state), "--json"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert culprit_keys(json.loads(resumed.stdout)) == [["env.FOO"]]
    assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not (state / "ray" / "local.json").exists()
