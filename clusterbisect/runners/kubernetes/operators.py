"""What a workload's operator does to the pod it starts, done for a probe (pure).

A probe is one pod: the chosen template run as a ``batch/v1`` Job, a world of one.
The operators that normally start that pod also shape it, and a probe has to do the
same for the template to behave as it does under its operator:

- the environment they inject (:func:`operator_env`): Kubeflow's training operator
  (``MASTER_ADDR``/``WORLD_SIZE``/``RANK``, torchrun's ``PET_*``, ``TF_CONFIG``),
  Volcano's job plugins (``env``, ``svc``, ``pytorch``, ``tensorflow``),
  LeaderWorkerSet (``LWS_*``) and Kubeflow Trainer's torch policy (``PET_*``), each
  for a world of one;
- a TrainJob's ``spec.trainer`` (image, command, args, env, resources per node) laid
  over the runtime's trainer container, as the Trainer controller does
  (:func:`overlay_trainer`);
- the Job settings that reach the pod: ``completionMode: Indexed`` makes the probe an
  Indexed Job of one completion, so the pod gets ``JOB_COMPLETION_INDEX=0`` and its
  index annotation from the Job controller itself (:func:`job_fields`).

:func:`carries` says which settings outside the template still reach the probe this
way (they stay testable); :func:`world_of_one` finds commands that cannot run as a
world of one (``torchrun --nnodes=2``), so the report can say why such probes hang.
"""

from __future__ import annotations

import json
import re
import shlex
from typing import Any

from clusterbisect.settings import PathSegment
from clusterbisect.specs import kinds
from clusterbisect.specs.kinds import PodTemplateRef, resolve
from clusterbisect.specs.model import Spec

KUBEFLOW_PORTS = {"PyTorchJob": 23456, "XGBoostJob": 9999, "TFJob": 2222, "JAXJob": 6666}
VOLCANO_PORTS = {"pytorch": 23456, "tensorflow": 2222}
TRAINER_PORT = 29500  # Kubeflow Trainer's ContainerTrainerPort
TRAINER_CONTAINER = "node"  # the container a TrainJob's trainer overrides


def which(spec: Spec) -> str:
    return kinds.identify(spec.document, spec.kind)


# --- the environment operators inject ----------------------------------------------------


def operator_env(spec: Spec, ref: PodTemplateRef, container: dict[str, Any]) -> dict[str, str]:
    """The env the workload's operator gives the probed template's pods, for a world of
    one: a probe is a single pod, so it rendezvouses with itself.

    Kubeflow: PyTorchJob and XGBoostJob ``MASTER_ADDR``/``MASTER_PORT``/``WORLD_SIZE``/
    ``RANK`` (and torchrun's ``PET_*`` with an ``elasticPolicy`` or ``nprocPerNode``),
    TFJob ``TF_CONFIG``, JAXJob ``COORDINATOR_ADDRESS``/``NUM_PROCESSES``/``PROCESS_ID``;
    Volcano: what its ``env``, ``svc``, ``pytorch`` and ``tensorflow`` plugins add;
    LeaderWorkerSet: ``LWS_LEADER_ADDRESS``/``LWS_GROUP_SIZE``/``LWS_WORKER_INDEX``;
    a TrainJob with a torch policy: ``PET_*``. Other kinds (MPIJob, PaddleJob, ...)
    get nothing: their launchers are not emulated.
    """
    kind = which(spec)
    if kind in KUBEFLOW_PORTS:
        return _kubeflow_env(spec, kind, ref, container)
    if kind == kinds.VOLCANO_JOB:
        return _volcano_env(spec, ref, container)
    if kind == "LeaderWorkerSet":
        return {"LWS_LEADER_ADDRESS": "localhost", "LWS_GROUP_SIZE": "1", "LWS_WORKER_INDEX": "0"}
    if kind == "TrainJob" or kind in kinds.RUNTIME_KINDS:
        return _trainer_env(spec, ref)
    return {}


def _kubeflow_env(
    spec: Spec, kind: str, ref: PodTemplateRef, container: dict[str, Any]
) -> dict[str, str]:
    body = spec.document.get("spec") or {}
    port = str(named_port(container, kind.lower() + "-port") or KUBEFLOW_PORTS[kind])
    if kind == "TFJob":
        return {"TF_CONFIG": _tf_config((ref.role or "chief").lower(), port)}
    if kind == "JAXJob":
        return {
            "COORDINATOR_ADDRESS": f"localhost:{port}",
            "NUM_PROCESSES": "1",
            "PROCESS_ID": "0",
        }
    env = {"MASTER_ADDR": "localhost", "MASTER_PORT": port, "WORLD_SIZE": "1", "RANK": "0"}
    if kind == "PyTorchJob" and (body.get("elasticPolicy") or body.get("nprocPerNode")):
        env.update(PET_MASTER_ADDR="localhost", PET_MASTER_PORT=port, PET_NNODES="1")
        env["PET_NODE_RANK"] = "0"
        if body.get("nprocPerNode"):
            env["PET_NPROC_PER_NODE"] = str(body["nprocPerNode"])
    return env


def _tf_config(role: str, port: str) -> str:
    config = {"cluster": {role: [f"localhost:{port}"]}, "task": {"type": role, "index": 0}}
    return json.dumps(config, separators=(",", ":"))


def _volcano_env(spec: Spec, ref: PodTemplateRef, container: dict[str, Any]) -> dict[str, str]:
    plugins = resolve(spec.document, ("spec", "plugins"))
    plugins = plugins if isinstance(plugins, dict) else {}
    env: dict[str, str] = {}
    if "env" in plugins:
        env.update(VK_TASK_INDEX="0", VC_TASK_INDEX="0")
    if "svc" in plugins:
        task = re.sub(r"[^A-Za-z0-9_]", "_", ref.role).upper()
        env[f"VC_{task}_HOSTS"] = "localhost"
        env[f"VC_{task}_NUM"] = "1"
    if "pytorch" in plugins:
        flags = kinds.plugin_flags(plugins["pytorch"])
        port = flags.get("port") or str(VOLCANO_PORTS["pytorch"])
        env.update(MASTER_ADDR="localhost", MASTER_PORT=port, WORLD_SIZE="1", RANK="0")
    if "tensorflow" in plugins:
        flags = kinds.plugin_flags(plugins["tensorflow"])
        port = flags.get("port") or str(VOLCANO_PORTS["tensorflow"])
        env["TF_CONFIG"] = _tf_config(_tf_role(ref.role, flags), port)
    return env


def _tf_role(task: str, flags: dict[str, str]) -> str:
    """The TF_CONFIG task type of a Volcano task (the tensorflow plugin's role flags)."""
    for role in ("chief", "ps", "worker", "evaluator"):
        if flags.get(role, role) == task:
            return role
    return task


def _trainer_env(spec: Spec, ref: PodTemplateRef) -> dict[str, str]:
    if not _is_trainer_step(spec, ref) or not isinstance(_ml_policy(spec).get("torch"), dict):
        return {}
    procs = resolve(spec.document, ("spec", "trainer", "numProcPerNode"))
    if procs is None:
        procs = resolve(_ml_policy(spec), ("torch", "numProcPerNode"))
    return {
        "PET_NNODES": "1",
        "PET_NPROC_PER_NODE": str(procs if procs is not None else "auto"),
        "PET_NODE_RANK": "0",
        "PET_MASTER_ADDR": "localhost",
        "PET_MASTER_PORT": str(TRAINER_PORT),
    }


def _ml_policy(spec: Spec) -> dict[str, Any]:
    base = (kinds.RUNTIME_FIELD,) if which(spec) == "TrainJob" else ()
    policy = resolve(spec.document, (*base, "spec", "mlPolicy"))
    return policy if isinstance(policy, dict) else {}


def _is_trainer_step(spec: Spec, ref: PodTemplateRef) -> bool:
    refs = kinds.template_refs(spec.document, spec.kind)
    return kinds.default_role(spec.document, spec.kind, refs) == ref.role


def named_port(container: dict[str, Any], name: str) -> int | None:
    for port in container.get("ports") or []:
        if isinstance(port, dict) and port.get("name") == name and port.get("containerPort"):
            return int(port["containerPort"])
    return None


def add_operator_env(spec: Spec, ref: PodTemplateRef, container: dict[str, Any]) -> list[str]:
    """Add :func:`operator_env` to ``container``, except what its own env already sets;
    the names added."""
    have = {e.get("name") for e in container.get("env") or [] if isinstance(e, dict)}
    added = {k: v for k, v in operator_env(spec, ref, container).items() if k not in have}
    if added:
        container.setdefault("env", []).extend({"name": k, "value": v} for k, v in added.items())
    return list(added)


# --- a TrainJob's trainer -----------------------------------------------------------------


def overlay_trainer(spec: Spec, ref: PodTemplateRef, pod: dict[str, Any]) -> bool:
    """Lay a TrainJob's ``spec.trainer`` over the trainer step's ``node`` container, as
    the Trainer controller does: image, command and args replace the runtime's, env
    entries replace or add by name, ``resourcesPerNode`` becomes the resources.
    True when the pod was changed."""
    if which(spec) != "TrainJob" or not _is_trainer_step(spec, ref):
        return False
    trainer = resolve(spec.document, ("spec", "trainer"))
    if not isinstance(trainer, dict):
        return False
    containers = pod.get("containers") or []
    node = next((c for c in containers if c.get("name") == TRAINER_CONTAINER), None)
    if node is None:
        return False
    for field in ("image", "command", "args"):
        if trainer.get(field) is not None:
            node[field] = trainer[field]
    if isinstance(trainer.get("resourcesPerNode"), dict):
        node["resources"] = trainer["resourcesPerNode"]
    if isinstance(trainer.get("env"), list):
        env = [e for e in node.get("env") or [] if isinstance(e, dict)]
        names = {e.get("name") for e in trainer["env"] if isinstance(e, dict)}
        node["env"] = [e for e in env if e.get("name") not in names] + list(trainer["env"])
    return True


# --- Job settings that reach the pod --------------------------------------------------------


def job_spec_of(spec: Spec, ref: PodTemplateRef) -> dict[str, Any] | None:
    """The ``batch/v1`` Job spec that wraps the probed template, if the workload has one
    (a Job, a CronJob's job template, a JobSet's or a runtime's replicated job)."""
    kind = which(spec)
    if kind == "Job":
        node = resolve(spec.document, ("spec",))
    elif kind == "CronJob":
        node = resolve(spec.document, ("spec", "jobTemplate", "spec"))
    elif ref.element is not None and ref.path[len(ref.element) :] == (
        "template",
        "spec",
        "template",
    ):
        node = resolve(spec.document, (*ref.element, "template", "spec"))
    else:
        node = None
    return node if isinstance(node, dict) else None


def job_fields(spec: Spec, ref: PodTemplateRef) -> dict[str, Any]:
    """Fields of the probe Job carried from the workload's Job: an Indexed Job runs as
    an Indexed Job of one completion (index 0), so the Job controller gives the pod
    ``JOB_COMPLETION_INDEX`` and the completion-index annotation as it would."""
    job = job_spec_of(spec, ref)
    if job and job.get("completionMode") == "Indexed":
        return {"completionMode": "Indexed", "completions": 1, "parallelism": 1}
    return {}


# --- settings outside the template that still reach the probe ------------------------------


def carries(spec: Spec, ref: PodTemplateRef, path: tuple[PathSegment, ...]) -> bool:
    """Whether a setting at ``path``, outside the probed template, reaches the probe
    through the operator's emulation above (so a change in it is testable)."""
    kind = which(spec)
    job = _job_path(spec, ref)
    if job is not None and path == (*job, "completionMode"):
        return True
    if path == PRIORITY_CLASS:
        # isolation.copy_priority_class puts it on the probe pod, unless the template
        # names its own (which then wins, as with the operator)
        template = resolve(spec.document, (*ref.path, "spec")) if ref.path else None
        return not (isinstance(template, dict) and template.get("priorityClassName"))
    if kind == "PyTorchJob":
        return path == ("spec", "nprocPerNode")
    if kind == kinds.VOLCANO_JOB:
        return path[:2] == ("spec", "plugins") and len(path) > 2 and path[2] in VOLCANO_ENV
    # A TrainJob's runtime is read from the file (runtime.*): naming it adds nothing.
    if kind == "TrainJob" and (
        path[:2] == ("spec", "runtimeRef") or path == (kinds.RUNTIME_FIELD, "kind")
    ):
        return True
    if (kind == "TrainJob" or kind in kinds.RUNTIME_KINDS) and _is_trainer_step(spec, ref):
        trainer_fields = ("image", "command", "args", "env", "resourcesPerNode", "numProcPerNode")
        if path[:2] == ("spec", "trainer") and len(path) > 2 and path[2] in trainer_fields:
            return True
        policy = (kinds.RUNTIME_FIELD, "spec") if kind == "TrainJob" else ("spec",)
        return path[: len(policy) + 2] == (*policy, "mlPolicy", "torch")
    return False


# A Kubeflow job's priority class, set on the pods the operator makes.
PRIORITY_CLASS = ("spec", "runPolicy", "schedulingPolicy", "priorityClass")

# Volcano plugins whose whole effect on a pod is env a probe gets (svc also writes
# the other tasks' hosts files, which a probe does not have).
VOLCANO_ENV = frozenset({"env", "pytorch", "tensorflow"})


def _job_path(spec: Spec, ref: PodTemplateRef) -> tuple[Any, ...] | None:
    kind = which(spec)
    if kind == "Job":
        return ("spec",)
    if kind == "CronJob":
        return ("spec", "jobTemplate", "spec")
    if ref.element is not None and ref.path[len(ref.element) :] == ("template", "spec", "template"):
        return (*ref.element, "template", "spec")
    return None


# --- workloads that cannot be a world of one ----------------------------------------------

# Launcher flags that fix how many nodes (machines) the job spans.
_NODE_FLAGS = ("--nnodes", "--num_nodes", "--num-nodes", "--num_machines", "--num-machines")


def world_of_one(argv: list[str]) -> str | None:
    """What in a command makes a world of one impossible (``torchrun --nnodes=2``,
    ``deepspeed --num_nodes 2``, ``accelerate launch --num_machines 2``), else None.
    ``$(PET_NNODES)``-style references and ``1`` are fine."""
    words = _words(argv)
    for i, word in enumerate(words):
        name, sep, value = word.partition("=")
        if name not in _NODE_FLAGS:
            continue
        if not sep:
            value = words[i + 1] if i + 1 < len(words) else ""
        least = value.split(":", 1)[0]  # elastic min:max
        if least.isdigit() and int(least) > 1:
            return f"{name} {value}"
    return None


def _words(argv: list[str]) -> list[str]:
    """The words of an argv, with ``sh -c`` scripts split as a shell would."""
    words: list[str] = []
    for part in argv:
        try:
            words.extend(shlex.split(part, comments=False) if " " in part else [part])
        except ValueError:
            words.extend(part.split())
    return words
