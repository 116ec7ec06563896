"""Shared test helpers: the command line as a user runs it, and the input files.

- ``CLI`` is the one way tests start the real command line (``python -m clusterbisect.cli``);
- the ``cli`` fixture runs it as a subprocess, checks that no traceback leaked, and
  parses its one JSON document on request (``cli.json(...)``);
- ``FIXTURES`` and ``EXAMPLES`` are the spec folders; ``env_pair`` writes a good and a
  bad env file with a workload script next to them;
- triage's small fleets: ``job``, ``pod``, ``failed_with`` build Jobs and Pods as
  ``kubectl`` exports them, ``export`` writes them as one ``List``, and the
  ``fleet_file`` fixture writes a fleet of ``train-NN`` Jobs from rows of (env, outcome);
- live tests must not be skipped where they are required (``make live``, ``make test``:
  ``CLUSTERBISECT_LIVE_REQUIRED=1``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
EXAMPLES = ROOT / "examples"
CLI = [sys.executable, "-m", "clusterbisect.cli"]
REQUIRED = os.environ.get("CLUSTERBISECT_LIVE_REQUIRED") == "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if REQUIRED and not os.environ.get("CLUSTERBISECT_KUBECONFIG"):
        raise pytest.UsageError(
            "CLUSTERBISECT_LIVE_REQUIRED=1 but CLUSTERBISECT_KUBECONFIG is not set: "
            "the live suite cannot run (start the cluster with `make cluster`)"
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if REQUIRED and report.skipped and item.get_closest_marker("live") is not None:
        report.outcome = "failed"
        report.longrepr = f"a live test was skipped where it must run: {report.longrepr}"


@dataclass
class Cli:
    """The real command line, run as a subprocess in ``cwd``."""

    cwd: Path

    def __call__(
        self,
        *args: str,
        cwd: Path | str | None = None,
        env: Mapping[str, str] | None = None,
        extra_env: Mapping[str, str] | None = None,
        input: str | None = None,
        timeout: float = 300,
        expect: int | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``clusterbisect ARGS``. ``env`` replaces the environment, ``extra_env``
        adds to it; ``expect`` checks the exit code. A traceback always fails the test."""
        environment = dict(env if env is not None else os.environ)
        environment.update(extra_env or {})
        proc = subprocess.run(
            [*CLI, *args],
            cwd=cwd or self.cwd,
            env=environment,
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert "Traceback" not in proc.stderr, proc.stderr
        if expect is not None:
            assert proc.returncode == expect, (args, proc.stdout, proc.stderr[-3000:])
        return proc

    def json(self, *args: str, **kwargs: Any) -> Any:
        """The one JSON document the command prints (``--json`` is added before ``--``)."""
        at = args.index("--") if "--" in args else len(args)
        if "--json" not in args and args[:1] not in (("call",), ("tools",)):
            args = (*args[:at], "--json", *args[at:])
        return json.loads(self(*args, **kwargs).stdout)

    def call(self, tool: str, arguments: Any, *, raw: str | None = None, **kwargs: Any) -> Any:
        """``clusterbisect call TOOL``: exit code and the one JSON document on stdout."""
        kwargs.setdefault("expect", None)
        proc = self(
            "call",
            tool,
            "--input",
            "-",
            input=raw if raw is not None else json.dumps(arguments),
            **kwargs,
        )
        return proc.returncode, json.loads(proc.stdout)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """Run the real CLI; the working directory defaults to the test's ``tmp_path``."""
    return Cli(tmp_path)


def culprit_keys(result: dict[str, Any]) -> list[list[str]]:
    """The culprits of a result as sorted key lists, sorted (order-free comparisons)."""
    return sorted(sorted(c["key"] for c in culprit["changes"]) for culprit in result["culprits"])


@dataclass
class EnvPair:
    """A good and a bad env file, and the argv of the workload written beside them."""

    good: str
    bad: str
    command: list[str]


@pytest.fixture
def env_pair(tmp_path: Path) -> Callable[..., EnvPair]:
    """Write ``good.env``/``bad.env`` (one variable per line) and ``work.py`` in tmp_path."""

    def write(
        good: Sequence[str] | Mapping[str, str],
        bad: Sequence[str] | Mapping[str, str],
        workload: str = "",
    ) -> EnvPair:
        for name, lines in (("good.env", good), ("bad.env", bad)):
            if isinstance(lines, Mapping):
                lines = [f"{k}={v}" for k, v in lines.items()]
            (tmp_path / name).write_text("".join(f"{line}\n" for line in lines))
        (tmp_path / "work.py").write_text(workload)
        return EnvPair(
            str(tmp_path / "good.env"),
            str(tmp_path / "bad.env"),
            [sys.executable, str(tmp_path / "work.py")],
        )

    return write


# --- triage: small hand-built fleets, as kubectl exports them -------------------------

TRAINER = "containers[trainer]."


def job(
    name: str,
    outcome: str = "succeeded",
    *,
    env: dict[str, str] | None = None,
    image: str = "registry.example.com/train:1",
    namespace: str = "ml",
    app: str = "train",
    uid: str | None = None,
    created: str = "2026-11-20T10:00:00Z",
    reason: str | None = None,
) -> dict[str, Any]:
    """A Job with one ``trainer`` container; ``outcome``: succeeded, failed or running."""
    uid = uid or f"uid-{name}"
    conditions: list[dict[str, Any]] = []
    if outcome == "succeeded":
        conditions = [{"type": "Complete", "status": "True"}]
    elif outcome == "failed":
        conditions = [
            {"type": "Failed", "status": "True", "reason": reason or "BackoffLimitExceeded"}
        ]
    status: dict[str, Any] = {"startTime": created}
    if conditions:
        status["conditions"] = conditions
    else:
        status["active"] = 1
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "labels": {"app": app},
            "creationTimestamp": created,
            "resourceVersion": "1",
        },
        "spec": {
            "backoffLimit": 0,
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}},
            "template": {
                "metadata": {"labels": {"app": app, "job-name": name, "controller-uid": uid}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "trainer",
                            "image": image,
                            "command": ["python", "train.py"],
                            "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
                        }
                    ],
                },
            },
        },
        "status": status,
    }


def pod(
    owner: dict[str, Any],
    *,
    exit_code: int = 0,
    reason: str | None = None,
    message: str | None = None,
    suffix: str = "x7k2p",
    owner_reference: bool = True,
) -> dict[str, Any]:
    """The pod of Job ``owner``, ended with ``exit_code`` (and reason, message)."""
    meta = owner["metadata"]
    name = f"{meta['name']}-{suffix}"
    terminated: dict[str, Any] = {
        "exitCode": exit_code,
        "reason": reason or ("Completed" if exit_code == 0 else "Error"),
        "finishedAt": "2026-11-20T11:00:00Z",
    }
    if message is not None:
        terminated["message"] = message
    metadata: dict[str, Any] = {
        "name": name,
        "namespace": meta["namespace"],
        "uid": f"pod-{name}",
        "labels": {"job-name": meta["name"], "controller-uid": meta["uid"]},
    }
    if owner_reference:
        metadata["ownerReferences"] = [
            {"kind": "Job", "name": meta["name"], "uid": meta["uid"], "controller": True}
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": owner["spec"]["template"]["spec"],
        "status": {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "containerStatuses": [{"name": "trainer", "state": {"terminated": terminated}}],
        },
    }


def export(path: Path, objects: list[dict[str, Any]]) -> str:
    """Write ``objects`` as ``kubectl get jobs,pods -o json`` does; the path as a string."""
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    return str(path)


NCCL = (
    "Traceback (most recent call last):\n"
    '  File "train.py", line 12, in <module>\n'
    "RuntimeError: NCCL error on rank {rank} at 0x7f{rank}a3b2c1 (pod {pod})"
)


def failed_with(j: dict[str, Any], rank: int = 0, text: str = NCCL) -> dict[str, Any]:
    """The failed pod of ``j`` with the NCCL failure (rank and addresses vary)."""
    name = f"{j['metadata']['name']}-x7k2p"
    return pod(j, exit_code=1, message=text.format(rank=rank, pod=name))


def secret_fleet(path: Path, token: str) -> str:
    """16 Jobs: the 8 with HF_TOKEN=``token`` fail with a message that quotes it."""
    text = "PermissionError: token " + token + " rejected on rank {rank} (pod {pod})"
    jobs, pods = [], []
    for i in range(16):
        bad = i < 8
        env = {"HF_TOKEN": token if bad else "hf_oldvalue000"}
        j = job(f"train-{i:02d}", "failed" if bad else "succeeded", env=env)
        jobs.append(j)
        pods.append(failed_with(j, i, text) if bad else pod(j))
    return export(path, jobs + pods)


FleetRows = Sequence[tuple[Mapping[str, str], str]]


@pytest.fixture
def fleet_file(tmp_path: Path) -> Callable[..., str]:
    """Write Jobs ``train-NN`` with the given env and outcome (``failed``: the NCCL
    failure, ``oom``: OOMKilled, ``succeeded``, ``running``), each finished one with
    its pod, to one export in ``tmp_path``; its path."""

    def write(rows: FleetRows, name: str = "fleet.json", **kw: Any) -> str:
        jobs, pods = [], []
        for i, (env, outcome) in enumerate(rows):
            status = "failed" if outcome in ("failed", "oom") else outcome
            j = job(f"train-{i:02d}", status, env=dict(env), **kw)
            jobs.append(j)
            if outcome == "failed":
                pods.append(failed_with(j, rank=i))
            elif outcome == "oom":
                pods.append(pod(j, exit_code=137, reason="OOMKilled"))
            elif outcome == "succeeded":
                pods.append(pod(j))
        return export(tmp_path / name, jobs + pods)

    return write
