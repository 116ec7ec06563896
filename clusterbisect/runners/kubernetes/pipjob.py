"""pip freeze probes as Kubernetes Jobs: an install step before the command (pure).

A pip freeze has no pod of its own, so a probe Job is made around the image the user
names (``--pip-image``): an init container writes the probe's pins to a file,
makes a virtual environment in a shared ``emptyDir`` and installs them with pip; the
main container runs the workload with that environment first on PATH. An install
that fails is the init container's failure: the workload never ran, so it is an
infrastructure error (unresolved), never the failure under investigation.
"""

from __future__ import annotations

from typing import Any

from clusterbisect.errors import InputError
from clusterbisect.outcome import RunResult
from clusterbisect.specs.model import KUBERNETES, Spec
from clusterbisect.specs.pip import shown_lines

CONTAINER = "probe"
INSTALL_CONTAINER = "clusterbisect-pip"
VOLUME = "clusterbisect-venv"
VENV = "/clusterbisect/venv"
PINS_ENV = "CLUSTERBISECT_REQUIREMENTS"

# The install step: the pins from the environment into a file, a venv, pip install.
INSTALL = (
    f'printf "%s" "${PINS_ENV}" > /tmp/clusterbisect-requirements.txt'
    f" && python3 -m venv {VENV}"
    f" && {VENV}/bin/python -m pip install --disable-pip-version-check --no-input"
    " --no-cache-dir -r /tmp/clusterbisect-requirements.txt"
)
# The workload, with the environment first on PATH (as `activate` does).
ACTIVATE = f'export PATH="{VENV}/bin:$PATH" VIRTUAL_ENV="{VENV}"; exec "$@"'


def job_spec(pip: Spec, image: str | None) -> Spec:
    """The Job a pip freeze's probes are rendered from: one container running
    ``image`` (its pins and workload are added per probe)."""
    if not image:
        raise InputError(
            "a pip freeze runs on Kubernetes in an image you name: --pip-image IMAGE "
            "(a Python image with pip, e.g. python:3.12-slim), with the workload after "
            "`--`; or bisect it with --backend local or --backend ray",
            source=pip.source,
            field="--pip-image",
        )
    document = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "pip-freeze-probe"},
        "spec": {"template": {"spec": {"containers": [{"name": CONTAINER, "image": image}]}}},
    }
    return Spec(format=KUBERNETES, kind="Job", source=pip.source, document=document)


def add_install_step(job: dict[str, Any], lines: list[str], image: str) -> dict[str, Any]:
    """``job`` (rendered from :func:`job_spec`) with the install step before its
    command. Its container must have a command: the workload after ``--`` or
    ``--command``."""
    pod = job["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c.get("name") == CONTAINER)
    workload = [*(container.get("command") or []), *(container.pop("args", None) or [])]
    if not workload:
        raise InputError(
            "a pip freeze probe needs its workload: give it after `--` "
            "(clusterbisect run good.txt bad.txt --backend kubernetes --pip-image IMAGE "
            "-- python train.py) or with --command",
            field="COMMAND",
        )
    mount = {"name": VOLUME, "mountPath": VENV}
    container["command"] = ["/bin/sh", "-c", ACTIVATE, "clusterbisect-probe", *workload]
    container.setdefault("volumeMounts", []).append(dict(mount))
    pod.setdefault("initContainers", []).append(
        {
            "name": INSTALL_CONTAINER,
            "image": image,
            "command": ["/bin/sh", "-c", INSTALL],
            "env": [{"name": PINS_ENV, "value": "".join(f"{line}\n" for line in lines)}],
            "volumeMounts": [dict(mount)],
            # pip's error (the tail of its log) becomes the container's termination
            # message, which the probe's verdict quotes.
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }
    )
    pod.setdefault("volumes", []).append({"name": VOLUME, "emptyDir": {}})
    return job


def install_verdict(result: RunResult) -> RunResult:
    """A probe whose install step failed did not run its workload: an infrastructure
    error, whatever the init container's exit code (``status.terminated_state`` names
    a failed init container in the reason, with its message)."""
    reason = result.reason or ""
    if reason.startswith(f"init container {INSTALL_CONTAINER}:"):
        result.infra_error = f"installing the probe's pins failed (exit {result.exit_code}): " + (
            reason.split(":", 2)[-1].strip()
        )
        result.exit_code = None
    return result


def hide_credentials(manifest: dict[str, Any]) -> dict[str, Any]:
    """A (copied) manifest for display: index URL credentials in the pins hidden."""
    pod = ((manifest.get("spec") or {}).get("template") or {}).get("spec") or {}
    for container in pod.get("initContainers") or []:
        for env in container.get("env") or []:
            if env.get("name") == PINS_ENV and isinstance(env.get("value"), str):
                lines = shown_lines(env["value"].splitlines())
                env["value"] = "".join(f"{line}\n" for line in lines)
    return manifest
