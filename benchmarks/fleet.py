"""A fleet of exported Jobs and Pods after an upgrade rolled out in waves (for triage).

    .venv/bin/python benchmarks/fleet.py --jobs 1000 --culprit single --seed 3 -o fleet.json
    .venv/bin/python benchmarks/fleet.py --jobs 200 --culprit pair --format yaml -o fleet.yaml

Writes what ``kubectl get jobs,pods -A -o json`` (or ``-o yaml``) prints: a ``List`` of
Jobs, then their Pods, with the noise real exports carry (uids, resourceVersions,
controller labels, the generated selector, node names, the kube-api-access volume;
no managedFields, which kubectl leaves out by default). The ground truth goes to
``FILE.truth.json``.

The fleet, over two weeks:

- several workloads (teams, models, commands, resources, GPUs), each run many times
  with run-specific values (a run id, a learning rate, a batch size);
- **the image upgrade**: each workload moves to the new base image at its own time (a
  wave); the new image comes with nine env defaults changed or added at the same time,
  so the ten settings always change together (a bundle);
- **independent partial rollouts** of eight other platform settings: each starts at its
  own time and is then taken by a share of the jobs (so they are correlated with time,
  and with the image wave, as in real rollouts);
- **background failures**: 4% of the jobs fail for reasons that were there before
  (OOMKilled, preemption, deadline, a flaky data read), with their own signatures;
- a few jobs still running;
- **the culprit**: ``single`` (one of the rollouts), ``pair`` (two rollouts that fail
  only together), ``bundle`` (one of the image's env defaults) or ``none``. A job with
  the culprit fails with probability ``fail_rate`` with the culprit's signature (rank,
  pod name, addresses and times differ from job to job). The same failure also
  shows in 0.5% of the jobs without the culprit (``lookalike_rate``): it happened
  now and then before the upgrade too.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml

SPAN_DAYS = 14
START = datetime(2026, 11, 10, tzinfo=timezone.utc)
IMAGE = "registry.example.com/ml/base-train"
OLD_TAG, NEW_TAG = "2026.10.2", "2026.11.1"
PREFIX = "containers[trainer]."

# Platform env defaults that come with the image (old value, new value; None = unset).
IMAGE_ENV: dict[str, tuple[str | None, str | None]] = {
    "CUDA_MODULE_LOADING": ("LAZY", "EAGER"),
    "TORCH_FORCE_WEIGHTS_ONLY_LOAD": (None, "1"),
    "NCCL_NVLS_ENABLE": (None, "0"),
    "HF_HUB_ENABLE_HF_TRANSFER": (None, "1"),
    "CUDA_DEVICE_MAX_CONNECTIONS": ("1", "32"),
    "NCCL_IB_TIMEOUT": ("22", "23"),
    "TORCHINDUCTOR_CACHE_DIR": ("/tmp/inductor", "/cache/inductor"),
    "NCCL_SOCKET_NTHREADS": (None, "4"),
    "PYTHONFAULTHANDLER": ("0", "1"),
}


@dataclass(frozen=True)
class Rollout:
    """A platform setting rolled out to a share of the jobs from some time on."""

    key: str  # the key diff gives
    old: str | None
    new: str | None
    start: float  # fraction of the span
    share: float  # of the jobs created after the start


# Eight independent rollouts (their start and share are jittered per fleet).
ROLLOUTS = (
    Rollout(PREFIX + "env.NCCL_ALGO", None, "Tree", 0.35, 0.45),
    Rollout(
        PREFIX + "env.PYTORCH_CUDA_ALLOC_CONF",
        "max_split_size_mb:512",
        "expandable_segments:True",
        0.30,
        0.5,
    ),
    Rollout(PREFIX + "resources.limits.memory", "64Gi", "80Gi", 0.25, 0.4),
    Rollout("nodeSelector.gpu.example.com/model", "a100", "h100", 0.40, 0.35),
    Rollout(PREFIX + "env.OMP_NUM_THREADS", "8", "16", 0.20, 0.5),
    Rollout("priorityClassName", "batch-low", "batch-high", 0.45, 0.3),
    Rollout(PREFIX + "env.TORCH_NCCL_ASYNC_ERROR_HANDLING", "1", "3", 0.30, 0.4),
    Rollout("volumes[dshm].emptyDir.sizeLimit", "16Gi", "32Gi", 0.35, 0.45),
)

WORKLOADS = (
    ("bert-finetune", "nlp", "bert-large", 1, "16", 3),
    ("llama-pretrain", "llm", "llama-8b", 8, "64", 1),
    ("resnet-train", "vision", "resnet152", 2, "16", 3),
    ("whisper-asr", "speech", "whisper-medium", 4, "32", 2),
    ("t5-distill", "nlp", "t5-3b", 4, "32", 2),
    ("vit-pretrain", "vision", "vit-h14", 8, "64", 1),
)

SIGNATURES = {
    "single": (
        "torch.distributed.DistBackendError: NCCL error in: "
        "/opt/pytorch/torch/csrc/distributed/c10d/NCCLUtils.hpp:{line}, unhandled system "
        "error (run with NCCL_DEBUG=INFO for details), NCCL version 2.21.5\n"
        "[rank{rank}]:[E{date} {time} ProcessGroupNCCL.cpp:1536] NET/IB : Got async event "
        ": port error on {pod} ({ip}) at {hex}"
    ),
    "pair": (
        "RuntimeError: CUDA error: an illegal memory access was encountered\n"
        "CUDA kernel errors might be asynchronously reported at some other API call, so "
        "the stacktrace below might be incorrect.\n"
        "[rank{rank}] torch.cuda.synchronize failed on {pod} at {hex}, step {step}"
    ),
    "bundle": (
        "_pickle.UnpicklingError: Weights only load failed. This file can still be "
        "loaded, to do so you have two options (checkpoint /ckpt/{pod}/step-{step}.pt, "
        "rank {rank})"
    ),
}
TRACEBACK = (
    "{time} INFO starting epoch {epoch} on {pod}\n"
    "Traceback (most recent call last):\n"
    '  File "/app/train.py", line {line}, in <module>\n'
    "    main()\n"
    '  File "/app/train.py", line {line2}, in main\n'
    "    trainer.fit(model)\n"
)
BACKGROUND = ("oom", "preempted", "deadline", "data")


@dataclass
class FleetConfig:
    """What to generate."""

    jobs: int = 1000
    seed: int = 0
    culprit: str = "single"  # single | pair | bundle | none
    fail_rate: float = 0.9  # failure probability of a job with the culprit
    background_rate: float = 0.04
    lookalike_rate: float = 0.005  # the culprit's failure without the culprit
    running_share: float = 0.01  # the newest jobs still run
    workloads: int = 5


@dataclass
class Truth:
    """What the generator did: the culprit keys and the image bundle's keys."""

    culprit: str
    culprit_keys: list[str]
    bundle_keys: list[str]
    rollout_keys: list[str]
    counts: dict[str, int] = field(default_factory=dict)


def _stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def _suffix(rng: random.Random, n: int = 5) -> str:
    return "".join(rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(n))


class _Generator:
    def __init__(self, config: FleetConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        rng = self.rng
        self.workloads = list(WORKLOADS[: max(1, min(config.workloads, len(WORKLOADS)))])
        # Each workload takes the new image at its own time: the waves.
        self.waves = {w[0]: rng.uniform(0.3, 0.75) for w in self.workloads}
        self.rollouts = [
            Rollout(
                r.key,
                r.old,
                r.new,
                min(0.9, max(0.05, r.start + rng.uniform(-0.1, 0.1))),
                min(0.9, max(0.1, r.share + rng.uniform(-0.1, 0.1))),
            )
            for r in ROLLOUTS
        ]
        picks = rng.sample(range(len(self.rollouts)), 2)
        env_keys = sorted(IMAGE_ENV)
        if config.culprit == "single":
            self.culprit_keys = [self.rollouts[picks[0]].key]
        elif config.culprit == "pair":
            self.culprit_keys = [self.rollouts[i].key for i in picks]
        elif config.culprit == "bundle":
            self.culprit_keys = [PREFIX + "env." + rng.choice(env_keys)]
        elif config.culprit == "none":
            self.culprit_keys = []
        else:
            raise ValueError(f"unknown culprit {config.culprit!r}")
        self.bundle_keys = [PREFIX + "image"] + [PREFIX + "env." + k for k in env_keys]
        self.counts: dict[str, int] = {
            "succeeded": 0,
            "failed": 0,
            "running": 0,
            "culprit": 0,
            "background": 0,
            "lookalike": 0,
        }

    # --- one job -------------------------------------------------------------------

    def job_and_pod(self, index: int) -> tuple[dict[str, Any], dict[str, Any]]:
        rng, config = self.rng, self.config
        when = (index + rng.random()) / config.jobs  # creation time, as a share of the span
        workload, team, model, gpus, cpus, _weight = rng.choices(
            self.workloads, weights=[w[5] for w in self.workloads]
        )[0]
        upgraded = when >= self.waves[workload]
        values: dict[str, str | None] = {}  # settings this job has, by key
        for rollout in self.rollouts:
            taken = when >= rollout.start and rng.random() < rollout.share
            values[rollout.key] = rollout.new if taken else rollout.old
        env_defaults = {k: (new if upgraded else old) for k, (old, new) in IMAGE_ENV.items()}
        for k, v in env_defaults.items():
            values[PREFIX + "env." + k] = v
        name = f"{workload}-{index:05d}"
        created = START + timedelta(days=SPAN_DAYS * when)
        outcome, failure = self._outcome(when, values, upgraded)
        job_uid = str(uuid.UUID(int=rng.getrandbits(128)))
        pod_name = f"{name}-{_suffix(rng)}"
        env = self._env(env_defaults, values, model, index)
        container = self._container(upgraded, values, env, gpus, cpus, model, name)
        template_spec = self._pod_spec(container, values)
        job = self._job(name, team, workload, job_uid, created, template_spec, outcome, failure)
        pod = self._pod(
            name, pod_name, team, workload, job_uid, created, template_spec, outcome, failure
        )
        return job, pod

    def _outcome(
        self, when: float, values: dict[str, str | None], upgraded: bool
    ) -> tuple[str, str | None]:
        rng, config = self.rng, self.config
        if when > 1 - config.running_share:
            self.counts["running"] += 1
            return "running", None
        if rng.random() < config.background_rate:
            self.counts["failed"] += 1
            self.counts["background"] += 1
            return "failed", rng.choice(BACKGROUND)
        if (
            self.culprit_keys
            and all(values.get(k) == self._new_value(k) for k in self.culprit_keys)
            and rng.random() < config.fail_rate
        ):
            self.counts["failed"] += 1
            self.counts["culprit"] += 1
            return "failed", config.culprit
        if self.culprit_keys and rng.random() < config.lookalike_rate:
            # The same failure without the culprit: it happened now and then before.
            self.counts["failed"] += 1
            self.counts["lookalike"] += 1
            return "failed", config.culprit
        self.counts["succeeded"] += 1
        return "succeeded", None

    def _new_value(self, key: str) -> str | None:
        for rollout in self.rollouts:
            if rollout.key == key:
                return rollout.new
        return IMAGE_ENV[key.rsplit(".", 1)[-1]][1]

    def _env(
        self, defaults: dict[str, str | None], values: dict[str, str | None], model: str, index: int
    ) -> list[dict[str, Any]]:
        rng = self.rng
        env: dict[str, str | None] = {
            "MODEL_NAME": model,
            "DATASET": f"s3://datasets/{model}/v3",
            "RUN_ID": str(uuid.UUID(int=rng.getrandbits(128))),
            "LEARNING_RATE": rng.choice(["1e-4", "3e-4", "1e-3"]),
            "BATCH_SIZE": rng.choice(["16", "32", "64"]),
            "NCCL_DEBUG": "WARN",
            "TOKENIZERS_PARALLELISM": "false",
            "CHECKPOINT_DIR": f"/ckpt/{model}/run-{index:05d}",
            "WANDB_PROJECT": model,
            "HF_TOKEN": "hf_" + "x" * 6 + str(index % 3),  # a secret (redacted when shown)
        }
        env.update(defaults)
        for key, value in values.items():
            if key.startswith(PREFIX + "env."):
                env[key[len(PREFIX + "env.") :]] = value
        entries: list[dict[str, Any]] = [
            {"name": k, "value": v} for k, v in sorted(env.items()) if v is not None
        ]
        entries.append(
            {
                "name": "WANDB_API_KEY",
                "valueFrom": {"secretKeyRef": {"key": "api-key", "name": "wandb"}},
            }
        )
        entries.append(
            {
                "name": "POD_IP",
                "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}},
            }
        )
        return entries

    def _container(
        self,
        upgraded: bool,
        values: dict[str, str | None],
        env: list[dict[str, Any]],
        gpus: int,
        cpus: str,
        model: str,
        name: str,
    ) -> dict[str, Any]:
        memory = values[PREFIX + "resources.limits.memory"]
        return {
            "name": "trainer",
            "image": f"{IMAGE}:{NEW_TAG if upgraded else OLD_TAG}",
            "imagePullPolicy": "IfNotPresent",
            "command": ["python", "/app/train.py"],
            "args": [f"--model={model}", f"--run-name={name}", "--epochs=3"],
            "env": env,
            "ports": [{"containerPort": 29500, "name": "dist", "protocol": "TCP"}],
            "resources": {
                "limits": {"cpu": cpus, "memory": memory, "nvidia.com/gpu": str(gpus)},
                "requests": {"cpu": cpus, "memory": "64Gi", "nvidia.com/gpu": str(gpus)},
            },
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "FallbackToLogsOnError",
            "volumeMounts": [
                {"mountPath": "/data", "name": "dataset", "readOnly": True},
                {"mountPath": "/dev/shm", "name": "dshm"},
                {"mountPath": "/ckpt", "name": "checkpoints"},
            ],
        }

    def _pod_spec(self, container: dict[str, Any], values: dict[str, str | None]) -> dict[str, Any]:
        return {
            "containers": [container],
            "dnsPolicy": "ClusterFirst",
            "imagePullSecrets": [{"name": "registry-creds"}],
            "nodeSelector": {"gpu.example.com/model": values["nodeSelector.gpu.example.com/model"]},
            "priorityClassName": values["priorityClassName"],
            "restartPolicy": "Never",
            "schedulerName": "default-scheduler",
            "securityContext": {},
            "serviceAccountName": "trainer",
            "terminationGracePeriodSeconds": 30,
            "tolerations": [
                {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}
            ],
            "volumes": [
                {"name": "dataset", "persistentVolumeClaim": {"claimName": "datasets-ro"}},
                {
                    "emptyDir": {
                        "medium": "Memory",
                        "sizeLimit": values["volumes[dshm].emptyDir.sizeLimit"],
                    },
                    "name": "dshm",
                },
                {"name": "checkpoints", "persistentVolumeClaim": {"claimName": "checkpoints"}},
            ],
        }

    def _job(
        self,
        name: str,
        team: str,
        workload: str,
        uid: str,
        created: datetime,
        template_spec: dict[str, Any],
        outcome: str,
        failure: str | None,
    ) -> dict[str, Any]:
        controller = {
            "batch.kubernetes.io/controller-uid": uid,
            "batch.kubernetes.io/job-name": name,
            "controller-uid": uid,
            "job-name": name,
        }
        labels = {"app": workload, "team": team}
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "annotations": {"batch.kubernetes.io/job-tracking": ""},
                "creationTimestamp": _stamp(created),
                "generation": 1,
                "labels": labels,
                "name": name,
                "namespace": team,
                "resourceVersion": str(self.rng.randrange(10**7, 10**8)),
                "uid": uid,
            },
            "spec": {
                "activeDeadlineSeconds": 86400,
                "backoffLimit": 0,
                "completionMode": "NonIndexed",
                "completions": 1,
                "manualSelector": False,
                "parallelism": 1,
                "podReplacementPolicy": "TerminatingOrFailed",
                "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}},
                "suspend": False,
                "template": {
                    "metadata": {"creationTimestamp": None, "labels": {**labels, **controller}},
                    "spec": template_spec,
                },
            },
            "status": self._job_status(created, outcome, failure),
        }

    def _job_status(self, created: datetime, outcome: str, failure: str | None) -> dict[str, Any]:
        start = created + timedelta(seconds=5)
        end = start + timedelta(minutes=self.rng.randint(5, 600))
        if outcome == "running":
            return {
                "active": 1,
                "ready": 1,
                "startTime": _stamp(start),
                "terminating": 0,
                "uncountedTerminatedPods": {},
            }
        if outcome == "succeeded":
            types = [
                (
                    "SuccessCriteriaMet",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                ),
                ("Complete", "CompletionsReached", "Reached expected number of succeeded pods"),
            ]
            counts = {"succeeded": 1}
        else:
            reason, message = (
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            )
            if failure == "deadline":
                reason, message = (
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                )
            types = [("FailureTarget", reason, message), ("Failed", reason, message)]
            counts = {"failed": 1}
        finished = {"completionTime": _stamp(end)} if outcome == "succeeded" else {}
        return {
            **finished,
            "conditions": [
                {
                    "lastProbeTime": _stamp(end),
                    "lastTransitionTime": _stamp(end),
                    "message": message,
                    "reason": reason,
                    "status": "True",
                    "type": kind,
                }
                for kind, reason, message in types
            ],
            "ready": 0,
            "startTime": _stamp(start),
            "terminating": 0,
            "uncountedTerminatedPods": {},
            **counts,
        }

    def _pod(
        self,
        job_name: str,
        pod_name: str,
        team: str,
        workload: str,
        job_uid: str,
        created: datetime,
        template_spec: dict[str, Any],
        outcome: str,
        failure: str | None,
    ) -> dict[str, Any]:
        rng = self.rng
        node = f"gpu-node-{rng.randrange(400):03d}"
        ip = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        token_volume = f"kube-api-access-{_suffix(rng)}"
        spec = json.loads(json.dumps(template_spec))
        spec["nodeName"] = node
        spec["serviceAccount"] = "trainer"
        spec["volumes"].append(
            {
                "name": token_volume,
                "projected": {
                    "defaultMode": 420,
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {
                            "configMap": {
                                "items": [{"key": "ca.crt", "path": "ca.crt"}],
                                "name": "kube-root-ca.crt",
                            }
                        },
                    ],
                },
            }
        )
        spec["containers"][0]["volumeMounts"].append(
            {
                "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                "name": token_volume,
                "readOnly": True,
            }
        )
        start = created + timedelta(seconds=8)
        end = start + timedelta(minutes=rng.randint(5, 600))
        state, phase = self._container_state(outcome, failure, start, end, pod_name, ip)
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "creationTimestamp": _stamp(created),
                "generateName": f"{job_name}-",
                "labels": {
                    "app": workload,
                    "team": team,
                    "batch.kubernetes.io/controller-uid": job_uid,
                    "batch.kubernetes.io/job-name": job_name,
                    "controller-uid": job_uid,
                    "job-name": job_name,
                },
                "name": pod_name,
                "namespace": team,
                "ownerReferences": [
                    {
                        "apiVersion": "batch/v1",
                        "blockOwnerDeletion": True,
                        "controller": True,
                        "kind": "Job",
                        "name": job_name,
                        "uid": job_uid,
                    }
                ],
                "resourceVersion": str(rng.randrange(10**7, 10**8)),
                "uid": str(uuid.UUID(int=rng.getrandbits(128))),
            },
            "spec": spec,
            "status": {
                "conditions": [
                    {
                        "lastProbeTime": None,
                        "lastTransitionTime": _stamp(start),
                        "status": "True",
                        "type": kind,
                    }
                    for kind in ("PodReadyToStartContainers", "Initialized", "PodScheduled")
                ],
                "containerStatuses": [
                    {
                        "containerID": f"containerd://{rng.getrandbits(256):064x}",
                        "image": template_spec["containers"][0]["image"],
                        "imageID": f"{IMAGE}@sha256:{rng.getrandbits(256):064x}",
                        "lastState": {},
                        "name": "trainer",
                        "ready": outcome == "running",
                        "restartCount": 0,
                        "started": outcome == "running",
                        "state": state,
                    }
                ],
                "hostIP": f"10.0.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                "phase": phase,
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "qosClass": "Burstable",
                "startTime": _stamp(start),
            },
        }

    def _container_state(
        self, outcome: str, failure: str | None, start: datetime, end: datetime, pod: str, ip: str
    ) -> tuple[dict[str, Any], str]:
        rng = self.rng
        if outcome == "running":
            return {"running": {"startedAt": _stamp(start)}}, "Running"
        terminated: dict[str, Any] = {
            "containerID": f"containerd://{rng.getrandbits(256):064x}",
            "startedAt": _stamp(start),
            "finishedAt": _stamp(end),
        }
        if outcome == "succeeded":
            terminated.update(exitCode=0, reason="Completed")
            return {"terminated": terminated}, "Succeeded"
        fields = {
            "rank": rng.randrange(64),
            "pod": pod,
            "ip": ip,
            "hex": f"0x{rng.getrandbits(48):x}",
            "line": rng.randrange(100, 2000),
            "line2": rng.randrange(100, 400),
            "date": end.strftime("%m%d"),
            "time": end.strftime("%H:%M:%S.%f"),
            "step": rng.randrange(100, 90000),
            "epoch": rng.randrange(3),
        }
        if failure == "oom":
            terminated.update(exitCode=137, reason="OOMKilled")
        elif failure == "preempted":
            terminated.update(
                exitCode=143,
                reason="Error",
                message=(
                    f"received SIGTERM at {_stamp(end)}: node preempted (spot capacity reclaimed)"
                ),
            )
        elif failure == "deadline":
            terminated.update(exitCode=137, reason="Error")
        elif failure == "data":
            terminated.update(
                exitCode=1,
                reason="Error",
                message=TRACEBACK.format(**fields)
                + (
                    "botocore.exceptions.ReadTimeoutError: Read timeout on endpoint URL: "
                    f'"https://s3.us-east-1.amazonaws.com/datasets/shard-{fields["step"]:05d}.tar"'
                ),
            )
        else:
            message = SIGNATURES[str(failure)].format(**fields)
            terminated.update(
                exitCode=1, reason="Error", message=TRACEBACK.format(**fields) + message
            )
        return {"terminated": terminated}, "Failed"


def generate(config: FleetConfig) -> tuple[list[dict[str, Any]], Truth]:
    """The fleet's objects (all Jobs, then all Pods) and its ground truth."""
    gen = _Generator(config)
    jobs, pods = [], []
    for index in range(config.jobs):
        job, pod = gen.job_and_pod(index)
        jobs.append(job)
        pods.append(pod)
    truth = Truth(
        config.culprit, gen.culprit_keys, gen.bundle_keys, [r.key for r in gen.rollouts], gen.counts
    )
    return jobs + pods, truth


def as_list(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The objects as ``kubectl get -o json`` wraps them."""
    return {
        "apiVersion": "v1",
        "items": objects,
        "kind": "List",
        "metadata": {"resourceVersion": ""},
    }


def write(
    path: Path, objects: list[dict[str, Any]], fmt: str = "json", indent: int | None = 4
) -> None:
    """Write the objects like ``kubectl get jobs,pods -o json|yaml`` does (``indent``
    None: compact JSON, as ``kubectl ... -o json | jq -c`` gives)."""
    document = as_list(objects)
    with path.open("w", encoding="utf-8") as out:
        if fmt == "json":
            json.dump(document, out, indent=indent)
        else:
            yaml.dump(
                document, out, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--culprit", choices=("single", "pair", "bundle", "none"), default="single")
    parser.add_argument("--fail-rate", type=float, default=0.9)
    parser.add_argument("--background-rate", type=float, default=0.04)
    parser.add_argument("--workloads", type=int, default=5)
    parser.add_argument("--format", choices=("json", "yaml"), default="json")
    parser.add_argument("--compact", action="store_true", help="JSON without indentation")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    config = FleetConfig(
        jobs=args.jobs,
        seed=args.seed,
        culprit=args.culprit,
        fail_rate=args.fail_rate,
        background_rate=args.background_rate,
        workloads=args.workloads,
    )
    objects, truth = generate(config)
    write(args.output, objects, args.format, None if args.compact else 4)
    truth_path = args.output.with_name(args.output.name + ".truth.json")
    truth_path.write_text(json.dumps(asdict(truth), indent=2) + "\n")
    print(f"{args.output}: {len(objects)} objects; truth in {truth_path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
