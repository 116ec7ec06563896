"""The local backend: each probe is a real subprocess on this machine.

The probe's environment is the current environment (or a minimal one with
``clean_env``), plus the good spec's environment variables, plus the applied
changes. Only environment variables can be applied here: image, resources and
scheduling changes are reported as untestable and left out of the search.

Each probe runs under a keeper (``reaper.py``) in a session of its own: the keeper is a
child subreaper, so every process the probe starts (a background ``cmd &``, a daemon
that double-forks or calls ``setsid``) is killed when the probe ends, on success,
failure, timeout, Ctrl-C and the death of clusterbisect itself. The environment goes
to the keeper through a pipe and the keeper raises the stack limit execve needs, so a
spec with tens of thousands of variables is not "Argument list too long".

The output is matched against the signature's regex line by line as it streams, and
kept as its head and tail (``output.py``).

A ``pip freeze`` pair is the exception: each probe runs in a virtual environment
with the probe's pins installed (``venvs.py``: one per pin set, cached), its ``bin``
first on PATH, so the workload's ``python`` is that environment's.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from clusterbisect.config import LocalOptions, with_tuning
from clusterbisect.diff import Change
from clusterbisect.errors import BackendError, InputError, Interrupted
from clusterbisect.files import open_private, private_dir
from clusterbisect.log import get_logger
from clusterbisect.outcome import RunResult, compile_line_pattern, signal_reason
from clusterbisect.runners.base import Fidelity, PrivateFile, Probe, RunnerContext
from clusterbisect.runners.output import HEAD_BYTES, TAIL_BYTES, OutputCapture
from clusterbisect.runners.reaper import EXEC_MAX_BYTES, encode_job, read_status
from clusterbisect.runners.venvs import InstallFailed, ProbeEnvironments, activate
from clusterbisect.settings import ENV, PIP
from clusterbisect.specs.model import PIP as PIP_FORMAT
from clusterbisect.specs.pip import install_lines, shown_lines
from clusterbisect.specs.workload import main_container, spec_env

# What a minimal environment keeps: enough to find programs and a home.
CLEAN_ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TERM", "USER", "SYSTEMROOT")
KILL_GRACE_S = 3.0
# The keeper ends the probe's tree within its grace; this long after, it is killed too.
KEEPER_MARGIN_S = 2.0
POLL_S = 0.02
REAPER = Path(__file__).with_name("reaper.py")
# Linux's limit on one argument or "NAME=value" string (MAX_ARG_STRLEN, with its NUL).
EXEC_MAX_STRING = 128 << 10

log = get_logger(__name__)


@dataclass
class LocalSettings(LocalOptions):
    """The user's options (``config.LocalOptions``) and the backend's own tuning."""

    head_bytes: int = HEAD_BYTES  # output kept per probe: its head and its tail
    tail_bytes: int = TAIL_BYTES
    kill_grace_s: float = KILL_GRACE_S
    cwd: str | None = None


@dataclass
class _Running:
    probe: Probe
    process: subprocess.Popen[bytes]
    log_file: IO[bytes]
    capture: OutputCapture
    reader: threading.Thread
    status_fd: int
    started: float
    deadline: float | None
    timed_out: bool = False
    kill_at: float | None = None  # stopped: SIGKILL the group if still there by then
    status: dict[str, Any] = field(default_factory=dict)


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
            if value is not None and _too_long(change.env_name, value):
                return "its value is longer than a process's variable may be (128 KiB)"
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

    def fidelity(self) -> Fidelity:
        """Probes are processes here; what they leave out is in ``untestable``."""
        return Fidelity(
            target="this machine",
            runs="the workload after `--` with the spec's environment variables",
        )

    def render(self, probe: Probe) -> dict[str, Any]:
        """The argv and the environment variables the probe sets, for display: secret
        values hidden (:meth:`private` has them)."""
        redactor = self.context.redactor
        env = spec_env(probe.spec, self.context.container or main_container(probe.spec))
        rendered: dict[str, Any] = {
            "backend": self.name,
            "argv": redactor.setting(list(probe.command)) if probe.command else None,
            "env": redactor.env(dict(sorted(env.items()))),
            "changes": [redactor.value(c.to_dict()) for c in probe.changes],
        }
        if self.pip:
            # What to install first, in a fresh virtual environment (credentials hidden).
            rendered["requirements"] = shown_lines(install_lines(probe.spec))
        return rendered

    def unset(self, probe: Probe) -> list[str]:
        """The variables a change touches that the probe must not inherit."""
        env = spec_env(probe.spec, self.context.container or main_container(probe.spec))
        return sorted(set(probe.env_names) - set(env))

    def private(self, probe: Probe) -> PrivateFile:
        """The probe's variables with their real values, as a POSIX shell file."""
        env = spec_env(probe.spec, self.context.container or main_container(probe.spec))
        lines = [
            f"# probe {probe.probe_id} of session {probe.session_id}: its environment with",
            "# the real values (mode 0600; do not print it). In a POSIX shell: . THIS_FILE",
            *(f"unset {name}" for name in self.unset(probe)),
            *(f"export {name}={shlex.quote(value)}" for name, value in sorted(env.items())),
        ]
        return PrivateFile(
            suffix=".env",
            text="\n".join(lines) + "\n",
            holds="the probe's environment variables with their real values",
            usage=". {private}",
        )

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
        """Start every probe, wait for all; on a timeout or Ctrl-C, end its tree."""
        running: list[_Running] = []
        try:
            for probe in probes:
                running.append(self._start(probe))
            self._wait(running)
        except KeyboardInterrupt as interrupt:
            self._stop(running)
            raise Interrupted("interrupted; the running probes were stopped") from interrupt
        finally:
            for item in running:
                self._finish(item)
        for item in running:
            if "error" in item.status:
                raise BackendError(f"cannot start the probe workload {item.status['error']}")
        return [self._result(item) for item in running]

    def close(self) -> None:
        """Nothing outlives ``run`` on this backend."""

    # --- process lifecycle --------------------------------------------------------------

    def _job(self, probe: Probe) -> bytes:
        """What the keeper is sent: the argv and the environment, checked against what
        execve(2) accepts (a clear error here, not E2BIG from the kernel later)."""
        argv = self._argv(probe)
        env = self.environment(probe)
        for name, value in env.items():
            if _too_long(name, value):
                raise InputError(
                    f"the variable is {len(value) >> 10} KiB; a process's environment "
                    "variable may be at most 128 KiB",
                    field=f"env.{name}",
                )
            if "=" in name or "\0" in name + value or not name:
                raise InputError(
                    "a process's environment variable cannot have this name or a NUL in its value",
                    field=f"env.{name}",
                )
        if any("\0" in word for word in argv):
            raise InputError("an argument of the workload contains a NUL", field="COMMAND")
        job = encode_job(argv, env, self.options.kill_grace_s)
        words, items = len(argv), len(env)
        size = len(job) + 8 * (words + items + 2)  # the strings, a NUL and a pointer each
        if size > EXEC_MAX_BYTES:
            raise InputError(
                f"the probe's environment and arguments come to {size / (1 << 20):.1f} MiB; "
                f"Linux passes at most {EXEC_MAX_BYTES >> 20} MiB to a process",
                field="COMMAND",
            )
        return job

    def _start(self, probe: Probe) -> _Running:
        job = self._job(probe)
        private_dir(probe.log_path.parent)
        # The workload's output, secrets and all: mode 0600. Closed in _finish.
        log_file = open_private(probe.log_path, "wb")
        job_read, job_write = os.pipe()
        status_read, status_write = os.pipe()
        try:
            # A new session makes the keeper and the workload a process group of their
            # own, away from the terminal's Ctrl-C (we stop them ourselves).
            process = subprocess.Popen(
                [sys.executable, "-I", "-S", str(REAPER)]
                + [str(job_read), str(status_write), str(os.getpid())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=self.options.cwd,
                start_new_session=True,
                pass_fds=(job_read, status_write),
            )
        except OSError as err:
            log_file.close()
            os.close(job_write)
            os.close(status_read)
            raise BackendError(f"cannot start a probe: {err}") from err
        finally:
            os.close(job_read)  # the keeper has its own copies now
            os.close(status_write)
        _send(job_write, job)
        capture = OutputCapture(
            log_file,
            compile_line_pattern(
                self.context.signature.fail_on if self.context.signature else None
            ),
            self.options.head_bytes,
            self.options.tail_bytes,
        )
        reader = threading.Thread(target=_copy, args=(process.stdout, capture), daemon=True)
        reader.start()
        now = time.monotonic()
        deadline = now + probe.timeout_s if probe.timeout_s else None
        log.debug("probe started", probe=probe.probe_id, pid=process.pid)
        return _Running(probe, process, log_file, capture, reader, status_read, now, deadline)

    def _wait(self, running: list[_Running]) -> None:
        """Until every keeper has exited: a probe past its deadline is stopped (SIGTERM
        to its group; SIGKILL if its keeper is not done in time), the others run on."""
        while any(item.process.poll() is None for item in running):
            now = time.monotonic()
            for item in running:
                if item.process.poll() is not None:
                    continue
                if item.deadline and now >= item.deadline and not item.timed_out:
                    item.timed_out = True
                    _signal(item, signal.SIGTERM)
                    item.kill_at = now + self.options.kill_grace_s + KEEPER_MARGIN_S
                elif item.kill_at is not None and now >= item.kill_at:
                    _signal(item, signal.SIGKILL)
                    item.kill_at = None
            time.sleep(POLL_S)

    def _stop(self, items: list[_Running]) -> None:
        """Stop these probes now (Ctrl-C): SIGTERM to every group at once, the keepers
        end their trees; a keeper not done within its grace is killed with its group."""
        for item in items:
            _signal(item, signal.SIGTERM)
        deadline = time.monotonic() + self.options.kill_grace_s + KEEPER_MARGIN_S
        for item in items:
            try:
                item.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(item, signal.SIGKILL)
                item.process.wait()

    def _finish(self, item: _Running) -> None:
        if item.process.poll() is None:
            self._stop([item])
        item.status = _read_status(item.status_fd)
        # The keeper has ended the probe's tree: the pipe is closed, the reader is done.
        item.reader.join(timeout=5)
        item.capture.close()
        item.log_file.close()

    def _result(self, item: _Running) -> RunResult:
        code = item.status.get("exit", item.process.returncode)
        duration = item.status.get("duration", time.monotonic() - item.started)
        # A keeper that ended without saying how the workload did (killed from outside,
        # out of memory) tells nothing about the workload: unresolved, never the failure.
        lost = None
        if "exit" not in item.status and not item.timed_out:
            lost = f"the probe's keeper ended without a status (exit {item.process.returncode})"
        return RunResult(
            exit_code=None if item.timed_out else code,
            output=item.capture.text(),
            timed_out=item.timed_out,
            reason=signal_reason(code) if not item.timed_out else "Timeout",
            infra_error=lost,
            duration_s=float(duration),
            log_path=str(item.probe.log_path),
            matched=item.capture.matched,
            scanned=True,
        )


def _signal(item: _Running, sig: int) -> None:
    """``sig`` to the probe's process group (its keeper's session), if it still runs."""
    if item.process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(item.process.pid, sig)


def _too_long(name: str, value: str) -> bool:
    if 4 * (len(name) + len(value)) + 2 <= EXEC_MAX_STRING:
        return False  # at most 4 bytes a character: no need to encode (89k variables)
    return len(os.fsencode(name)) + len(os.fsencode(value)) + 2 > EXEC_MAX_STRING


def _send(fd: int, data: bytes) -> None:
    """Write the job to the keeper, which reads it all at once (a keeper that died
    first reports itself through its exit status)."""
    try:
        with os.fdopen(fd, "wb") as pipe:
            pipe.write(data)
    except BrokenPipeError:
        pass


def _read_status(fd: int) -> dict[str, Any]:
    """The keeper's one status line ({} if it was killed before it wrote one)."""
    with os.fdopen(fd, "rb") as pipe:
        return read_status(pipe.read())


def _copy(stream: IO[bytes] | None, capture: OutputCapture) -> None:
    """Feed the probe's output to its capture as it arrives."""
    if stream is None:
        return
    for chunk in iter(lambda: stream.read1(65536), b""):  # type: ignore[attr-defined]
        capture.feed(chunk)


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
