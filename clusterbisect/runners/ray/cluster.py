"""The local Ray head of a session: started for it, stopped by its own PIDs only.

When there is no ``--ray-address``/``RAY_ADDRESS``, a Ray head is started for the session
(``ray start --head --block`` as a child process in its own session, its own temp dir and
free ports). It runs with token authentication and a token written under the state dir
(mode 0600, passed in ``RAY_AUTH_TOKEN_PATH``), so nothing is written to ``~/.ray`` and no
other local user can submit jobs to it. ``stop()`` stops exactly that instance: by its PID
and its process tree, never ``ray stop``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from clusterbisect.errors import BackendError, InputError
from clusterbisect.log import get_logger

log = get_logger(__name__)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalRayOptions:
    """How the local Ray of a session is started (used when there is no address)."""

    num_cpus: int | None = None  # default: this machine's CPUs
    auth: str = "token"  # token | disabled
    startup_timeout: float = 120.0
    object_store_memory: int | None = None
    # How often the local Ray tries to build a runtime_env (Ray's default: 3). A pin
    # that cannot be installed fails every time; 1 makes that verdict ~3x faster.
    runtime_env_retries: int | None = None

    def __post_init__(self) -> None:
        if self.auth not in ("token", "disabled"):
            raise InputError("expected 'token' or 'disabled'", field="local_auth")


class LocalRay:
    """A Ray head started for one session, and stopped by its own PIDs only.

    ``ray start --head --block`` runs as our child in a new session (so a terminal
    Ctrl-C reaches us, not Ray, and we decide the order of the cleanup). Ray gives its
    daemons kernel fate-sharing with that process; on top of that ``stop()`` records
    the whole process tree first and kills what is left of it by PID.
    """

    def __init__(self, options: LocalRayOptions, private_dir: Path | None = None) -> None:
        self.options = options
        self.private_dir = private_dir  # the token and the start log (default: temp dir)
        self.process: subprocess.Popen[bytes] | None = None
        self.temp_dir: Path | None = None
        self.address = ""
        self.token: str | None = None
        self.token_path: Path | None = None
        self.startup_s = 0.0
        self.log_path: Path | None = None

    def start(self) -> None:
        """Start the head and wait until its Jobs API answers."""
        started = time.monotonic()
        # Ray's unix sockets live in the temp dir; their paths must stay short.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="cbray-"))
        private = self.private_dir or self.temp_dir
        private.mkdir(parents=True, exist_ok=True)
        self.log_path = private / "ray-start.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        env["RAY_AUTH_MODE"] = self.options.auth
        if self.options.runtime_env_retries is not None:
            env["RUNTIME_ENV_RETRY_TIMES"] = str(max(1, self.options.runtime_env_retries))
        if self.options.auth == "token":
            self.token_path = private / "auth_token"
            self.token = secrets.token_hex(32)
            fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(self.token)
            env["RAY_AUTH_TOKEN_PATH"] = str(self.token_path)
        for attempt in range(2):  # a free port can be taken before Ray binds it
            ports = {
                name: _free_port()
                for name in (
                    "port",
                    "dashboard-port",
                    "ray-client-server-port",
                    "dashboard-agent-listen-port",
                    "dashboard-agent-grpc-port",
                    "runtime-env-agent-port",
                    "metrics-export-port",
                    "node-manager-port",
                    "object-manager-port",
                )
            }
            argv = [
                sys.executable,
                "-m",
                "ray.scripts.scripts",
                "start",
                "--head",
                "--block",
                "--disable-usage-stats",
                "--node-ip-address=127.0.0.1",
                "--dashboard-host=127.0.0.1",
                "--include-dashboard=true",
                f"--temp-dir={self.temp_dir}",
                f"--num-cpus={self.options.num_cpus or os.cpu_count() or 1}",
                "--num-gpus=0",
                "--min-worker-port=0",
                "--max-worker-port=0",
                *[f"--{name}={port}" for name, port in ports.items()],
            ]
            if self.options.object_store_memory:
                argv.append(f"--object-store-memory={self.options.object_store_memory}")
            with open(self.log_path, "ab") as out:
                self.process = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                )
            atexit.register(self.stop)
            self.address = f"http://127.0.0.1:{ports['dashboard-port']}"
            log.info("ray.local_starting", pid=self.process.pid, address=self.address)
            if self._wait_ready(started):
                self.startup_s = time.monotonic() - started
                log.info("ray.local_ready", seconds=round(self.startup_s, 2))
                return
            self.stop()
            if attempt == 0 and "address already in use" in self._log_tail().lower():
                continue
            break
        raise BackendError(
            "could not start a local Ray for the session "
            f"(see {self.log_path}): {self._log_tail(600)}"
        )

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _wait_ready(self, started: float) -> bool:
        deadline = started + self.options.startup_timeout
        request = urllib.request.Request(f"{self.address}/api/version", headers=self.headers())
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            try:
                with urllib.request.urlopen(request, timeout=2) as answer:
                    if answer.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        return False

    def _log_tail(self, limit: int = 2000) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-limit:].strip()

    def pids(self) -> list[int]:
        """The head process and every process it started (job drivers included)."""
        if self.process is None:
            return []
        import psutil  # a dependency of ray[default]

        try:
            root = psutil.Process(self.process.pid)
            return [root.pid, *(p.pid for p in root.children(recursive=True))]
        except psutil.Error:
            return []

    def stop(self) -> None:
        """Stop this Ray instance only: SIGINT to the head, then SIGKILL to what remains."""
        process, self.process = self.process, None
        if process is not None:
            import psutil

            tree: list[psutil.Process] = []
            with contextlib.suppress(psutil.Error):
                root = psutil.Process(process.pid)
                tree = [root, *root.children(recursive=True)]
            # SIGINT makes `ray start --block` kill its daemons (SIGTERM would first
            # drain the node and wait for running jobs).
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            _gone, alive = psutil.wait_procs(tree, timeout=5)
            for proc in alive:
                with contextlib.suppress(psutil.Error):
                    proc.kill()  # psutil checks the PID still is that process
            psutil.wait_procs(alive, timeout=5)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)  # the group we created
            log.info("ray.local_stopped", pid=process.pid)
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        if self.temp_dir is not None:
            shutil.rmtree(self.temp_dir, ignore_errors=True)
            self.temp_dir = None
        if self.token_path is not None:
            # The token opened a Ray that no longer exists; do not leave it lying around.
            self.token_path.unlink(missing_ok=True)
            self.token_path = None
