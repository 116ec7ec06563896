"""The Ray backend against a real local Ray (marker ``ray``), plus its pure rendering.

One Ray head serves the whole module (start-up costs a few seconds); it runs with
token authentication and its token under the test's state dir, so nothing is written
to ``~/.ray``. The end-to-end test drives ``clusterbisect run --backend ray`` against
that head through ``--ray-address``, the way a user points it at an existing cluster.
"""

from __future__ import annotations

import _thread
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import CLI, EXAMPLES

from benchmarks.chaos import wait_dead
from clusterbisect.config import RayOptions
from clusterbisect.diff import diff
from clusterbisect.errors import Interrupted
from clusterbisect.outcome import FailureSignature, Outcome
from clusterbisect.runners.base import Probe, RunnerContext
from clusterbisect.runners.ray import (
    LocalRayOptions,
    RayRunner,
    RaySettings,
    render_submission,
)
from clusterbisect.runners.ray.render import why_untestable, why_untestable_in_workload
from clusterbisect.runners.ray.runner import strip_preamble
from clusterbisect.specs import parse_spec
from clusterbisect.specs.model import RAY_JOB, Spec

TRAINING = EXAMPLES / "training-upgrade"

K8S_JOB_TEMPLATE = """\
apiVersion: batch/v1
kind: Job
metadata:
  name: finetune
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: registry.example.com/train:{tag}
        command: [python, -c]
        args:
        - "import os, sys; sys.exit(7 if os.environ['CKPT_FORMAT'] == 'v3' else 0)"
        env:
        - {{name: CKPT_FORMAT, value: {ckpt}}}
        - {{name: OMP_NUM_THREADS, value: "{threads}"}}
        - name: HF_TOKEN
          valueFrom: {{secretKeyRef: {{name: hf, key: token}}}}
      - name: sidecar
        image: busybox
        env:
        - {{name: SIDE, value: "1"}}
"""
ANY_FAILURE = FailureSignature()

RAYJOB_TEMPLATE = """\
apiVersion: ray.io/v1
kind: RayJob
metadata:
  name: sweep
  namespace: ray
spec:
  entrypoint: python -c "import os, sys; sys.exit(7 if os.environ['CKPT_FORMAT'] == 'v3' else 0)"
  runtimeEnvYAML: |
    env_vars:
      CKPT_FORMAT: {ckpt}
      OMP_NUM_THREADS: "{threads}"
      LOG_LEVEL: {level}
  rayClusterSpec:
    headGroupSpec:
      template:
        spec:
          containers:
          - name: ray-head
            image: rayproject/ray:{ray}
"""


def ray_job(doc: dict, source: str = "job.yaml") -> Spec:
    return Spec(RAY_JOB, "RayJobSpec", source, doc)


def make_probe(state: Path, probe_id: str, doc: dict, **kwargs) -> Probe:
    return Probe(probe_id, "t", ray_job(doc), [], state / "logs" / f"{probe_id}.log", **kwargs)


# --- rendering and untestable changes (no Ray needed) ---------------------------------


def test_render_ray_job_spec_with_flags_and_command():
    spec = ray_job(
        {
            "entrypoint": "python train.py",
            "runtime_env": {"env_vars": {"A": 1, "B": True}, "pip": ["semver==3.0.2"]},
            "entrypoint_num_cpus": 2,
            "metadata": {"team": "ml"},
        }
    )
    sub = render_submission(spec, None, RayOptions(entrypoint_num_cpus=0.5))
    assert sub.entrypoint == "python train.py"
    assert sub.runtime_env["env_vars"] == {"A": "1", "B": "true"}
    assert sub.resources == {"entrypoint_num_cpus": 0.5}  # the flag wins
    # The argv after `--` replaces the entrypoint, quoted for Ray's shell.
    argv = ["python", "-c", "print(1)", "a b", "$HOME;rm -rf /"]
    sub = render_submission(spec, argv)
    assert shlex.split(sub.entrypoint) == argv


def test_render_kuberay_rayjob_parses_runtime_env_yaml():
    text = RAYJOB_TEMPLATE.format(ckpt="v2", threads=2, level="info", ray="2.60.0")
    spec = parse_spec(text, "rayjob.yaml")
    spec.document["spec"]["entrypointNumCpus"] = 1
    spec.document["spec"]["entrypointResources"] = '{"accel": 1}'
    sub = render_submission(spec)
    assert sub.entrypoint.startswith("python -c")
    assert sub.runtime_env == {
        "env_vars": {"CKPT_FORMAT": "v2", "OMP_NUM_THREADS": "2", "LOG_LEVEL": "info"}
    }
    assert sub.resources == {"entrypoint_num_cpus": 1, "entrypoint_resources": {"accel": 1}}


def test_untestable_rayjob_pod_settings_and_overridden_entrypoint():
    good = parse_spec(RAYJOB_TEMPLATE.format(ckpt="v2", threads=2, level="info", ray="2.60.0"), "g")
    bad = parse_spec(RAYJOB_TEMPLATE.format(ckpt="v3", threads=4, level="info", ray="2.61.0"), "b")
    changes = diff(good, bad)
    reasons = RayRunner().untestable(changes)
    assert set(reasons) == {"head.containers[ray-head].image"}
    assert "Kubernetes" in reasons["head.containers[ray-head].image"]
    entry = next(c for c in diff(ray_job({"entrypoint": "a"}), ray_job({"entrypoint": "b"})))
    assert why_untestable(entry, rayjob=False, command_given=False, podman=False) is None
    assert "replaces the entrypoint" in str(
        why_untestable(entry, rayjob=False, command_given=True, podman=False)
    )
    image = next(
        c
        for c in diff(
            ray_job({"runtime_env": {"image_uri": "a:1"}}),
            ray_job({"runtime_env": {"image_uri": "a:2"}}),
        )
    )
    assert "podman" in str(why_untestable(image, rayjob=False, command_given=False, podman=False))
    assert why_untestable(image, rayjob=False, command_given=False, podman=True) is None


def test_render_kubernetes_job_maps_its_main_container():
    spec = parse_spec(K8S_JOB_TEMPLATE.format(tag="1", ckpt="v2", threads=2), "job.yaml")
    sub = render_submission(spec)
    # The container's command and args become the entrypoint, its plain env the env_vars
    # (the secret reference cannot be resolved outside the cluster, so it is left out).
    assert shlex.split(sub.entrypoint) == [
        "python",
        "-c",
        "import os, sys; sys.exit(7 if os.environ['CKPT_FORMAT'] == 'v3' else 0)",
    ]
    assert sub.runtime_env == {"env_vars": {"CKPT_FORMAT": "v2", "OMP_NUM_THREADS": "2"}}
    sub = render_submission(spec, ["python", "x.py"], container="sidecar")
    assert sub.entrypoint == "python x.py"
    assert sub.runtime_env == {"env_vars": {"SIDE": "1"}}


def test_untestable_kubernetes_job_settings():
    changes = diff(
        parse_spec((TRAINING / "good.yaml").read_text(), "good.yaml"),
        parse_spec((TRAINING / "bad.yaml").read_text(), "bad.yaml"),
    )
    reasons = {
        c.key: why_untestable_in_workload(c, container="trainer", command_given=True)
        for c in changes
    }
    env = [k for k in reasons if ".env." in k]
    assert env and all(reasons[k] is None for k in env)
    assert "use --backend kubernetes" in str(reasons["containers[trainer].image"])
    assert "resources settings" in str(reasons["containers[trainer].resources.requests.cpu"])
    assert "outside the trainer container" in str(reasons["tolerations"])
    # The command: the entrypoint, unless the workload after `--` replaces it.
    good = parse_spec(K8S_JOB_TEMPLATE.format(tag="1", ckpt="v2", threads=2), "g")
    bad = parse_spec(
        K8S_JOB_TEMPLATE.format(tag="1", ckpt="v2", threads=2).replace("[python, -c]", "[py]"),
        "b",
    )
    (command,) = diff(good, bad)
    assert why_untestable_in_workload(command, container="main", command_given=False) is None
    assert "replaces the entrypoint" in str(
        why_untestable_in_workload(command, container="main", command_given=True)
    )
    secret = parse_spec(
        K8S_JOB_TEMPLATE.format(tag="1", ckpt="v2", threads=2).replace("key: token", "key: t2"),
        "s",
    )
    (reference,) = diff(good, secret)
    assert "reference" in str(
        why_untestable_in_workload(reference, container="main", command_given=False)
    )


def test_dry_run_of_a_kubernetes_job_on_ray_searches_its_env(tmp_path):
    """The training Job on Ray: the same 33 env changes as on the local backend."""
    proc = subprocess.run(
        [*CLI, "run", str(TRAINING / "good.yaml"), str(TRAINING / "bad.yaml")]
        + ["--backend", "ray", "--dry-run", "--state-dir", str(tmp_path / "s"), "--json"]
        + ["--", "python", "/opt/train.py"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert (plan["changes_total"], plan["changes_searched"]) == (45, 33)
    assert "containers[trainer].image" in {u["key"] for u in plan["untestable"]}
    bad = yaml.safe_load(Path(plan["plan"][1]["manifest"]).read_text())
    assert bad["submission"]["entrypoint"] == "python /opt/train.py"
    assert bad["submission"]["runtime_env"]["env_vars"]["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] == "1"


def test_render_redacts_secret_env_vars_and_needs_no_ray(tmp_path):
    good = ray_job({"entrypoint": "x", "runtime_env": {"env_vars": {"HF_TOKEN": "hf_1", "A": "1"}}})
    bad = ray_job({"entrypoint": "x", "runtime_env": {"env_vars": {"HF_TOKEN": "hf_1", "A": "2"}}})
    changes = diff(good, bad)
    probe = Probe("p1", "s", bad, changes, tmp_path / "p1.log")
    rendered = RayRunner().render(probe)
    assert rendered["submission"]["runtime_env"]["env_vars"] == {"HF_TOKEN": "<redacted>", "A": "2"}
    assert "hf_1" not in json.dumps(rendered)


def test_strip_preamble_keeps_workload_lines():
    log = (
        "2026-11-27 02:47:31,748\tINFO job_manager.py:581 -- Runtime env is setting up.\n"
        "Running entrypoint for job j1: python -c 'print(\"CUDA error\")'\n"
        "CUDA error\n"
        "Running entrypoint for job j1: printed by the workload\n"
    )
    assert (
        strip_preamble(log)
        == "CUDA error\nRunning entrypoint for job j1: printed by the workload\n"
    )


def test_importing_the_cli_does_not_import_ray():
    code = "import sys, clusterbisect.cli; sys.exit(1 if 'ray' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_a_ray_without_its_job_agent_yet_is_asked_again(tmp_path):
    """Fault injection (the Jobs API's answer on a just-started Ray on a loaded machine):
    the submission is retried, not the probe called unresolved."""
    from unittest.mock import create_autospec

    pytest.importorskip("ray")
    from ray.job_submission import JobSubmissionClient

    client = create_autospec(JobSubmissionClient, instance=True)
    busy = RuntimeError(
        "Request failed with status code 500: No available agent to submit job, "
        "please try again later."
    )
    client.submit_job.side_effect = [busy, busy, "submitted"]
    runner = RayRunner(RunnerContext(), RaySettings(address="http://127.0.0.1:1"))
    probe = make_probe(tmp_path, "p1", {"entrypoint": "true"})
    job = runner._submit(client, 0, probe, render_submission(probe.spec))
    assert job.result is None and client.submit_job.call_count == 3
    assert job.submission_id in runner._active
    # Any other refusal is this probe's: unresolved at once.
    client.submit_job.side_effect = [RuntimeError("Request failed: bad working_dir")]
    job = runner._submit(
        client, 1, make_probe(tmp_path, "p2", {"entrypoint": "true"}), render_submission(probe.spec)
    )
    assert job.result is not None and job.result.infra_error.startswith("SUBMISSION_FAILED")


# --- a real local Ray ---------------------------------------------------------------


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    """One runner, and so one local Ray head, for the module."""
    state = tmp_path_factory.mktemp("ray-state")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RAY_ADDRESS", raising=False)
        context = RunnerContext(parallel=4, private_dir=state / "ray")
        settings = RaySettings(local=LocalRayOptions(runtime_env_retries=1))
        ray_runner = RayRunner(context, settings)
        ray_runner.client()  # start the local Ray now
        assert ray_runner.local is not None
        yield ray_runner
    pids = ray_runner.local.pids()
    ray_runner.close()
    assert not [p for p in pids if _alive(p)]


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _state(runner: RayRunner) -> Path:
    assert runner.context.private_dir is not None
    return runner.context.private_dir.parent


@pytest.mark.ray
def test_pass_and_fail_with_exit_code_and_log(runner):
    state = _state(runner)
    fail_code = "import os, sys; print('X is', os.environ['X']); sys.exit(3)"
    ok, failed = runner.run(
        [
            make_probe(state, "p1", {"entrypoint": "python -c 'print(42)'"}),
            make_probe(
                state,
                "p2",
                {
                    "entrypoint": f"python -c {shlex.quote(fail_code)}",
                    "runtime_env": {"env_vars": {"X": "boom"}},
                },
            ),
        ]
    )
    assert (ok.exit_code, ok.output, ok.infra_error) == (0, "42\n", None)
    assert ANY_FAILURE.classify(ok) is Outcome.PASS
    assert failed.exit_code == 3
    assert failed.output == "X is boom\n"  # Ray's preamble (quoting the entrypoint) is gone
    assert ANY_FAILURE.classify(failed) is Outcome.FAIL
    assert failed.details["ray_error_type"] == "JOB_ENTRYPOINT_COMMAND_ERROR"
    log_text = (state / "logs" / "p2.log").read_text()
    assert "X is boom" in log_text and "FAILED" in log_text


@pytest.mark.ray
def test_command_argv_reaches_the_workload_unchanged(runner):
    argv = [sys.executable, "-c", "import sys, json; print(json.dumps(sys.argv[1:]))"]
    argv += ["a b", "$HOME", "x;false"]
    (result,) = runner.run(
        [make_probe(_state(runner), "p3", {"entrypoint": "false"}, command=argv)]
    )
    assert result.exit_code == 0
    assert json.loads(result.output) == ["a b", "$HOME", "x;false"]


# A workload that leaves three processes behind: a background child, one in a session
# of its own, and a double-forked daemon. Each prints its PID.
ESCAPEES = r"""
sleep 300 & echo "left $!"
setsid sh -c 'sleep 301 & echo "left $!"'
python3 -c "import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        print('left', os.getpid(), flush=True); time.sleep(302)
    os._exit(0)
os.wait()"
exit 3
"""


@pytest.mark.ray
def test_what_a_probe_leaves_behind_ends_with_it_on_the_sessions_ray(runner):
    """Ray leaves a job's background children running; on the session's own Ray the
    keeper ends them when the probe ends (and the exit code is still the workload's)."""
    (result,) = runner.run(
        [make_probe(_state(runner), "p9", {"entrypoint": f"sh -c {shlex.quote(ESCAPEES)}"})]
    )
    assert result.exit_code == 3, result.output
    pids = [int(line.split()[1]) for line in result.output.splitlines() if line.startswith("left")]
    assert len(pids) == 3, result.output
    assert wait_dead(pids) == []


@pytest.mark.ray
def test_timeout_stops_the_job_and_pending_is_unschedulable(runner):
    """Both need a CPU-hungry job: the second cannot start while the first runs."""
    state = _state(runner)
    cpus = runner.local.options.num_cpus or os.cpu_count()
    hog = {"entrypoint": "sleep 120", "entrypoint_num_cpus": cpus}
    started = time.monotonic()
    runner.options.pending_timeout = 4
    try:
        hung, waiting = runner.run(
            [
                make_probe(state, "p4", hog, timeout_s=6),
                make_probe(state, "p5", {**hog, "entrypoint": "echo never"}),
            ]
        )
    finally:
        runner.options.pending_timeout = RaySettings.pending_timeout
    assert time.monotonic() - started < 60
    assert hung.timed_out and hung.exit_code is None and hung.reason == "Timeout"
    assert runner.client().get_job_status(hung.details["ray_submission_id"]).value == "STOPPED"
    assert FailureSignature().classify(hung) is Outcome.UNRESOLVED
    assert FailureSignature(hang_is_failure=True).classify(hung) is Outcome.FAIL
    assert waiting.infra_error and waiting.infra_error.startswith("UNSCHEDULABLE")
    # Stopped while PENDING, Ray ends it as STOPPED or (its supervisor never started) FAILED.
    status = runner.client().get_job_status(waiting.details["ray_submission_id"])
    assert status.is_terminal() and status.value != "SUCCEEDED"
    assert ANY_FAILURE.classify(waiting) is Outcome.UNRESOLVED
    # A request no node can ever satisfy is refused at once.
    (gpu,) = runner.run([make_probe(state, "p6", {"entrypoint": "true", "entrypoint_num_gpus": 1})])
    assert gpu.infra_error and "GPU=1" in gpu.infra_error


@pytest.mark.ray
def test_unbuildable_pip_runtime_env_is_unresolved(runner):
    package = "clusterbisect-no-such-package-zzz"
    (result,) = runner.run(
        [
            make_probe(
                _state(runner),
                "p7",
                {"entrypoint": "true", "runtime_env": {"pip": [f"{package}==1.0"]}},
            )
        ]
    )
    assert result.exit_code is None
    assert result.infra_error and result.infra_error.startswith("RUNTIME_ENV_SETUP_FAILURE")
    assert package in result.infra_error  # the report names the pin that cannot be installed
    assert result.details["ray_error_type"] == "RUNTIME_ENV_SETUP_FAILURE"
    assert ANY_FAILURE.classify(result) is Outcome.UNRESOLVED


@pytest.mark.ray
def test_ctrl_c_stops_the_running_jobs(runner):
    state = _state(runner)
    marker = state / "running.txt"
    code = f"import pathlib, time; pathlib.Path({str(marker)!r}).touch(); time.sleep(120)"
    probe = make_probe(state, "p8", {"entrypoint": f"python -c {shlex.quote(code)}"})

    def interrupt_when_running() -> None:
        # A state to wait for (the job runs), not a time: a loaded machine is only slower.
        while not marker.exists():
            time.sleep(0.1)
        _thread.interrupt_main()

    threading.Thread(target=interrupt_when_running, daemon=True).start()
    with pytest.raises(Interrupted):
        runner.run([probe])
    assert marker.exists()  # interrupted while the job ran, not before
    jobs = [
        j
        for j in runner.client().list_jobs()
        if (j.metadata or {}).get("clusterbisect.probe") == "p8"
    ]
    assert len(jobs) == 1 and jobs[0].status.value == "STOPPED"


@pytest.mark.ray
def test_interrupted_session_stops_jobs_and_its_ray(tmp_path):
    """A separate process, as the CLI would be: SIGINT mid-probe, then nothing is left."""
    home_token = Path.home() / ".ray" / "auth_token"
    had_home_token = home_token.exists()
    marker = tmp_path / "running.txt"
    pid_file = tmp_path / "pids.json"
    script = f"""
import json, pathlib, shlex, sys
from clusterbisect.errors import Interrupted
from clusterbisect.runners.base import Probe
from clusterbisect.config import RayOptions
from clusterbisect.runners.base import RunnerContext
from clusterbisect.runners.ray import make_runner
from clusterbisect.specs.model import RAY_JOB, Spec
code = "import pathlib, time; pathlib.Path({str(marker)!r}).touch(); time.sleep(120)"
spec = Spec(RAY_JOB, "RayJobSpec", "job.yaml", {{"entrypoint": "python -c " + shlex.quote(code)}})
context = RunnerContext(private_dir=pathlib.Path({str(tmp_path)!r}) / "ray")
runner = make_runner(context, RayOptions())
probe = Probe("p1", "s", spec, [], pathlib.Path({str(tmp_path)!r}) / "p1.log")
runner.client()
token_mode = runner.local.token_path.stat().st_mode & 0o777
pathlib.Path({str(pid_file)!r}).write_text(json.dumps([runner.local.pids(), token_mode]))
try:
    runner.run([probe])
except Interrupted:
    print("interrupted")
finally:
    runner.close()
"""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        # Wait for the state (the job runs), however long a loaded machine takes.
        while not marker.exists() and proc.poll() is None:
            time.sleep(0.2)
        assert marker.exists(), proc.stderr.read().decode() if proc.poll() is not None else ""
        import psutil

        pids, token_mode = json.loads(pid_file.read_text())
        pids += [p.pid for p in psutil.Process(pids[0]).children(recursive=True)]  # the driver
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert b"interrupted" in out, err.decode()[-2000:]
    assert wait_dead(pids) == []
    assert home_token.exists() == had_home_token  # the token lives in the state dir
    assert token_mode == 0o600
    assert not (tmp_path / "ray" / "auth_token").exists()  # removed with its Ray


# --- end to end through the CLI --------------------------------------------------------


def bisect_on_test_ray(runner, tmp_path: Path, good_text: str, bad_text: str) -> dict:
    """`clusterbisect run --backend ray --ray-address ...` against the module's Ray, the
    way a user points it at an existing (token) cluster; the JSON result."""
    good = tmp_path / "good.yaml"
    bad = tmp_path / "bad.yaml"
    good.write_text(good_text)
    bad.write_text(bad_text)
    assert runner.local is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(_state(runner) / "ray" / "auth_token")
    )
    proc = subprocess.run(
        [*CLI, "run", str(good), str(bad), "--backend", "ray", "--ray-address"]
        + [runner.local.address, "--parallel", "2", "--state-dir", str(tmp_path / "state")]
        + ["--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=150,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["status"] == "found"
    return result


def culprit_keys(result: dict) -> list[list[str]]:
    return [[c["key"] for c in culprit["changes"]] for culprit in result["culprits"]]


@pytest.mark.ray
def test_env_var_culprit_in_a_kuberay_rayjob(runner, tmp_path):
    result = bisect_on_test_ray(
        runner,
        tmp_path,
        RAYJOB_TEMPLATE.format(ckpt="v2", threads=2, level="info", ray="2.60.0"),
        RAYJOB_TEMPLATE.format(ckpt="v3", threads=4, level="debug", ray="2.61.0"),
    )
    assert culprit_keys(result) == [["runtime_env.env_vars.CKPT_FORMAT"]]
    # The head image is a pod setting: left out of the search, and said so.
    assert "head.containers[ray-head].image" in json.dumps(result)


@pytest.mark.ray
def test_env_var_culprit_in_a_kubernetes_job(runner, tmp_path):
    """A plain Kubernetes Job on Ray: its container's env and command make the Ray job."""
    result = bisect_on_test_ray(
        runner,
        tmp_path,
        K8S_JOB_TEMPLATE.format(tag="1", ckpt="v2", threads=2),
        K8S_JOB_TEMPLATE.format(tag="2", ckpt="v3", threads=4),
    )
    assert culprit_keys(result) == [["containers[main].env.CKPT_FORMAT"]]
    assert "containers[main].image" in {u["key"] for u in result["untestable"]}
