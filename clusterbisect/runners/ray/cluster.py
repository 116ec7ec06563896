"""The local Ray head of a session: started for it, stopped by its own PIDs only.

When there is no ``--ray-address``/``RAY_ADDRESS``, a Ray head is started for the session
(``ray start --head --block`` as a child process in its own session, its own temp dir and
free ports). It runs with token authentication and a token written under the state dir
(mode 0600, passed in ``RAY_AUTH_TOKEN_PATH``), so nothing is written to ``~/.ray`` and no
other local user can submit jobs to it. ``stop()`` stops exactly that instance: by its PID
and its process tree, never ``ray stop``.

Probe drivers inherit the head's environment, so the head starts from a clean one
(:func:`node_environment`), not the caller's; it runs on the job's interpreter when
the entrypoint names one that has this Ray (:func:`choose_python`), and sees the
machine's GPUs. While it runs, ``local.json`` in the state dir records it, so a run
that was killed leaves something :func:`reap` can find and stop (``resume``,
``cleanup``). Its temp dir (a pip runtime_env per set of pins) is removed in the
background: the verdict never waits for it.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.metadata
import json
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
from typing import Any

from clusterbisect.errors import BackendError, InputError
from clusterbisect.extras import require
from clusterbisect.log import get_logger

log = get_logger(__name__)

RECORD_FILE = "local.json"

# Every port a head listens on (`ray start --NAME=PORT`): all free ones, so a session's
# Ray never meets another Ray on the machine.
PORT_FLAGS = (
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

# What the head (and so every probe driver) keeps of the caller's environment: enough to
# find programs, libraries and a home, and the machine's network, package-index and GPU
# settings, which a cluster node has too. Nothing else of the caller's reaches a probe.
NODE_ENV_KEEP = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LC_ALL",
        "TMPDIR",
        "SYSTEMROOT",
        "LD_LIBRARY_PATH",  # where the machine's CUDA libraries may be (GPU detection)
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "all_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "ALL_PROXY",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "CUDA_VISIBLE_DEVICES",
        "ROCR_VISIBLE_DEVICES",
        "HIP_VISIBLE_DEVICES",
    }
)
NODE_ENV_PREFIXES = ("PIP_", "UV_")  # pip's and uv's own settings (index, certificates)

# Asked of an interpreter: its Ray version, if it has Ray with the dashboard (Jobs API).
_RAY_CHECK = (
    "import importlib.metadata as m, importlib.util as u\n"
    "try:\n    v = m.version('ray')\nexcept m.PackageNotFoundError:\n    v = 'none'\n"
    "print(v if v == 'none' or u.find_spec('aiohttp') else 'no-dashboard')"
)


def node_environment(source: dict[str, str] | None = None) -> dict[str, str]:
    """The local Ray's environment: :data:`NODE_ENV_KEEP` of ``source`` (the caller's)."""
    source = dict(os.environ) if source is None else source
    return {
        k: v for k, v in source.items() if k in NODE_ENV_KEEP or k.startswith(NODE_ENV_PREFIXES)
    }


def choose_python(wanted: str | None, env: dict[str, str]) -> tuple[str, str]:
    """The interpreter for the local Ray, and why: ``wanted`` (the job's, found on the
    node's PATH) when it has this Ray with its dashboard, else the tool's own."""
    if not wanted:
        return sys.executable, "the tool's own (the entrypoint names no Python)"
    # A path is taken from here: the head runs in its temp dir.
    found = (
        os.path.abspath(wanted) if os.sep in wanted else shutil.which(wanted, path=env.get("PATH"))
    )
    if not found:
        return sys.executable, f"the tool's own ({wanted} is not on the PATH)"
    # Not realpath: a virtualenv's python is a symlink to its base interpreter.
    if os.path.abspath(found) == os.path.abspath(sys.executable):
        return sys.executable, "the job's (the tool's own)"
    ours = importlib.metadata.version("ray")
    try:
        done = subprocess.run(
            [found, "-c", _RAY_CHECK], capture_output=True, text=True, env=env, timeout=60
        )
        theirs = done.stdout.strip() if done.returncode == 0 else "none"
    except (OSError, subprocess.TimeoutExpired) as err:
        theirs = f"unusable: {err}"
    if theirs == ours:
        return found, "the job's"
    if theirs == "no-dashboard":
        return sys.executable, f"the tool's own ({found} has Ray without ray[default])"
    return sys.executable, f"the tool's own ({found} has Ray {theirs}, this tool {ours})"


def _psutil() -> Any:
    """Ray's psutil: Ray ships its own copy and puts it on the path when imported."""
    require("ray", "the Ray backend")
    import psutil

    return psutil


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalRayOptions:
    """How the local Ray of a session is started (used when there is no address)."""

    num_cpus: int | None = None  # default: this machine's CPUs
    num_gpus: int | None = None  # default: what Ray detects on this machine
    python: str | None = None  # the job's interpreter, when its entrypoint names one
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
        self.python = sys.executable
        self.python_note = ""
        self.cleaner: int | None = None  # the PID removing the temp dir, after stop()
        self.record_path: Path | None = None

    def start(self) -> None:
        """Start the head and wait until its Jobs API answers."""
        started = time.monotonic()
        # Ray's unix sockets live in the temp dir; their paths must stay short.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="cbray-"))
        private = self.private_dir or self.temp_dir
        private.mkdir(parents=True, exist_ok=True)
        self.log_path = private / "ray-start.log"
        env = node_environment()
        self.python, self.python_note = choose_python(self.options.python, env)
        log.info("ray.local_python", python=self.python, why=self.python_note)
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
        atexit.register(self.stop)
        for attempt in range(2):  # a free port can be taken before Ray binds it
            self._launch(env, private)
            if self._wait_ready(started):
                self.startup_s = time.monotonic() - started
                log.info("ray.local_ready", seconds=round(self.startup_s, 2))
                return
            self._halt()
            if attempt == 0 and "address already in use" in self.log_tail().lower():
                continue
            break
        tail = self.log_tail(600)
        self.stop()
        raise BackendError(
            f"could not start a local Ray for the session (see {self.log_path}): {tail}"
        )

    def _launch(self, env: dict[str, str], private: Path) -> None:
        """Start ``ray start --head --block`` on free ports, and record it."""
        assert self.log_path is not None and self.temp_dir is not None
        ports = {name: free_port() for name in PORT_FLAGS}
        argv = [
            self.python,
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
            "--min-worker-port=0",
            "--max-worker-port=0",
            *[f"--{name}={port}" for name, port in ports.items()],
        ]
        if self.options.num_gpus is not None:  # else Ray counts the machine's GPUs
            argv.append(f"--num-gpus={self.options.num_gpus}")
        if self.options.object_store_memory:
            argv.append(f"--object-store-memory={self.options.object_store_memory}")
        with open(self.log_path, "ab") as out:
            # The temp dir as working directory: a job without a working_dir must not
            # find the caller's files by accident.
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.temp_dir,
                start_new_session=True,
            )
        self.address = f"http://127.0.0.1:{ports['dashboard-port']}"
        self._record(private)
        log.info("ray.local_starting", pid=self.process.pid, address=self.address)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _wait_ready(self, started: float) -> bool:
        """Wait until the Jobs API answers and the head node is alive: the dashboard
        answers before the node has started (and on a loaded machine the node may
        never start), and a job submitted before the node is up finds no job agent."""
        deadline = started + self.options.startup_timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            if self._node_alive():
                return True
            time.sleep(0.2)
        return False

    def _node_alive(self) -> bool:
        request = urllib.request.Request(
            f"{self.address}/api/v0/nodes?limit=10", headers=self.headers()
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                nodes = json.load(answer)["data"]["result"]["result"]
        except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError):
            return False
        return any(node.get("state") == "ALIVE" for node in nodes)

    def running(self) -> bool:
        """Whether the head process still runs."""
        return self.process is not None and self.process.poll() is None

    def log_tail(self, limit: int = 2000) -> str:
        """The end of ``ray start``'s output (why the head did not start, or stopped)."""
        if not self.log_path or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-limit:].strip()

    def pids(self) -> list[int]:
        """The head process and every process it started (job drivers included)."""
        if self.process is None:
            return []
        psutil = _psutil()

        try:
            root = psutil.Process(self.process.pid)
            return [root.pid, *(p.pid for p in root.children(recursive=True))]
        except psutil.Error:
            return []

    def _record(self, private: Path) -> None:
        """Write ``local.json``: what :func:`reap` needs if this process dies first."""
        assert self.process is not None
        psutil = _psutil()

        self.record_path = private / RECORD_FILE
        record = {
            "pid": self.process.pid,
            "create_time": psutil.Process(self.process.pid).create_time(),
            "temp_dir": str(self.temp_dir),
            "address": self.address,
            "python": self.python,
        }
        self.record_path.write_text(json.dumps(record, indent=2) + "\n")

    def _halt(self) -> None:
        """Stop the head's processes (its files stay)."""
        process, self.process = self.process, None
        if process is not None:
            _stop_tree(process.pid, process)
            log.info("ray.local_stopped", pid=process.pid)

    def stop(self) -> None:
        """Stop this Ray instance only: SIGINT to the head, then SIGKILL to what remains.

        The temp dir is removed in the background (:attr:`cleaner` is that process).
        """
        self._halt()
        with contextlib.suppress(Exception):
            atexit.unregister(self.stop)
        if self.temp_dir is not None:
            self.cleaner = remove_in_background(self.temp_dir)
            self.temp_dir = None
        if self.token_path is not None:
            # The token opened a Ray that no longer exists; do not leave it lying around.
            self.token_path.unlink(missing_ok=True)
            self.token_path = None
        if self.record_path is not None:
            self.record_path.unlink(missing_ok=True)
            self.record_path = None


def _stop_tree(pid: int, process: subprocess.Popen[bytes] | None = None) -> None:
    """Stop the ``ray start --block`` process ``pid`` and everything it started."""
    psutil = _psutil()

    tree: list[Any] = []
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    # SIGINT makes `ray start --block` kill its daemons (SIGTERM would first drain the
    # node and wait for running jobs).
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGINT)
    if process is not None:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    _gone, alive = psutil.wait_procs(tree, timeout=15 if process is None else 5)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()  # psutil checks the PID still is that process
    psutil.wait_procs(alive, timeout=5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)  # the group we created


def remove_in_background(path: Path) -> int | None:
    """Remove ``path`` in a detached process (a local Ray's temp dir holds a virtualenv
    per set of pip pins: minutes of deleting that nobody should wait for). Its PID."""
    code = "import shutil, sys; shutil.rmtree(sys.argv[1], ignore_errors=True)"
    try:
        cleaner = subprocess.Popen(
            [sys.executable, "-c", code, str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # outlives us, and a Ctrl-C does not reach it
        )
    except OSError as err:
        log.warning("ray.temp_dir_left", path=str(path), error=str(err))
        return None
    log.info("ray.temp_dir_removing", path=str(path), pid=cleaner.pid)
    return cleaner.pid


def recorded(private_dir: Path) -> dict[str, Any] | None:
    """The local Ray a run recorded in ``private_dir`` (pid, temp_dir) and whether it
    still runs (``running``: its PID checked against its start time, so a reused PID is
    never taken for it); None when there is no record."""
    try:
        record = json.loads((private_dir / RECORD_FILE).read_text())
        pid, created = int(record["pid"]), float(record["create_time"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    psutil = _psutil()
    try:
        alive = abs(psutil.Process(pid).create_time() - created) < 1.0
    except psutil.Error:
        alive = False
    return {"pid": pid, "running": alive, "temp_dir": str(record.get("temp_dir") or "")}


def reap(private_dir: Path) -> dict[str, Any] | None:
    """Stop the local Ray a killed run left (recorded in ``private_dir``), if it still
    runs, by its PID (see :func:`recorded`). What was found, or None when there was
    nothing."""
    found = recorded(private_dir)
    if found is None:
        return None
    pid, alive = found["pid"], found["running"]
    if alive:
        _stop_tree(pid)
        log.info("ray.leftover_stopped", pid=pid)
    temp_dir = Path(found["temp_dir"])
    if found["temp_dir"] and temp_dir.is_dir():
        remove_in_background(temp_dir)
    (private_dir / "auth_token").unlink(missing_ok=True)
    (private_dir / RECORD_FILE).unlink(missing_ok=True)
    return {"pid": pid, "was_running": alive, "temp_dir": str(temp_dir)}
