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
from wheels import build_index, freeze_pair

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
from clusterbisect.runners.ray.cluster import choose_python, node_environment
from clusterbisect.runners.ray.jobs import FINAL, route_ray_logging, status_text, stop_and_delete
from clusterbisect.runners.ray.messages import strip_preamble
from clusterbisect.runners.ray.render import (
    DEFAULT_EXCLUDES,
    job_python,
    why_untestable,
    why_untestable_in_workload,
)
from clusterbisect.settings import apply_changes
from clusterbisect.specs import load_spec, parse_spec
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
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert (plan["changes_total"], plan["changes_searched"]) == (45, 33)
    assert "containers[trainer].image" in {u["key"] for u in plan["untestable"]}
    bad = yaml.safe_load(Path(plan["plan"][1]["manifest"]).read_text())
    # A container's env is the process's whole environment: what the bad Job no longer
    # sets must be absent, and a runtime_env cannot remove a variable, so the workload
    # starts through `env -u`.
    argv = shlex.split(bad["submission"]["entrypoint"])
    assert argv[-2:] == ["python", "/opt/train.py"]
    removed = [argv[i + 1] for i, word in enumerate(argv[: argv.index("--")]) if word == "-u"]
    assert argv[0] == "env" and "TRANSFORMERS_CACHE" in removed
    env_vars = bad["submission"]["runtime_env"]["env_vars"]
    assert env_vars["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] == "1"
    assert not set(removed) & set(env_vars)


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


def _env_pair(tmp_path: Path, good: str, bad: str) -> tuple[Spec, Spec]:
    (tmp_path / "good.env").write_text(good)
    (tmp_path / "bad.env").write_text(bad)
    return load_spec(str(tmp_path / "good.env")), load_spec(str(tmp_path / "bad.env"))


def test_env_dump_probes_unset_what_they_do_not_set(tmp_path):
    """An env dump is a process's whole environment: a variable a probe does not set
    must be absent, whatever the Ray node has. A runtime_env cannot remove one, so the
    workload starts through `env -u`; Ray's own variables are left to Ray."""
    good, bad = _env_pair(tmp_path, "A=1\nGONE=1\nPATH=/a\n", "A=2\nNEW=1\n")
    names = ("A", "GONE", "NEW", "PATH", "RAY_ADDRESS")
    argv = ["python", "x.py", "a b"]
    as_good = render_submission(good, argv, env_names=names)
    assert shlex.split(as_good.entrypoint) == ["env", "-u", "NEW", "--", *argv]
    as_bad = render_submission(bad, argv, env_names=names)
    assert shlex.split(as_bad.entrypoint) == ["env", "-u", "GONE", "--", *argv]
    assert as_bad.runtime_env["env_vars"] == {"A": "2", "NEW": "1"}
    # Nothing to unset: the workload as given.
    assert render_submission(good, argv, env_names=("A",)).entrypoint == shlex.join(argv)
    # A Ray job's runtime_env only sets: a variable it leaves out is the node's, as Ray
    # defines it, so nothing is unset.
    job = ray_job({"entrypoint": "python x.py", "runtime_env": {"env_vars": {"A": "1"}}})
    assert render_submission(job, env_names=("A", "GONE")).entrypoint == "python x.py"


def test_removing_a_variable_ray_sets_itself_is_untestable(tmp_path):
    good, bad = _env_pair(tmp_path, "PATH=/a\nRAY_X=1\nPYTHONPATH=/p\nA=1\n", "PATH=/b\nA=2\n")
    reasons = RayRunner().untestable(diff(good, bad))
    assert set(reasons) == {"env.RAY_X", "env.PYTHONPATH"}  # PATH: a value on both sides
    assert "Ray sets PYTHONPATH in every job's driver" in reasons["env.PYTHONPATH"]
    spec = parse_spec(K8S_JOB_TEMPLATE.format(tag="1", ckpt="v2", threads=2), "job.yaml")
    extra = parse_spec(
        K8S_JOB_TEMPLATE.format(tag="1", ckpt="v2", threads=2).replace(
            "- {name: OMP_NUM_THREADS",
            "- {name: VIRTUAL_ENV, value: /v}\n        - {name: OMP_NUM_THREADS",
        ),
        "job2.yaml",
    )
    (change,) = diff(spec, extra)
    assert "Ray sets VIRTUAL_ENV" in str(
        why_untestable_in_workload(change, container="main", command_given=True)
    )


def test_working_dir_is_the_specs_or_the_sessions_and_never_holds_the_state(tmp_path):
    work = tmp_path / "work"
    (work / "state").mkdir(parents=True)
    options = RayOptions(working_dir=str(work))
    avoid = [str(work / "state")]
    sub = render_submission(ray_job({"entrypoint": "python x.py"}), options=options, avoid=avoid)
    assert sub.runtime_env["working_dir"] == str(work)
    assert set(DEFAULT_EXCLUDES) <= set(sub.runtime_env["excludes"])
    assert "/state" in sub.runtime_env["excludes"]
    # The spec's own working_dir wins; only the state is left out of it.
    spec = ray_job({"entrypoint": "x", "runtime_env": {"working_dir": str(work)}})
    sub = render_submission(spec, options=RayOptions(working_dir="/elsewhere"), avoid=avoid)
    assert sub.runtime_env == {"working_dir": str(work), "excludes": ["/state"]}
    outside = render_submission(spec, options=options, avoid=[str(tmp_path / "other")])
    assert outside.runtime_env == {"working_dir": str(work)}
    remote = ray_job({"entrypoint": "x", "runtime_env": {"working_dir": "s3://b/pkg.zip"}})
    assert render_submission(remote, options=options, avoid=avoid).runtime_env == {
        "working_dir": "s3://b/pkg.zip"
    }


def test_the_working_dir_option_is_pinned_to_a_real_directory(tmp_path, monkeypatch, cli):
    monkeypatch.chdir(tmp_path)
    options = RayOptions()
    options.pin()
    assert options.working_dir == str(tmp_path)
    relative = RayOptions(working_dir=".")
    relative.pin()
    assert relative.working_dir == str(tmp_path)
    (tmp_path / "good.env").write_text("A=1\n")
    (tmp_path / "bad.env").write_text("A=2\n")
    proc = cli(
        "run", "good.env", "bad.env", "--backend", "ray", "--dry-run",
        "--working-dir", str(tmp_path / "missing"), "--", "true", expect=2,
    )  # fmt: skip
    assert "--working-dir" in proc.stderr and "not a directory" in proc.stderr


@pytest.mark.parametrize(
    ("entrypoint", "command", "python"),
    [
        ("python train.py", None, "python"),
        ("/opt/venv/bin/python3.11 -m train", None, "/opt/venv/bin/python3.11"),
        ("env OMP_NUM_THREADS=2 python3 train.py", None, "python3"),
        ("bash -c 'python x.py'", None, None),
        ("ignored", ["python3", "x.py"], "python3"),
        ("torchrun --nproc 2 x.py", None, None),
    ],
)
def test_job_python_is_the_interpreter_the_entrypoint_names(entrypoint, command, python):
    assert job_python(ray_job({"entrypoint": entrypoint}), command) == python


def test_the_local_ray_starts_from_a_clean_environment():
    caller = {
        "PATH": "/bin",
        "HOME": "/h",
        "FOO": "leak",
        "HF_TOKEN": "hf_x",
        "PIP_INDEX_URL": "https://mirror/simple",
        "CUDA_VISIBLE_DEVICES": "1",
        "RAY_ADDRESS": "http://elsewhere:8265",
        "VIRTUAL_ENV": "/v",
    }
    assert node_environment(caller) == {
        "PATH": "/bin",
        "HOME": "/h",
        "PIP_INDEX_URL": "https://mirror/simple",
        "CUDA_VISIBLE_DEVICES": "1",
    }
    assert choose_python(None, caller)[0] == sys.executable
    python, why = choose_python("no-such-python-zzz", caller)
    assert python == sys.executable and "not on the PATH" in why
    assert choose_python(sys.executable, caller) == (sys.executable, "the job's (the tool's own)")


def test_ray_log_lines_go_to_our_debug_log(capsys):
    """Ray's INFO lines ("Uploading package", dashboard_sdk) never reach stdout or the
    progress; they are the tool's debug log."""
    import logging

    from clusterbisect import log as logs

    route_ray_logging()
    sdk = logging.getLogger("ray.dashboard.modules.dashboard_sdk")
    try:
        logs.configure("json", "warning")
        sdk.info("Uploading package gcs://_ray_pkg_1.zip.")
        assert capsys.readouterr() == ("", "")
        logs.configure("json", "debug")
        sdk.warning("Package is large")
        out, err = capsys.readouterr()
        event = json.loads(err)
        assert out == "" and event["event"] == "Package is large"
        assert (event["level"], event["ray_level"]) == ("debug", "WARNING")
        assert event["logger"] == "ray.dashboard.modules.dashboard_sdk"
    finally:
        logs.configure()


def test_cleanup_on_ray_needs_an_address_or_a_session(tmp_path, cli):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = cli("cleanup", "--backend", "ray", env=env, expect=2)
    assert "--ray-address" in proc.stderr


NO_AGENT_YET = RuntimeError(
    "Request failed with status code 500: No available agent to submit job, please try again later."
)


def _client_that_refuses(*errors: Exception):
    """A Jobs API client (autospecced: a wrong argument fails) whose first submissions
    fail with ``errors``."""
    from unittest.mock import create_autospec

    from ray.job_submission import JobSubmissionClient

    client = create_autospec(JobSubmissionClient, instance=True)
    client.submit_job.side_effect = [*errors, "submitted"]
    return client


def _submitting_runner(tmp_path: Path, **tuning) -> RayRunner:
    settings = RaySettings(address="http://ray.invalid:8265", poll_s=0.01, **tuning)
    return RayRunner(RunnerContext(private_dir=tmp_path / "ray"), settings)


def test_a_head_without_a_job_agent_yet_is_asked_again(tmp_path):
    """A head whose node is still starting answers "No available agent" (after 10 s):
    the probe is submitted again, not given up as unresolved."""
    runner = _submitting_runner(tmp_path)
    client = _client_that_refuses(NO_AGENT_YET, NO_AGENT_YET)
    probe = make_probe(tmp_path, "p1", {"entrypoint": "true"})
    job = runner._submit(client, 0, probe, runner._render(probe))
    assert job.result is None and job.submission_id in runner._active
    assert client.submit_job.call_count == 3
    assert {c.kwargs["submission_id"] for c in client.submit_job.call_args_list} == {
        job.submission_id
    }


def test_a_refused_submission_is_unresolved_and_not_retried(tmp_path):
    runner = _submitting_runner(tmp_path)
    client = _client_that_refuses(RuntimeError("Request failed with status code 400: bad env"))
    probe = make_probe(tmp_path, "p1", {"entrypoint": "true"})
    job = runner._submit(client, 0, probe, runner._render(probe))
    assert job.result is not None and job.result.infra_error == (
        "SUBMISSION_FAILED: Request failed with status code 400: bad env"
    )
    assert client.submit_job.call_count == 1
    # No agent for longer than a job may wait: unresolved too, with Ray's words.
    runner = _submitting_runner(tmp_path, pending_timeout=0.0)
    client = _client_that_refuses(NO_AGENT_YET)
    job = runner._submit(client, 0, probe, runner._render(probe))
    assert job.result is not None and "No available agent" in str(job.result.infra_error)


def test_a_stopped_job_not_final_in_time_is_stopped_again_at_close(tmp_path):
    """A job stopped while it waits for resources takes the stop only once it starts:
    past stop_grace_s the probe is unresolved, and ``close`` stops and deletes it."""
    from ray.job_submission import JobInfo, JobStatus

    runner = _submitting_runner(tmp_path, stop_grace_s=0.0, pending_timeout=0.0)
    client = _client_that_refuses()
    client.get_job_info.return_value = JobInfo(status=JobStatus.PENDING, entrypoint="true")
    client.get_job_logs.return_value = ""
    client.get_job_status.side_effect = [JobStatus.PENDING, JobStatus.STOPPED]
    client.delete_job.return_value = True
    runner._client = client
    probe = make_probe(tmp_path, "p1", {"entrypoint": "true"})
    job = runner._submit(client, 0, probe, runner._render(probe))
    assert runner._check(client, job) is False  # PENDING too long: stopped
    client.stop_job.assert_called_once_with(job.submission_id)
    assert runner._check(client, job) is True  # not final within the grace
    assert job.result is not None and job.result.infra_error.startswith("UNSCHEDULABLE")
    client.delete_job.assert_not_called()
    runner.options.stop_grace_s = 60
    runner.close()
    assert client.stop_job.call_count == 2
    client.delete_job.assert_called_once_with(job.submission_id)


def test_importing_the_cli_does_not_import_ray():
    code = "import sys, clusterbisect.cli; sys.exit(1 if 'ray' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- a real local Ray ---------------------------------------------------------------


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    """One runner, and so one local Ray head, for the module."""
    state = tmp_path_factory.mktemp("ray-state")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RAY_ADDRESS", raising=False)
        mp.setenv("CALLER_ONLY", "leaked")  # the caller's shell: no probe may see it
        context = RunnerContext(parallel=4, private_dir=state / "ray")
        settings = RaySettings(local=LocalRayOptions(runtime_env_retries=1))
        ray_runner = RayRunner(context, settings)
        ray_runner.client()  # start the local Ray now
        assert ray_runner.local is not None
        yield ray_runner
    pids = ray_runner.local.pids()
    temp_dir = ray_runner.local.temp_dir
    assert temp_dir is not None and temp_dir.is_dir()
    ray_runner.close()
    assert not [p for p in pids if _alive(p)]
    assert not (state / "ray" / "local.json").exists()
    # The temp dir goes in the background: wait for that state, not for a time.
    deadline = time.monotonic() + 120
    while temp_dir.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not temp_dir.exists()


def _job_ids(runner: RayRunner, probe_ids: set[str]) -> list[str]:
    """The probe jobs still recorded on the cluster."""
    return [
        j.submission_id
        for j in runner.client().list_jobs()
        if (j.metadata or {}).get("clusterbisect.probe") in probe_ids
    ]


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
    fail_code = (
        "import os, sys; print('X is', os.environ['X'], os.environ.get('CALLER_ONLY')); sys.exit(3)"
    )
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
    # Ray's preamble (quoting the entrypoint) is gone; the caller's env did not leak.
    assert failed.output == "X is boom None\n"
    assert ANY_FAILURE.classify(failed) is Outcome.FAIL
    assert failed.details["ray_error_type"] == "JOB_ENTRYPOINT_COMMAND_ERROR"
    log_text = (state / "logs" / "p2.log").read_text()
    assert "X is boom" in log_text and "FAILED" in log_text
    # Their logs are kept: their job records are gone from the cluster.
    assert _job_ids(runner, {"p1", "p2"}) == []


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
    """A probe past its timeout (counted from RUNNING) is stopped on the cluster; one
    that cannot start while a CPU-hungry job holds the node is unschedulable."""
    state = _state(runner)
    cpus = runner.local.options.num_cpus or os.cpu_count()
    pid_file = state / "hung.pid"
    code = (
        f"import os, pathlib, time; pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))"
        "; time.sleep(120)"
    )
    (hung,) = runner.run(
        [make_probe(state, "p4", {"entrypoint": f"python -c {shlex.quote(code)}"}, timeout_s=6)]
    )
    assert hung.timed_out and hung.exit_code is None and hung.reason == "Timeout"
    # Stopped on the cluster (its driver is gone), and its record deleted after.
    assert not _alive(int(pid_file.read_text()))
    assert "stopped by clusterbisect: timeout" in (state / "logs" / "p4.log").read_text()
    assert FailureSignature().classify(hung) is Outcome.UNRESOLVED
    assert FailureSignature(hang_is_failure=True).classify(hung) is Outcome.FAIL
    # The node's CPUs held by a job of its own, RUNNING (a state, not a time) first,
    # until the waiting probe has been stopped as unschedulable.
    client, hold = runner.client(), state / "hold"
    hold.touch()
    wait = f"import pathlib, time\nwhile pathlib.Path({str(hold)!r}).exists(): time.sleep(0.2)"
    hog = client.submit_job(entrypoint=f"python -c {shlex.quote(wait)}", entrypoint_num_cpus=cpus)

    def release_when_stopped() -> None:
        while not any(job.stopping for job in list(runner._active.values())):
            time.sleep(0.1)
        hold.unlink()  # the stop reaches a pending job once it starts

    try:
        while status_text(client.get_job_status(hog)) != "RUNNING":
            assert status_text(client.get_job_status(hog)) not in FINAL
            time.sleep(0.2)
        threading.Thread(target=release_when_stopped, daemon=True).start()
        runner.options.pending_timeout, runner.options.stop_grace_s = 4, 600
        (waiting,) = runner.run(
            [make_probe(state, "p5", {"entrypoint": "echo never", "entrypoint_num_cpus": cpus})]
        )
    finally:
        runner.options.pending_timeout = RaySettings.pending_timeout
        runner.options.stop_grace_s = RaySettings.stop_grace_s
        hold.unlink(missing_ok=True)
        stop_and_delete(client, [hog], grace_s=600)
    assert waiting.infra_error and waiting.infra_error.startswith("UNSCHEDULABLE")
    assert ANY_FAILURE.classify(waiting) is Outcome.UNRESOLVED
    assert _job_ids(runner, {"p4", "p5"}) == []
    # A request no node can ever satisfy (more GPUs than any machine has) is refused at once.
    gpus = {"entrypoint": "true", "entrypoint_num_gpus": 4096}
    (gpu,) = runner.run([make_probe(state, "p6", gpus)])
    assert gpu.infra_error and "GPU=4096" in gpu.infra_error


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
    # Stopped, then its record deleted: nothing of it is left on the cluster.
    assert _job_ids(runner, {"p8"}) == []


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
        timeout=900,
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


# --- pip freeze pairs: the pins become the job's runtime_env pip -------------------------


def _freeze_probes(state: Path, tmp_path: Path) -> tuple[RayRunner, list[Probe], list]:
    """The good and bad freezes of tests/wheels.py as probes, and their changes."""
    build_index(tmp_path / "wheels")
    good_file, bad_file = freeze_pair(tmp_path, "./wheels")
    good, bad = load_spec(str(good_file)), load_spec(str(bad_file))
    changes = diff(good, bad)
    command = ["python", str(tmp_path / "work.py")]
    probes = [
        Probe(pid, "t", apply_changes(good, subset), subset, state / "logs" / f"{pid}.log",
              command=command)
        for pid, subset in (("pip1", []), ("pip2", changes))
    ]  # fmt: skip
    return RayRunner(RunnerContext(good=good, command=command)), probes, changes


def test_a_pip_freeze_renders_as_runtime_env_pip(tmp_path):
    ray_runner, (_, bad), changes = _freeze_probes(tmp_path / "state", tmp_path)
    assert ray_runner.untestable(changes) == {}
    submission = ray_runner.render(bad)["submission"]
    assert submission["entrypoint"] == shlex.join(bad.command)
    assert submission["runtime_env"]["pip"] == [
        "--no-index",
        f"--find-links {tmp_path / 'wheels'}",  # absolute: Ray installs elsewhere
        "checkpoint-io==2.0",
        "tqdm-lite==1.1",
        "yaml-lite==3.1",
        "otel-lite==0.9",
    ]


@pytest.mark.ray
def test_pip_freeze_probes_install_their_pins_on_ray(runner, tmp_path):
    state = _state(runner)
    _, probes, _ = _freeze_probes(state, tmp_path)
    ok, failed = runner.run(probes)
    assert ok.exit_code == 0 and ok.infra_error is None, ok.output
    assert "versions 1.0 3.0" in ok.output
    assert failed.exit_code == 1 and "checkpoint_io 2.0 refuses pickles" in failed.output
    signature = FailureSignature(fail_on="Weights only load failed")
    assert signature.classify(ok) is Outcome.PASS and signature.classify(failed) is Outcome.FAIL
