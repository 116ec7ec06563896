"""The keeper of one local probe: starts the workload and, when it ends, ends the rest.

The local runner starts this file as a script (``python -I -S reaper.py JOB STATUS
PARENT``; it imports nothing of clusterbisect), in a session of its own. It reads the
probe's argv and environment from the pipe ``JOB`` (the environment is not passed on
its command line or in its own environment, so it is not bounded by them), then:

* becomes a *child subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``): a process of the
  probe that double-forks or calls ``setsid`` to escape its process group is
  reparented here, not to init, so it can still be found and killed;
* asks for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``): a killed clusterbisect
  leaves no probe behind;
* raises its soft stack limit when the argv and environment need it (Linux lets a
  process receive a quarter of ``RLIMIT_STACK`` in them, at most 6 MiB);
* starts the workload and waits. When the workload exits, or on SIGTERM/SIGINT/SIGHUP
  (a timeout, a Ctrl-C, its parent's death), every process left in its tree gets
  SIGTERM, then SIGKILL after the grace period, and all are reaped;
* writes one line to the pipe ``STATUS``: ``exit CODE SECONDS`` (a negative code is
  the signal that ended the workload) or ``error ERRNO MESSAGE`` when the workload
  could not be started.

The same keeper wraps a command another system starts on this machine (the
entrypoint of a Ray job on the session's own local Ray): ``python -I -S reaper.py
--wrap GRACE -- ARGV...`` inherits its environment, has no pipes, and exits with the
workload's code (128 + N for a signal N), after ending the rest of the tree.

Its output is the workload's: the probe's stdout and stderr are inherited, and this
script writes nothing there. It starts once per probe, so it imports little (no json,
no subprocess): the job is NUL-separated bytes (:func:`encode_job`), the workload is
started with ``posix_spawn``.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from collections.abc import Iterable, Mapping

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
# execve(2) takes at most a quarter of the stack limit in argv + environment, and never
# more than 3/4 of 8 MiB (the kernel's _STK_LIM) whatever the limit.
EXEC_MAX_BYTES = 6 << 20
POINTER_BYTES = 8


def exec_size(argv: list[bytes], env: list[bytes]) -> int:
    """The bytes execve(2) counts for ``argv`` and ``env`` (``NAME=value`` strings):
    the strings, their NULs and a pointer to each."""
    strings = sum(len(word) + 1 for word in [*argv, *env])
    return strings + POINTER_BYTES * (len(argv) + len(env) + 2)


def encode_job(argv: list[str], env: Mapping[str, str], grace: float) -> bytes:
    """The job a keeper reads: version, grace, argv count, argv, then ``NAME=value``."""
    words = [os.fsencode(word) for word in argv]
    items = [os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items()]
    return b"\0".join([b"1", repr(float(grace)).encode(), str(len(words)).encode(), *words, *items])


def decode_job(data: bytes) -> tuple[list[bytes], list[bytes], float]:
    version, grace, count, *rest = data.split(b"\0")
    if version != b"1":
        raise ValueError(f"unknown job version {version!r}")
    return rest[: int(count)], rest[int(count) :], float(grace)


def main(job_fd: int, status_fd: int, parent: int) -> int:
    os.set_inheritable(job_fd, False)
    os.set_inheritable(status_fd, False)
    wakeup = _signals()
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before we asked to be told
        _Stop.requested = True
    with os.fdopen(job_fd, "rb") as source:
        argv, env, grace = decode_job(source.read())
    if exec_size(argv, env) > (1 << 20):
        _raise_stack_limit(exec_size(argv, env))
    started = time.monotonic()
    try:
        pid = _spawn(argv, env)
    except OSError as err:
        _report(
            status_fd, f"error {err.errno or 0} {os.fsdecode(argv[0])!r}: {err.strerror or err}"
        )
        return 127
    code = _wait(pid, wakeup, grace)
    duration = time.monotonic() - started
    _end_the_rest(wakeup, grace)
    _report(status_fd, f"exit {code} {duration:.6f}")
    return code if code >= 0 else 128 - code


def wrap(grace: float, argv: list[str]) -> int:
    """Keep ``argv`` (run with this process's environment) and end its whole tree."""
    wakeup = _signals()
    _prctl(PR_SET_CHILD_SUBREAPER, 1)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    env = [k + b"=" + v for k, v in os.environb.items()]
    try:
        pid = _spawn([os.fsencode(word) for word in argv], env)
    except OSError as err:
        print(f"cannot start {argv[0]!r}: {err.strerror or err}", file=sys.stderr)
        return 127
    code = _wait(pid, wakeup, grace)
    _end_the_rest(wakeup, grace)
    return code if code >= 0 else 128 - code


def wrapped_command(argv: list[str], grace: float, python: str = sys.executable) -> list[str]:
    """``argv`` run under a keeper (see :func:`wrap`)."""
    return [
        python,
        "-I",
        "-S",
        os.path.abspath(__file__),
        "--wrap",
        repr(float(grace)),
        "--",
        *argv,
    ]


def _spawn(argv: list[bytes], env: list[bytes]) -> int:
    """Start the workload as subprocess would: the program looked up on the *probe's*
    PATH, the signals Python ignores (SIGPIPE, SIGXFSZ) back to their defaults."""
    environment = dict(item.split(b"=", 1) for item in env if b"=" in item)
    program = _which(argv[0], environment.get(b"PATH", os.defpath.encode()))
    defaults = [s for s in (signal.SIGPIPE, getattr(signal, "SIGXFSZ", None)) if s]
    return os.posix_spawn(program, argv, environment, setsigdef=defaults)


def _which(program: bytes, path: bytes) -> bytes:
    if b"/" in program:
        return program
    for folder in path.split(b":"):
        candidate = os.path.join(folder or b".", program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError(2, "No such file or directory", os.fsdecode(program))


class _Stop:
    requested = False


def _signals() -> int:
    """Handlers that only take note; every signal also wakes the loop (a pipe)."""

    def stop(signum: int, frame: object) -> None:
        _Stop.requested = True

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    read, write = os.pipe()
    os.set_blocking(write, False)
    os.set_blocking(read, False)
    signal.set_wakeup_fd(write, warn_on_full_buffer=False)
    return read


def _prctl(option: int, value: int) -> None:
    """prctl(2) through libc; a system without it (not Linux) only loses the escapees."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _raise_stack_limit(size: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    wanted = min(4 * size + (1 << 20), 4 * EXEC_MAX_BYTES)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_STACK, (wanted, hard))


def _wait(pid: int, wakeup: int, grace: float) -> int:
    """Wait for the workload (reaping orphans meanwhile); on a stop request, end the
    tree (SIGTERM, then SIGKILL after ``grace``). Its exit code."""
    told: set[int] = set()
    kill_at: float | None = None
    while True:
        code = _reap(pid)
        if code is not None:
            return code
        if not _Stop.requested:
            _sleep(wakeup, None)
            continue
        now = time.monotonic()
        kill_at = now + grace if kill_at is None else kill_at
        left = _descendants()
        if now >= kill_at:
            _signal(left, signal.SIGKILL)
        else:
            _signal(set(left) - told, signal.SIGTERM)
            told.update(left)
        _sleep(wakeup, 0.05)


def _end_the_rest(wakeup: int, grace: float) -> None:
    """The workload has exited: whatever it left running (``cmd &``, a daemon) ends."""
    told: set[int] = set()
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap_all()
        left = _descendants()
        if not left:
            return
        # A process forked while we were signalling was not told yet: tell it too.
        _signal(set(left) - told, signal.SIGTERM)
        told.update(left)
        _sleep(wakeup, min(0.05, max(0.0, deadline - time.monotonic())))
    for _ in range(100):  # a process may fork while it is being killed: go again
        _reap_all()
        left = _descendants()
        if not left:
            break
        _signal(left, signal.SIGKILL)
        _sleep(wakeup, 0.01)
    _reap_all()


def _reap(pid: int) -> int | None:
    """Reap every child that has exited; the workload's exit code if it is among them."""
    code = None
    while True:
        try:
            found, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return code
        if found == 0:
            return code
        if found == pid:
            code = os.waitstatus_to_exitcode(status)


def _reap_all() -> None:
    _reap(-1)


def _sleep(wakeup: int, timeout: float | None) -> None:
    with contextlib.suppress(InterruptedError):
        select.select([wakeup], [], [], timeout)
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while os.read(wakeup, 512):
            pass


def _descendants() -> list[int]:
    """Every live process below this one (orphans of the tree are reparented here)."""
    children: dict[int, list[int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != b"Z":
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [os.getpid()]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _report(fd: int, status: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, (status + "\n").encode())
        os.close(fd)


def read_status(data: bytes) -> dict[str, object]:
    """A keeper's status line as ``{"exit": CODE, "duration": S}`` or ``{"error": MESSAGE,
    "errno": N}``; ``{}`` if there is none (the keeper was killed first)."""
    kind, _, rest = data.decode("utf-8", errors="replace").strip().partition(" ")
    first, _, second = rest.partition(" ")
    try:
        if kind == "exit":
            return {"exit": int(first), "duration": float(second)}
        if kind == "error":
            return {"error": second, "errno": int(first)}
    except ValueError:
        pass
    return {}


if __name__ == "__main__":
    if sys.argv[1] == "--wrap":
        sys.exit(wrap(float(sys.argv[2]), sys.argv[4:]))
    sys.exit(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
