"""The runner contract: take rendered probes, run them, report what happened.

A runner is made once per session use by its backend's factory (``backends.py``),
with a :class:`RunnerContext` (everything it may need to know about the session, and
where it may write) and the backend's options (``config.py``). It never opens the
session itself.

A runner owns the lifecycle of every job it starts: it must stop and clean up each
one on success, failure, timeout, error and interruption.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from clusterbisect.diff import Change
from clusterbisect.outcome import FailureSignature, RunResult
from clusterbisect.redact import Redactor
from clusterbisect.specs.model import Spec

# A render-only mode: probes are rendered (and, with "server", checked by the backend's
# API), never launched. Step mode always renders this way ("client").
DRY_RUN_MODES = ("client", "server")


@dataclass(frozen=True)
class RunnerContext:
    """What a runner is given about its session.

    ``good`` is the good spec (every probe is it plus some changes) and ``changes``
    every change of the session; ``command`` is the workload after ``--``;
    ``container`` the container whose settings are searched. ``dry_run`` ("client" or
    "server") asks for rendering without launching. ``signature`` is what counts as
    the failure: a backend that streams a probe's output can match it as it passes,
    so an error in the middle of a long log is kept. The paths belong to the session:
    ``state_dir`` is its directory (to keep it out of what a backend ships),
    ``manifests_dir`` receives rendered manifests, ``private_dir`` the backend's own
    files (a local Ray's token and log). ``redactor`` knows the session's secrets: what
    a runner shows (``render``) or says passes through it. Without a session (a test, a
    benchmark) the defaults describe a runner that knows nothing and writes nowhere.
    """

    session_id: str = "standalone"
    good: Spec | None = None
    changes: Sequence[Change] = ()
    command: list[str] | None = None
    container: str | None = None
    parallel: int = 1
    timeout_s: float | None = None
    dry_run: str | None = None
    signature: FailureSignature | None = None
    state_dir: Path | None = None
    manifests_dir: Path | None = None
    private_dir: Path | None = None
    redactor: Redactor = field(default_factory=Redactor)


@dataclass(frozen=True)
class PrivateFile:
    """The real values a rendered probe refers to, for a file of mode 0600.

    ``suffix`` names the file after the probe (``p001`` + ``.env``); ``holds`` says
    what it is, for people and models who must not read it; ``usage`` (optional) shows
    how to run the probe with it, with ``{private}`` and ``{rendered}`` standing for
    the two files' paths.
    """

    suffix: str
    text: str
    holds: str
    usage: str | None = None


@dataclass
class Probe:
    """One probe to run: the good spec with ``changes`` applied.

    ``probe_id`` is unique within the session (``p007``); ``log_path`` is where the
    runner writes the probe's combined output (bounded in size). ``purpose`` says why
    the search asked for it (``baseline-good``, ``search``, ``confirm-...``);
    ``env_names`` are the variables that any change of the session touches, so a
    backend that starts from an inherited environment can remove the ones the probe's
    spec does not set.
    """

    probe_id: str
    session_id: str
    spec: Spec  # the good spec with the changes applied
    changes: list[Change]
    log_path: Path
    timeout_s: float | None = None
    command: list[str] | None = None  # the workload argv, when given after `--`
    purpose: str = "search"
    env_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class NotCarried:
    """A setting of the good spec that no probe carries, and why (a job-level setting
    of a workload probed as one pod, say). ``value`` is redacted when secret."""

    setting: str
    value: Any
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"setting": self.setting, "value": self.value, "reason": self.reason}


@dataclass
class Fidelity:
    """How the probes differ from the job they reproduce, for the report and dry runs:
    ``target`` says where they run (``namespace 'ml' (the source's)``), ``runs`` what
    part of the job they run (``the Worker template of the TFJob``) and
    ``not_carried`` the settings of the job they leave out, each with the reason."""

    target: str = ""
    runs: str = ""
    not_carried: list[NotCarried] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "runs": self.runs,
            "not_carried": [item.to_dict() for item in self.not_carried],
        }


class Runner(Protocol):
    """Runs probes on one backend."""

    name: str

    def untestable(self, changes: list[Change]) -> dict[str, str]:
        """Changes this backend cannot apply, as ``{key: reason}``; left out of the search."""
        ...

    def fidelity(self) -> Fidelity:
        """Where probes run, what they run, and what of the good spec they leave out."""
        ...

    def render(self, probe: Probe) -> dict[str, Any]:
        """What would be launched for ``probe`` (for --dry-run and ``next``), as data.

        It holds no secret value (``context.redactor``): this is for people and
        models. Where it can, it refers to the values instead (a Kubernetes Job to the
        probe's Secret), so that it runs as written next to :meth:`private`'s file.
        """
        ...

    def private(self, probe: Probe) -> PrivateFile | None:
        """The real values :meth:`render` leaves out (an env file, a Secret), or None
        when it leaves none out. Written mode 0600 and never shown."""
        ...

    def run(self, probes: list[Probe]) -> list[RunResult]:
        """Run the probes concurrently and return one result per probe, in order.

        Raises ``Interrupted`` after cleaning up if interrupted, ``BackendError`` when
        the backend itself fails.
        """
        ...

    def close(self) -> None:
        """Release everything the runner started (clusters, sessions, leftovers)."""
        ...


def runner_notes(runner: Any) -> list[str]:
    """What a runner changed about every probe, for the report (say, volumes mounted
    read-only). A runner may offer it as ``notes() -> list[str]``; most have none."""
    notes = getattr(runner, "notes", None)
    return list(notes()) if callable(notes) else []
