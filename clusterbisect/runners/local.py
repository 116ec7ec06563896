"""The local backend: each probe is a real subprocess on this machine.

The probe's environment is the current environment (or a minimal one with
``clean_env``), plus the good spec's environment variables, plus the applied
changes. Only environment variables can be applied here: image, resources and
scheduling changes are reported as untestable and left out of the search.

A ``pip freeze`` pair is the exception: each probe runs in a virtual environment
with the probe's pins installed (``venvs.py``: one per pin set, cached), its ``bin``
first on PATH, so the workload's ``python`` is that environment's.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from clusterbisect.config import LocalOptions, with_tuning
from clusterbisect.diff import Change
from clusterbisect.errors import BackendError, InputError, Interrupted
from clusterbisect.log import get_logger
from clusterbisect.outcome import RunResult, signal_reason
from clusterbisect.redact import redact_env, secret_env_names
from clusterbisect.runners.base import Probe, RunnerContext
from clusterbisect.runners.venvs import InstallFailed, ProbeEnvironments, activate
from clusterbisect.settings import ENV, PIP
from clusterbisect.specs.model import PIP as PIP_FORMAT
from clusterbisect.specs.pip import install_lines, shown_lines
from clusterbisect.specs.workload import main_container, spec_env

# What a minimal environment keeps: enough to find programs and a home.
CLEAN_ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TERM", "USER", "SYSTEMROOT")
KILL_GRACE_S = 3.0
POLL_S = 0.02

log = get_logger(__name__)


@dataclass
class LocalSettings(LocalOptions):
    """The user's options (``config.LocalOptions``) and the backend's own tuning."""

    max_log_bytes: int = 1 << 20  # output kept per probe; the rest is counted, not stored
    cwd: str | None = None


@dataclass
class _Running:
    probe: Probe
    process: subprocess.Popen[bytes]
    log_file: IO[bytes]
    reader: threading.Thread
    started: float
    deadline: float | None
    captured: bytearray
    dropped: list[int]
    timed_out: bool = False


class LocalRunner:
    """Runs probes as subprocesses, each in its own process group."""

    name = "local"

    def __init__(
        self, context: RunnerContext | None = None, options: LocalOptions | None = None
    ) -> None:
        self.context = context or RunnerContext()
        self.options = with_tuning(options, LocalSettings)
        good = self.context.good
        self.pip = good is not None and good.format == PIP_FORMAT  # probes in venvs
        self._venvs: dict[str, Path] = {}  # probe id -> its environment
        self._environments: ProbeEnvironments | None = None

    def untestable(self, changes: list[Change]) -> dict[str, str]:
        """Everything but plain environment variables of the main container."""
        reasons: dict[str, str] = {}
        for change in changes:
            reason = self._why_untestable(change)
            if reason:
                reasons[change.key] = reason
        return reasons

    def _why_untestable(self, change: Change) -> str | None:
        if self.pip and change.category == PIP:
            return None  # installed in the probe's virtual environment
        if change.category != ENV or not change.env_name:
            return f"{change.category} settings cannot be applied to a local process"
        wanted = self.context.container
        if change.container and wanted and change.container != wanted:
            return f"belongs to container {change.container!r}, not {wanted!r}"
        for value in (change.good, change.bad):
            if value is not None and not isinstance(value, str):
                return "its value is a reference (secret, field) a local process cannot resolve"
        return None

    def environment(self, probe: Probe) -> dict[str, str]:
        """Base environment, minus every variable the changes touch, plus the spec's."""
        if self.options.clean_env:
            env = {k: v for k, v in os.environ.items() if k in CLEAN_ENV_KEEP}
        else:
            env = dict(os.environ)
        for name in probe.env_names:
            env.pop(name, None)  # so a variable the spec removes is really absent
        container = self.context.container or main_container(probe.spec)
        env.update(spec_env(probe.spec, container))
        venv = self._venvs.get(probe.probe_id)
        return activate(env, venv) if venv is not None else env

    def render(self, probe: Probe) -> dict[str, Any]:
        """The argv and the environment variables the probe sets (secrets redacted)."""
        env = spec_env(probe.spec, self.context.container or main_container(probe.spec))
        # Redact by name too: the good spec's own secrets are not among the changes.
        shown = redact_env(dict(sorted(env.items())), secret_env_names(probe.changes))
        rendered: dict[str, Any] = {
            "backend": self.name,
            "argv": list(probe.command) if probe.command else None,
            "env": shown,
            "changes": [c.to_dict() for c in probe.changes],
        }
        if self.pip:
            # What to install first, in a fresh virtual environment (credentials hidden).
            rendered["requirements"] = shown_lines(install_lines(probe.spec))
        return rendered

    def _argv(self, probe: Probe) -> list[str]:
        if not probe.command:
            raise InputError(
                "the local backend needs the probe workload after `--`, "
                "e.g. `clusterbisect run good.yaml bad.yaml -- python train.py`",
                field="COMMAND",
            )
        return list(probe.command)

    def run(self, probes: list[Probe]) -> list[RunResult]:
        """Install each probe's pins first (pip freeze pairs), then run the probes; a
        probe whose pins cannot be installed is an infrastructure error, not run."""
        failed = self._prepare_environments(probes) if self.pip else {}
        started = iter(self._run_processes([p for p in probes if p.probe_id not in failed]))
        return [failed[p.probe_id] if p.probe_id in failed else next(started) for p in probes]

    def _prepare_environments(self, probes: list[Probe]) -> dict[str, RunResult]:
        """Build (or find) the virtual environment of each probe's pin set."""
        if self._environments is None:
            self._environments = ProbeEnvironments(
                (self.context.private_dir or Path(".clusterbisect-local")) / "venvs",
                python=self.options.venv_python or _workload_python(self.context.command),
                installer=self.options.pip_installer,
            )
        failed: dict[str, RunResult] = {}
        for probe in probes:
            try:
                installed = self._environments.ensure(install_lines(probe.spec))
            except InstallFailed as err:
                probe.log_path.parent.mkdir(parents=True, exist_ok=True)
                probe.log_path.write_text(err.output, encoding="utf-8")
                failed[probe.probe_id] = RunResult(
                    exit_code=None,
                    output=err.output,
                    infra_error=f"installing the probe's pins: {err.message}",
                    log_path=str(probe.log_path),
                )
                continue
            self._venvs[probe.probe_id] = installed.path
        return failed

    def _run_processes(self, probes: list[Probe]) -> list[RunResult]:
        """Start every probe, wait for all, kill process groups on timeout or Ctrl-C."""
        running: list[_Running] = []
        try:
            for probe in probes:
                running.append(self._start(probe))
            self._wait(running)
        except KeyboardInterrupt as interrupt:
            for item in running:
                self._kill(item)
            raise Interrupted("interrupted; the running probes were stopped") from interrupt
        finally:
            for item in running:
                self._finish(item)
        return [self._result(item) for item in running]

    def close(self) -> None:
        """Nothing outlives ``run`` on this backend."""

    # --- process lifecycle --------------------------------------------------------------

    def _start(self, probe: Probe) -> _Running:
        argv = self._argv(probe)
        probe.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(probe.log_path, "wb")  # noqa: SIM115 - closed in _finish
        try:
            # A new session makes the probe its own process group, so a timeout or a
            # Ctrl-C kills the workload's children too.
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=self.environment(probe),
                cwd=self.options.cwd,
                start_new_session=True,
            )
        except OSError as err:
            log_file.close()
            raise BackendError(f"cannot start the probe workload {argv[0]!r}: {err}") from err
        captured = bytearray()
        dropped = [0]
        reader = threading.Thread(
            target=_copy_bounded,
            args=(process.stdout, log_file, captured, dropped, self.options.max_log_bytes),
            daemon=True,
        )
        reader.start()
        now = time.monotonic()
        deadline = now + probe.timeout_s if probe.timeout_s else None
        log.debug("probe started", probe=probe.probe_id, pid=process.pid)
        return _Running(probe, process, log_file, reader, now, deadline, captured, dropped)

    def _wait(self, running: list[_Running]) -> None:
        while any(item.process.poll() is None for item in running):
            now = time.monotonic()
            for item in running:
                if item.process.poll() is None and item.deadline and now >= item.deadline:
                    item.timed_out = True
                    self._kill(item)
            time.sleep(POLL_S)

    def _kill(self, item: _Running) -> None:
        if item.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, None)):
            try:
                os.killpg(item.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                item.process.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def _finish(self, item: _Running) -> None:
        if item.process.poll() is None:
            self._kill(item)
        item.process.wait()
        item.reader.join(timeout=5)
        if item.dropped[0]:
            note = f"\n[clusterbisect: {item.dropped[0]} more bytes of output not kept]\n"
            item.log_file.write(note.encode())
        item.log_file.close()

    def _result(self, item: _Running) -> RunResult:
        code = item.process.returncode
        return RunResult(
            exit_code=None if item.timed_out else code,
            output=item.captured.decode("utf-8", errors="replace"),
            timed_out=item.timed_out,
            reason=signal_reason(code) if not item.timed_out else "Timeout",
            duration_s=time.monotonic() - item.started,
            log_path=str(item.probe.log_path),
        )


def _copy_bounded(
    stream: IO[bytes] | None, sink: IO[bytes], captured: bytearray, dropped: list[int], limit: int
) -> None:
    """Copy the probe's output to its log, keeping at most ``limit`` bytes."""
    if stream is None:
        return
    for chunk in iter(lambda: stream.read1(65536), b""):  # type: ignore[attr-defined]
        room = limit - len(captured)
        if room > 0:
            kept = chunk[:room]
            captured.extend(kept)
            sink.write(kept)
            sink.flush()
        dropped[0] += max(0, len(chunk) - max(room, 0))


def _workload_python(command: list[str] | None) -> str | None:
    """The interpreter the workload names (``python3.11 train.py``), for its probes'
    virtual environments; None when it names none (then python3 on PATH)."""
    if not command:
        return None
    name = Path(command[0]).name
    if name.startswith("python") and (found := shutil.which(command[0])):
        return found
    return None


def make_runner(context: RunnerContext, options: LocalOptions) -> LocalRunner:
    """The local backend's runner (the registry's factory)."""
    return LocalRunner(context, options)
