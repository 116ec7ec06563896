"""pip freeze pairs on the Kubernetes backend: a probe Job around --pip-image with an
install step (an init container) before the command, valid Kubernetes, and an
install that fails read as an infrastructure error."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
from kubernetes import client
from wheels import build_index, freeze_pair

from clusterbisect.diff import diff
from clusterbisect.errors import InputError
from clusterbisect.outcome import FailureSignature, Outcome, RunResult
from clusterbisect.runners.base import Probe, RunnerContext
from clusterbisect.runners.kubernetes import KubernetesRunner, KubernetesSettings, pipjob
from clusterbisect.runners.kubernetes.status import terminated_state
from clusterbisect.settings import apply_changes
from clusterbisect.specs import load_spec

VERSIONS = ("1.29.0", "1.33.0")
IMAGE = "python:3.12-slim"
WORKLOAD = ["python", "-c", "import checkpoint_io; print(checkpoint_io.load())"]


def runner_and_probe(tmp_path: Path, **options: object) -> tuple[KubernetesRunner, Probe]:
    build_index(tmp_path / "wheels")
    good_file, bad_file = freeze_pair(tmp_path, "./wheels")
    for path in (good_file, bad_file):
        path.write_text(
            "--extra-index-url https://ci:s3cr3t-token@pypi.corp.example/simple\n"
            + path.read_text()
        )
    good, bad = load_spec(str(good_file)), load_spec(str(bad_file))
    changes = diff(good, bad)
    context = RunnerContext(dry_run="client", good=good, command=WORKLOAD)
    runner = KubernetesRunner(context, KubernetesSettings(namespace="ml", **options))  # type: ignore[arg-type]
    probe = Probe(
        "p002", "s1", apply_changes(good, changes), changes, tmp_path / "p002.log",
        command=WORKLOAD, purpose="baseline-bad",
    )  # fmt: skip
    return runner, probe


def test_a_pip_freeze_probe_is_a_valid_job_with_an_install_step(tmp_path: Path) -> None:
    runner, probe = runner_and_probe(tmp_path, pip_image=IMAGE)
    assert runner.untestable(probe.changes) == {}
    (job,) = runner.manifests(probe)
    for version in VERSIONS:
        kubernetes_validate.validate(job, version, strict=True)
    pod = job["spec"]["template"]["spec"]
    (install,) = pod["initContainers"]
    (main,) = pod["containers"]
    assert (
        install["name"] == pipjob.INSTALL_CONTAINER and install["image"] == main["image"] == IMAGE
    )
    pins = install["env"][0]["value"].splitlines()
    assert "checkpoint-io==2.0" in pins and f"--find-links {tmp_path / 'wheels'}" in pins
    assert "s3cr3t-token" in install["env"][0]["value"]  # the cluster gets the real index
    assert main["command"][:2] == ["/bin/sh", "-c"] and main["command"][4:] == WORKLOAD
    assert pod["volumes"] == [{"name": pipjob.VOLUME, "emptyDir": {}}]
    assert job["metadata"]["namespace"] == "ml" and pod["restartPolicy"] == "Never"
    # What people and models see hides the index credentials.
    shown = runner.render(probe)
    assert "s3cr3t-token" not in str(shown) and "checkpoint-io==2.0" in str(shown)


def test_without_an_image_or_a_workload_the_error_says_what_to_give(tmp_path: Path) -> None:
    with pytest.raises(InputError) as missing:
        runner_and_probe(tmp_path)
    message = str(missing.value)
    assert "good.txt" in message and "--pip-image IMAGE" in message
    assert "--backend local or --backend ray" in message
    runner, probe = runner_and_probe(tmp_path / "again", pip_image=IMAGE)
    probe.command = None
    runner.context = RunnerContext(dry_run="client", good=runner.context.good)
    with pytest.raises(InputError, match="needs its workload: give it after `--`"):
        runner.manifests(probe)


def test_a_failed_install_step_is_an_infrastructure_error() -> None:
    """The init container's exit and its termination message (pip's last line): the
    workload never ran, so the probe is unresolved, whatever the signature."""
    message = "Looking in links: /w\nERROR: No matching distribution found for checkpoint-io==9.9\n"
    pod = client.V1Pod(
        status=client.V1PodStatus(
            phase="Failed",
            init_container_statuses=[
                client.V1ContainerStatus(
                    name=pipjob.INSTALL_CONTAINER, image=IMAGE, image_id="", ready=False,
                    restart_count=0,
                    state=client.V1ContainerState(
                        terminated=client.V1ContainerStateTerminated(
                            exit_code=1, reason="Error", message=message
                        )
                    ),
                )
            ],
            container_statuses=[],
        )
    )  # fmt: skip
    code, reason = terminated_state(pod, pipjob.CONTAINER)
    assert code == 1 and reason is not None and reason.endswith("checkpoint-io==9.9")
    result = pipjob.install_verdict(RunResult(exit_code=code, reason=reason))
    assert result.exit_code is None and result.infra_error == (
        "installing the probe's pins failed (exit 1): "
        "ERROR: No matching distribution found for checkpoint-io==9.9"
    )
    assert FailureSignature().classify(result) is Outcome.UNRESOLVED
    # The workload's own failure is left alone.
    own = pipjob.install_verdict(RunResult(exit_code=1, reason="Error"))
    assert own.infra_error is None and FailureSignature().classify(own) is Outcome.FAIL
