"""Container processes: a memory cgroup each, the launcher, logs, exit and OOM."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .logs import LogWriter

LAUNCHER = Path(__file__).resolve().parent / "launcher.py"
CGROUP_ROOT = Path("/sys/fs/cgroup")


class Cgroups:
    """The memory cgroups of one test node: v1 (``memory`` hierarchy) or v2."""

    def __init__(self, name: str) -> None:
        if (CGROUP_ROOT / "memory" / "memory.limit_in_bytes").exists():
            self.version = 1
            self.base = CGROUP_ROOT / "memory" / name
        elif (CGROUP_ROOT / "cgroup.controllers").exists() and "memory" in (
            CGROUP_ROOT / "cgroup.controllers"
        ).read_text():
            self.version = 2
            self.base = CGROUP_ROOT / name
        else:
            raise RuntimeError("no memory cgroup controller: memory limits cannot be enforced")
        self.base.mkdir(parents=True, exist_ok=True)
        if self.version == 2:
            with contextlib.suppress(OSError):
                (self.base / "cgroup.subtree_control").write_text("+memory")

    def create(self, name: str, limit_bytes: int | None) -> Path:
        path = self.base / name
        path.mkdir(exist_ok=True)
        if limit_bytes is not None:
            limit_file = "memory.limit_in_bytes" if self.version == 1 else "memory.max"
            (path / limit_file).write_text(str(limit_bytes))
        return path

    def oom_kills(self, path: Path) -> int:
        source = "memory.oom_control" if self.version == 1 else "memory.events"
        with contextlib.suppress(OSError):
            for line in (path / source).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return 0

    @staticmethod
    def pids(path: Path) -> list[int]:
        try:
            return [int(p) for p in (path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def kill_and_remove(self, path: Path, timeout_s: float = 10.0) -> None:
        """SIGKILL every process left in the cgroup, then remove it."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            pids = self.pids(path)
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            path.rmdir()


@dataclass
class LaunchSpec:
    """What the launcher needs to start one container (see launcher.py)."""

    root: str
    scratch: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    uid: int
    gid: int
    groups: list[int]
    hostname: str
    mounts: list[dict[str, Any]]
    shm_size: str
    termination_log: dict[str, str] | None = None
    commands: dict[str, str] = field(default_factory=dict)
    commands_dir: str = "/.testnode/bin"


class Process:
    """One running container instance."""

    def __init__(
        self,
        spec: LaunchSpec,
        work_dir: Path,
        log_path: Path,
        cgroups: Cgroups,
        cgroup_name: str,
        memory_limit: int | None,
    ) -> None:
        self.cgroups = cgroups
        self.cgroup = cgroups.create(cgroup_name, memory_limit)
        work_dir.mkdir(parents=True, exist_ok=True)
        spec_path = work_dir / "launch.json"
        fd = os.open(spec_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(
                {**spec.__dict__, "cgroup_procs": [str(self.cgroup / "cgroup.procs")]}, handle
            )
        self.log = LogWriter(log_path)
        read_end, write_end = os.pipe()
        try:
            self.popen = subprocess.Popen(
                [sys.executable, "-I", "-S", str(LAUNCHER), str(spec_path), str(write_end)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(write_end,),
                start_new_session=True,  # its own process group: signals reach it alone
                env={"PATH": "/usr/bin:/bin"},
            )
        finally:
            os.close(write_end)
        self.pid = self.popen.pid
        assert self.popen.stdout is not None and self.popen.stderr is not None
        self._copiers = [
            threading.Thread(target=self.log.copy, args=(name, pipe), daemon=True)
            for name, pipe in (("stdout", self.popen.stdout), ("stderr", self.popen.stderr))
        ]
        for copier in self._copiers:
            copier.start()
        with os.fdopen(read_end, "rb") as errors:
            failure = errors.read()  # EOF at the exec, or the launcher's error
        self.start_error = failure.decode("utf-8", "replace") if failure else None
        self.started_at = time.time()

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def kill(self) -> None:
        """SIGKILL the container's process group and whatever is left in its cgroup."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        for pid in self.cgroups.pids(self.cgroup):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code (128 + signal for a signal), or None if still running."""
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return 128 - code if code < 0 else code

    def finish(self) -> bool:
        """After the main process exited: stop what is left, flush the log; OOM-killed?"""
        oom = self.cgroups.oom_kills(self.cgroup) > 0
        self.kill()
        for copier in self._copiers:
            copier.join(timeout=5)
        self.log.close()
        self.cgroups.kill_and_remove(self.cgroup)
        return oom
