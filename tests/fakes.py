"""An in-process backend for unit tests of the engine, session, report and step mode.

:class:`ScriptedRunner` implements the runner interface for real (it is not a mock of
our own logic): each probe "runs" by deciding, from the environment variables of the
probe's spec (the good spec with the probe's changes applied), whether the workload
fails, writes the output to the probe's log file like every runner does, and returns a
``RunResult``. The workload's rule is :func:`culprit_rule`: it fails with a CUDA error
when every variable of one culprit group has a value starting with "bad".

:func:`register` adds it to the backend registry as ``scripted`` for one test, so the
whole path (workflow, step mode, the CLI in-process) can use it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest

from clusterbisect import backends
from clusterbisect.config import BackendOptions
from clusterbisect.diff import Change
from clusterbisect.outcome import RunResult
from clusterbisect.runners.base import Fidelity, PrivateFile, Probe, RunnerContext
from clusterbisect.settings import ENV
from clusterbisect.specs.workload import spec_env

Rule = Callable[[dict[str, str]], tuple[int, str]]


def culprit_rule(*groups: Sequence[str]) -> Rule:
    """Exit 1 with a CUDA error when all variables of a group are bad; else exit 0."""

    def decide(env: dict[str, str]) -> tuple[int, str]:
        for group in groups:
            if group and all(env.get(name, "").startswith("bad") for name in group):
                joined = "+".join(group)
                return 1, f"step 1\nRuntimeError: CUDA error: illegal memory access ({joined})\n"
        return 0, "step 1\ntraining finished\n"

    return decide


@dataclass
class ScriptedOptions(BackendOptions):
    """The scripted backend's options: which variables make up each culprit group."""

    culprits: list[list[str]] = field(default_factory=list)


class ScriptedRunner:
    """Runs each probe in this process through a rule over its spec's environment."""

    name = "scripted"

    def __init__(self, context: RunnerContext, rule: Rule) -> None:
        self.context = context
        self.rule = rule
        self.batches: list[list[str]] = []  # the probe ids of every run() call
        self.closed = False

    def untestable(self, changes: list[Change]) -> dict[str, str]:
        return {c.key: "not an environment variable" for c in changes if c.category != ENV}

    def fidelity(self) -> Fidelity:
        return Fidelity(target="this process", runs="a rule over the spec's environment")

    def render(self, probe: Probe) -> dict[str, Any]:
        """What the probe sets, secret values hidden (the contract: no secret shown)."""
        env = self.context.redactor.env(spec_env(probe.spec))
        return {"backend": self.name, "env": env, "purpose": probe.purpose}

    def private(self, probe: Probe) -> PrivateFile:
        """The probe's environment with its real values (for a file of mode 0600)."""
        return PrivateFile(".json", json.dumps(spec_env(probe.spec)), "the probe's environment")

    def run(self, probes: list[Probe]) -> list[RunResult]:
        self.batches.append([p.probe_id for p in probes])
        results = []
        for probe in probes:
            code, output = self.rule(spec_env(probe.spec))
            probe.log_path.parent.mkdir(parents=True, exist_ok=True)
            probe.log_path.write_text(output)
            results.append(RunResult(code, output, log_path=str(probe.log_path)))
        return results

    def close(self) -> None:
        self.closed = True


def make_runner(context: RunnerContext, options: ScriptedOptions) -> ScriptedRunner:
    """The registry's factory for the ``scripted`` backend."""
    return ScriptedRunner(context, culprit_rule(*options.culprits))


def register(monkeypatch: pytest.MonkeyPatch) -> None:
    """Add the ``scripted`` backend to the registry for the current test."""
    monkeypatch.setitem(
        backends.BACKENDS,
        "scripted",
        backends.Backend(
            "scripted",
            "in-process probes for tests",
            ScriptedOptions,
            "fakes:make_runner",
            backends.Capabilities(),
        ),
    )
