"""One writer per state directory: an exclusive ``flock`` on ``STATE_DIR/lock``.

``run``, ``resume``, ``start``, ``replay`` and the step commands that record an outcome
hold it while they work; a second writer is refused at once, with the PID of the
process holding it. The kernel drops the lock when its holder exits, however it dies
(a SIGKILL included), so a crashed run never leaves a stale lock behind; the PID in the
file is only there to be named.

The file descriptor is not inherited by the probes (Python opens files close-on-exec),
so a probe that outlives its run cannot keep the session locked.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from clusterbisect.errors import HostError, InputError

LOCK_FILE = "lock"
# A holder writes its PID just after taking the lock: a refused writer reads the file
# again for this long if it finds no live PID there yet.
HOLDER_WAIT_S = 1.0


class StateLock:
    """An exclusive lock on a state directory, held until :meth:`release`."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, state_dir: Path, purpose: str) -> StateLock:
        """Take the lock of ``state_dir`` (which must exist) for ``purpose`` (a command
        name, shown to a refused writer). Raises ``InputError`` (exit 2) naming the
        holder's PID when another process holds it."""
        path = state_dir / LOCK_FILE
        while True:
            fd = _open(path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise HostError(f"{path}: cannot lock ({err.strerror})") from None
                raise _held(state_dir, path) from None
            # The holder before us may have removed the file (a discarded session)
            # after we opened it: a lock on a removed file locks nothing.
            if _same_file(fd, path):
                break
            os.close(fd)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {purpose}\n".encode())
        except OSError as err:
            os.close(fd)
            raise HostError(f"{path}: cannot write ({err.strerror})") from None
        return cls(path, fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self, remove: bool = False) -> None:
        """Let go of the lock (``remove``: delete the file first, for a discarded
        session). Idempotent."""
        if self._fd is None:
            return
        if remove:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)  # closing the last descriptor drops the flock
        self._fd = None


def holder(state_dir: Path) -> tuple[int, str] | None:
    """The PID and command written by the lock's holder, if the file names one."""
    try:
        text = (state_dir / LOCK_FILE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    pid, _, purpose = text.strip().partition(" ")
    return (int(pid), purpose) if pid.isdigit() else None


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise HostError(
            f"{path.parent}: the state directory cannot be written ({err.strerror})"
        ) from None


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _held(state_dir: Path, path: Path) -> InputError:
    deadline = time.monotonic() + HOLDER_WAIT_S
    found = holder(state_dir)
    while (found is None or not _alive(found[0])) and time.monotonic() < deadline:
        time.sleep(0.02)
        found = holder(state_dir)
    who = f"PID {found[0]}, `{found[1]}`" if found else "a process that has not named itself"
    return InputError(
        f"is in use by another clusterbisect ({who}); only one command may write a "
        "session at a time: wait for it to finish, or stop it",
        source=str(state_dir),
        details={"pid": found[0] if found else None, "lock": str(path)},
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
