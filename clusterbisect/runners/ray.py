"""The Ray backend: each probe is a Ray job, submitted through the Jobs API.

Why jobs and not tasks: a probe must behave like the job it reproduces. A Ray job
runs the spec's ``entrypoint`` as a driver process with the probe's ``runtime_env``
(env vars, pip, working_dir, ...) applied by Ray itself; the Jobs API
(``JobSubmissionClient``) reports the driver's real exit code, keeps its logs, tells
a runtime_env that cannot be built (``RUNTIME_ENV_SETUP_FAILURE``) apart from a
workload failure, and can stop a job. A Ray task would run a Python function inside
an already started worker: no exit code, no shell entrypoint, and an exception in
our wrapper would look like the workload's.

Where the jobs run:

- ``RayOptions.address`` (``--ray-address``) or ``RAY_ADDRESS``: an existing cluster's
  dashboard/Jobs address, e.g. ``http://127.0.0.1:8265`` or a KubeRay head service
  ``http://NAME-head-svc.NS.svc:8265``. Authentication is Ray's own (``RAY_AUTH_MODE``,
  ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``).
- otherwise a local Ray head started for the session (``ray start --head --block`` as
  a child process in its own session, its own temp dir and free ports). It runs with
  token authentication and a token written under the state dir (mode 0600, passed in
  ``RAY_AUTH_TOKEN_PATH``), so nothing is written to ``~/.ray`` and no other local
  user can submit jobs to it. ``close()`` stops exactly that instance: by its PID and
  its process tree, never ``ray stop``.

``ray`` is imported only inside this module's functions, and this module only when
the Ray backend is chosen.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import functools
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusterbisect.diff import Change
from clusterbisect.errors import BackendError, InputError, Interrupted
from clusterbisect.extras import require
from clusterbisect.log import get_logger
from clusterbisect.outcome import RunResult, signal_reason
from clusterbisect.redact import redact_env, secret_env_names
from clusterbisect.runners.base import Probe
from clusterbisect.session import Session
from clusterbisect.settings import (
    COMMAND,
    YAML_SEGMENT,
    container_argv,
    main_container,
    runtime_env_of,
    spec_env,
)
from clusterbisect.settings import ENV as ENV_SETTING
from clusterbisect.specs.model import ENV, KUBERNETES, RAY_JOB, SNAPSHOT, Spec

log = get_logger(__name__)

# Fields of a Ray job submission (``JobSubmissionClient.submit_job``) a spec may set.
SUBMIT_FIELDS = (
    "entrypoint",
    "runtime_env",
    "metadata",
    "entrypoint_num_cpus",
    "entrypoint_num_gpus",
    "entrypoint_memory",
    "entrypoint_resources",
    "entrypoint_label_selector",
)
# KubeRay RayJob ``spec`` fields that are part of the Ray job itself.
RAYJOB_FIELDS = {
    "entrypoint": "entrypoint",
    "runtimeEnvYAML": "runtime_env",
    "metadata": "metadata",
    "entrypointNumCpus": "entrypoint_num_cpus",
    "entrypointNumGpus": "entrypoint_num_gpus",
    "entrypointResources": "entrypoint_resources",
}
# runtime_env fields that need a container runtime (podman) on the Ray nodes.
CONTAINER_FIELDS = frozenset({"container", "image_uri"})
# Ray error types that mean the workload never ran properly: unresolved, not fail.
INFRA_ERROR_TYPES = frozenset(
    {
        "RUNTIME_ENV_SETUP_FAILURE",
        "JOB_SUPERVISOR_ACTOR_START_TIMEOUT",
        "JOB_SUPERVISOR_ACTOR_START_FAILURE",
        "JOB_SUPERVISOR_ACTOR_UNSCHEDULABLE",
        "JOB_SUPERVISOR_ACTOR_UNKNOWN_FAILURE",
        "JOB_SUPERVISOR_ACTOR_DIED",
        "JOB_ENTRYPOINT_COMMAND_START_ERROR",
    }
)
UNSCHEDULABLE = "UNSCHEDULABLE"
# Lines the Jobs API adds at the top of every driver log. They are Ray's, not the
# workload's, and the second one quotes the entrypoint, which a --fail-on regex
# could otherwise match.
_PREAMBLE = (
    re.compile(r"^\S+ \S+\s+INFO job_manager\.py:\d+ -- Runtime env is setting up\.$"),
    re.compile(r"^Running entrypoint for job \S+: .*$"),
)
_PIP_ERROR = re.compile(
    r"^(ERROR: .*|.*No matching distribution.*|.*Could not find a version.*)$", re.M
)


@dataclass
class RayOptions:
    """How probes run on Ray (JSON-serialisable; the CLI fills the first group).

    ``address`` None means ``RAY_ADDRESS``, and without it a local Ray head started
    for the session. Resource flags override what the spec asks for.
    """

    address: str | None = None
    parallel: int = 1
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None
    entrypoint_memory: int | None = None
    timeout: float | None = None  # per probe, counted from RUNNING (Probe.timeout_s wins)
    state_dir: Path | None = None
    # A job still PENDING (waiting for resources or its runtime_env) after this long
    # is stopped as unschedulable: an infrastructure outcome.
    pending_timeout: float = 600.0
    poll_s: float = 0.25
    stop_grace_s: float = 20.0  # wait this long for a stopped job to reach a final state
    max_log_bytes: int = 1 << 20  # the tail of the driver log kept per probe
    # A Kubernetes workload's container whose env and command the job takes (--container;
    # default: the main container).
    container: str | None = None
    # The local Ray started when there is no address.
    local_num_cpus: int | None = None  # default: this machine's CPUs
    local_auth: str = "token"  # token | disabled
    local_startup_timeout: float = 120.0
    local_object_store_memory: int | None = None
    # How often the local Ray tries to build a runtime_env (Ray's default: 3). A pin
    # that cannot be installed fails every time; 1 makes that verdict ~3x faster.
    local_runtime_env_retries: int | None = None

    def __post_init__(self) -> None:
        if self.state_dir is not None and not isinstance(self.state_dir, Path):
            self.state_dir = Path(self.state_dir)
        if self.local_auth not in ("token", "disabled"):
            raise InputError("expected 'token' or 'disabled'", field="local_auth")
        if self.parallel < 1:
            raise InputError("expected at least 1", field="parallel")


@dataclass
class Submission:
    """One probe rendered as a Ray job submission (``submit_job`` keyword arguments)."""

    entrypoint: str
    runtime_env: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    resources: dict[str, Any] = field(default_factory=dict)  # entrypoint_num_cpus, ...

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {"entrypoint": self.entrypoint, "runtime_env": self.runtime_env}
        if self.metadata:
            out["metadata"] = self.metadata
        out.update({k: v for k, v in self.resources.items() if v is not None})
        return out


def make_runner(options: RayOptions) -> RayRunner:
    """The Ray runner for ``options`` (connects or starts Ray on the first ``run``)."""
    return RayRunner(options)


# --- rendering (pure: no Ray needed) -------------------------------------------------


def render_submission(
    spec: Spec, command: list[str] | None = None, options: RayOptions | None = None
) -> Submission:
    """The Ray job submission for ``spec`` (already the good spec plus the probe's changes).

    The entrypoint is the spec's, unless ``command`` (the argv after ``--``) is given:
    Ray runs the entrypoint through a shell, so the argv is quoted with ``shlex.join``
    and every argument reaches the workload exactly as given, with no shell expansion.
    """
    options = options or RayOptions()
    fields = _job_fields(spec, options.container)
    runtime_env = copy.deepcopy(fields.get("runtime_env") or {})
    if not isinstance(runtime_env, dict):
        raise InputError("expected a mapping", source=spec.source, field="runtime_env")
    runtime_env = _normalise_runtime_env(runtime_env, spec.source)
    entrypoint = shlex.join(command) if command else fields.get("entrypoint")
    if not entrypoint or not isinstance(entrypoint, str):
        raise InputError(
            "the Ray job has no entrypoint; give it in the spec or after `--`",
            source=spec.source,
            field="entrypoint",
        )
    metadata = fields.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise InputError("expected a mapping of strings", source=spec.source, field="metadata")
    resources: dict[str, Any] = {}
    for name in SUBMIT_FIELDS[3:]:
        if fields.get(name) is not None:
            resources[name] = fields[name]
    if isinstance(resources.get("entrypoint_resources"), str):
        try:  # KubeRay keeps entrypointResources as a JSON string
            resources["entrypoint_resources"] = json.loads(resources["entrypoint_resources"])
        except ValueError:
            raise InputError(
                "expected a JSON mapping", source=spec.source, field="entrypointResources"
            ) from None
    for name in ("entrypoint_num_cpus", "entrypoint_num_gpus", "entrypoint_memory"):
        flag = getattr(options, name)
        if flag is not None:
            resources[name] = flag
    return Submission(
        entrypoint=entrypoint,
        runtime_env=runtime_env,
        metadata={str(k): str(v) for k, v in metadata.items()},
        resources=resources,
    )


def _job_fields(spec: Spec, container: str | None = None) -> dict[str, Any]:
    """The submission fields of a Ray job spec, a KubeRay RayJob, a Kubernetes workload
    or an env file."""
    doc = spec.document
    if spec.format == RAY_JOB:
        return {k: doc.get(k) for k in SUBMIT_FIELDS if doc.get(k) is not None}
    if spec.format == KUBERNETES and spec.kind == "RayJob":
        body = doc.get("spec") or {}
        out = {
            ray: body.get(kube) for kube, ray in RAYJOB_FIELDS.items() if body.get(kube) is not None
        }
        out["runtime_env"] = runtime_env_of(spec)
        return out
    if spec.format == KUBERNETES and main_container(spec) is not None:
        # A Job (or Deployment, PyTorchJob, ...) run as a Ray job: its main container's
        # plain env vars become env_vars, its command and args the entrypoint.
        name = container or main_container(spec)
        fields: dict[str, Any] = {"runtime_env": {"env_vars": spec_env(spec, name)}}
        argv = container_argv(spec, name)
        if argv:
            fields["entrypoint"] = shlex.join(argv)
        return fields
    if spec.format in (ENV, SNAPSHOT):
        # An env dump run on Ray: its variables become the job's env_vars.
        return {"runtime_env": {"env_vars": spec_env(spec)}}
    raise InputError(
        f"the Ray backend runs Ray job specs, KubeRay RayJobs, Kubernetes workloads and env "
        f"files, not a {spec.kind}; use --backend kubernetes or local",
        source=spec.source,
    )


def _normalise_runtime_env(env: dict[str, Any], source: str) -> dict[str, Any]:
    """Make a runtime_env submittable: string env values, local paths made absolute.

    Relative ``working_dir`` and ``py_modules`` paths are read relative to the spec
    file's directory (like ``docker compose`` does), falling back to the current
    directory; URIs (``s3://``, ``https://``, ``gcs://``) are left alone.
    """
    env_vars = env.get("env_vars")
    if isinstance(env_vars, dict):
        env["env_vars"] = {str(k): _env_text(v) for k, v in env_vars.items() if v is not None}
    base = Path(source).resolve().parent if source and Path(source).is_file() else None
    if isinstance(env.get("working_dir"), str):
        env["working_dir"] = _local_path(env["working_dir"], base)
    if isinstance(env.get("py_modules"), list):
        env["py_modules"] = [
            _local_path(m, base) if isinstance(m, str) else m for m in env["py_modules"]
        ]
    return env


def _local_path(value: str, base: Path | None) -> str:
    if "://" in value or Path(value).is_absolute():
        return value
    if base is not None and (base / value).exists():
        return str((base / value).resolve())
    if Path(value).exists():
        return str(Path(value).resolve())
    return value  # Ray reports it (a submission or runtime_env error, unresolved)


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def why_untestable(
    change: Change, *, rayjob: bool, command_given: bool, podman: bool
) -> str | None:
    """Why Ray cannot apply ``change`` to a probe job, or None when it can."""
    path = change.path
    fields = [s for s in path if isinstance(s, str)]
    if not fields:
        return (
            None
            if change.key.startswith(("runtime_env", "entrypoint"))
            else "not a Ray job setting"
        )
    if rayjob or fields[0] in ("spec", "apiVersion", "kind"):
        if fields[0] != "spec" or len(fields) < 2 or fields[1] not in RAYJOB_FIELDS:
            return (
                "a Kubernetes setting of the RayJob (its Ray cluster, pods or lifecycle); "
                "a probe job on a running Ray cluster cannot apply it, use --backend kubernetes"
            )
        name = RAYJOB_FIELDS[fields[1]]
        inner = fields[2:] if YAML_SEGMENT in path or name == "runtime_env" else []
    elif fields[0] == "env" and change.env_name:
        return None  # an env file: the variables become runtime_env env_vars
    elif fields[0] in SUBMIT_FIELDS:
        name, inner = fields[0], fields[1:]
    else:
        return f"{fields[0]!r} is not a field of a Ray job submission"
    if name == "entrypoint" and command_given:
        return (
            "the workload after `--` replaces the entrypoint, so this change would have no effect"
        )
    if name == "runtime_env" and inner and inner[0] in CONTAINER_FIELDS and not podman:
        return f"runtime_env.{inner[0]} needs podman on the Ray nodes, and the local Ray has none"
    return None


def why_untestable_in_workload(
    change: Change, *, container: str | None, command_given: bool
) -> str | None:
    """Why a Ray job cannot apply ``change`` of a Kubernetes workload, or None.

    Only the main container carries over: its plain env vars (as runtime_env env_vars)
    and its command and args (as the entrypoint). The image, resources, volumes and
    the pod's scheduling belong to Kubernetes.
    """
    use_kubernetes = "a Ray job cannot apply it; use --backend kubernetes"
    if container is None or change.container != container:
        return f"a Kubernetes setting outside the {container or 'main'} container; {use_kubernetes}"
    if change.category == ENV_SETTING and change.env_name:
        for value in (change.good, change.bad):
            if value is not None and not isinstance(value, str):
                return "its value is a reference (secret, field) a Ray job cannot resolve"
        return None
    if change.category == COMMAND:
        if command_given:
            return (
                "the workload after `--` replaces the entrypoint, "
                "so this change would have no effect"
            )
        return None
    return (
        f"{change.category} settings belong to the pod and cannot be applied to a Ray job; "
        "use --backend kubernetes"
    )


# --- the local Ray of a session -------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalRay:
    """A Ray head started for one session, and stopped by its own PIDs only.

    ``ray start --head --block`` runs as our child in a new session (so a terminal
    Ctrl-C reaches us, not Ray, and we decide the order of the cleanup). Ray gives its
    daemons kernel fate-sharing with that process; on top of that ``stop()`` records
    the whole process tree first and kills what is left of it by PID.
    """

    def __init__(self, options: RayOptions) -> None:
        self.options = options
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
        private = self.options.state_dir / "ray" if self.options.state_dir else self.temp_dir
        private.mkdir(parents=True, exist_ok=True)
        self.log_path = private / "ray-start.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        env["RAY_AUTH_MODE"] = self.options.local_auth
        if self.options.local_runtime_env_retries is not None:
            env["RUNTIME_ENV_RETRY_TIMES"] = str(max(1, self.options.local_runtime_env_retries))
        if self.options.local_auth == "token":
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
                f"--num-cpus={self.options.local_num_cpus or os.cpu_count() or 1}",
                "--num-gpus=0",
                "--min-worker-port=0",
                "--max-worker-port=0",
                *[f"--{name}={port}" for name, port in ports.items()],
            ]
            if self.options.local_object_store_memory:
                argv.append(f"--object-store-memory={self.options.local_object_store_memory}")
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
        deadline = started + self.options.local_startup_timeout
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


# --- the runner ---------------------------------------------------------------------


@dataclass
class _Job:
    index: int
    probe: Probe
    submission_id: str
    submitted: float
    running_since: float | None = None
    timeout_s: float | None = None
    result: RunResult | None = None
    stopping: str | None = None  # "timeout" | "unschedulable"
    stop_sent: float = 0.0


class RayRunner:
    """Runs probes as Ray jobs; stops every job it started, and its local Ray."""

    name = "ray"

    def __init__(self, options: RayOptions | None = None) -> None:
        self.options = options or RayOptions()
        self.local: LocalRay | None = None
        self._client: Any = None
        self._address: str | None = None
        self._active: dict[str, _Job] = {}
        self._nodes: list[dict[str, float]] | None = None
        self.closed = False

    # --- what can be tested ---------------------------------------------------------

    @functools.cached_property
    def _session(self) -> Session | None:
        """The session the runner was built for (the state dir holds one), if any."""
        return Session.find(self.options.state_dir)

    def target_address(self) -> str | None:
        """The cluster to use, or None for a local Ray started for the session."""
        return self.options.address or os.environ.get("RAY_ADDRESS") or None

    @functools.cached_property
    def _workload(self) -> Spec | None:
        """The session's good spec when it is a Kubernetes workload (not a RayJob)."""
        spec = self._session.spec("good") if self._session is not None else None
        if spec is None or spec.format != KUBERNETES or spec.kind == "RayJob":
            return None
        return spec if main_container(spec) else None

    def untestable(self, changes: list[Change]) -> dict[str, str]:
        """Kubernetes-only settings of a RayJob or a workload, an overridden entrypoint,
        images without podman."""
        command_given = bool(self._session and self._session.config.command)
        workload = self._workload
        if workload is not None:
            container = self.options.container or main_container(workload)
            return {
                change.key: why
                for change in changes
                if (
                    why := why_untestable_in_workload(
                        change, container=container, command_given=command_given
                    )
                )
            }
        rayjob = any(
            (c.path and c.path[0] in ("spec", "apiVersion", "kind")) or YAML_SEGMENT in c.path
            for c in changes
        )
        podman = self.target_address() is not None or shutil.which("podman") is not None
        reasons: dict[str, str] = {}
        for change in changes:
            why = why_untestable(change, rayjob=rayjob, command_given=command_given, podman=podman)
            if why:
                reasons[change.key] = why
        return reasons

    def render(self, probe: Probe) -> dict[str, Any]:
        """The job submission for ``probe`` (secret env values redacted)."""
        submission = render_submission(probe.spec, probe.command, self.options)
        kwargs = submission.kwargs()
        # Redact by name too: the good spec's own secrets are not among the changes.
        env_vars = kwargs["runtime_env"].get("env_vars")
        if isinstance(env_vars, dict):
            kwargs["runtime_env"] = {
                **kwargs["runtime_env"],
                "env_vars": redact_env(env_vars, secret_env_names(probe.changes)),
            }
        return {
            "backend": self.name,
            "address": self.target_address() or "local Ray started for the session",
            "submission": kwargs,
            "changes": [c.to_dict() for c in probe.changes],
        }

    # --- connecting -----------------------------------------------------------------

    def client(self) -> Any:
        """The Jobs API client; starts the session's local Ray when there is no address."""
        if self.closed:
            raise BackendError("the Ray runner is closed")
        if self._client is not None:
            return self._client
        require("ray", "the Ray backend")
        from ray.job_submission import JobSubmissionClient

        _quiet_ray_logging()
        address = self.target_address()
        headers: dict[str, str] = {}
        if address is None:
            self.local = LocalRay(self.options)
            self.local.start()
            address, headers = self.local.address, self.local.headers()
        try:
            self._client = JobSubmissionClient(address, headers=headers or None)
        except Exception as err:  # ConnectionError, RuntimeError, ValueError from Ray
            raise BackendError(f"cannot reach the Ray Jobs API at {address}: {err}") from err
        self._address = address
        return self._client

    # --- running --------------------------------------------------------------------

    def run(self, probes: list[Probe]) -> list[RunResult]:
        """Submit the probes (``parallel`` at a time), wait, and stop every job started."""
        # Render first: a spec Ray cannot run is bad input, found before Ray starts.
        submissions = [render_submission(p.spec, p.command, self.options) for p in probes]
        queue = list(enumerate(probes))
        results: list[RunResult | None] = [None] * len(probes)
        try:
            client = self.client()
            while queue or self._active:
                while queue and len(self._active) < self.options.parallel:
                    index, probe = queue.pop(0)
                    job = self._submit(client, index, probe, submissions[index])
                    if job.result is not None:
                        results[index] = job.result
                for job in list(self._active.values()):
                    if self._check(client, job):
                        del self._active[job.submission_id]
                        results[job.index] = job.result
                if self._active:
                    time.sleep(self.options.poll_s)
        except KeyboardInterrupt as interrupt:
            self._stop_all()
            raise Interrupted("interrupted; the running Ray probe jobs were stopped") from interrupt
        except BaseException:
            self._stop_all()
            raise
        return [r for r in results if r is not None]

    def _submit(self, client: Any, index: int, probe: Probe, submission: Submission) -> _Job:
        submission.metadata.update(
            {"clusterbisect.session": probe.session_id, "clusterbisect.probe": probe.probe_id}
        )
        # Unique even on a shared cluster and across resumes of the same session.
        submission_id = f"clusterbisect-{probe.session_id}-{probe.probe_id}-{secrets.token_hex(3)}"
        job = _Job(
            index,
            probe,
            submission_id,
            time.monotonic(),
            timeout_s=probe.timeout_s if probe.timeout_s else self.options.timeout,
        )
        infeasible = self._infeasible(client, submission.resources)
        if infeasible:
            job.result = self._infra(job, f"{UNSCHEDULABLE}: {infeasible}", {})
            return job
        try:
            client.submit_job(submission_id=submission_id, **submission.kwargs())
        except Exception as err:
            if _is_connection_error(err):
                raise BackendError(f"lost the Ray Jobs API at {self._address}: {err}") from err
            # The probe's own runtime_env or fields were refused (a working_dir that
            # does not exist, a malformed field): this probe is unresolved.
            job.result = self._infra(job, f"SUBMISSION_FAILED: {_first_line(str(err))}", {})
            return job
        self._active[submission_id] = job
        log.debug("ray.submitted", probe=probe.probe_id, job=submission_id)
        return job

    def _check(self, client: Any, job: _Job) -> bool:
        """Advance one job; True when its result is known (and the job is final)."""
        try:
            info = client.get_job_info(job.submission_id)
        except Exception as err:
            raise BackendError(f"lost the Ray Jobs API at {self._address}: {err}") from err
        status = _text(info.status)
        now = time.monotonic()
        if status == "RUNNING" and job.running_since is None:
            job.running_since = now
        if status in ("SUCCEEDED", "FAILED", "STOPPED"):
            job.result = self._final(client, job, info, status)
            return True
        if job.stopping:
            if now - job.stop_sent > self.options.stop_grace_s:
                log.warning("ray.stop_slow", job=job.submission_id)
                job.result = self._final(client, job, info, status)
                return True
            return False
        if status == "PENDING" and now - job.submitted > self.options.pending_timeout:
            self._stop(client, job, "unschedulable")
        elif (
            job.running_since is not None
            and job.timeout_s
            and now - job.running_since > job.timeout_s
        ):
            self._stop(client, job, "timeout")
        return False

    def _stop(self, client: Any, job: _Job, why: str) -> None:
        job.stopping, job.stop_sent = why, time.monotonic()
        with contextlib.suppress(Exception):
            client.stop_job(job.submission_id)
        log.info("ray.stopping", job=job.submission_id, why=why)

    def _final(self, client: Any, job: _Job, info: Any, status: str) -> RunResult:
        error_type = _text(info.error_type) if info.error_type else None
        message = info.message or ""
        details: dict[str, object] = {
            "ray_submission_id": job.submission_id,
            "ray_address": self._address,
            "ray_status": status,
            "ray_error_type": error_type,
            "ray_message": message[:2000],
        }
        output, dropped = self._logs(client, job)
        # One header line with Ray's verdict; the workload's output follows, so the
        # log's tail (the report's excerpt) is the workload's own. A workload
        # failure's message repeats that tail; an infrastructure failure's message
        # is the only evidence, so it goes at the end, whole.
        header = f"Ray job {job.submission_id}: {status}"
        header += f" ({error_type})" if error_type else ""
        summary = _first_line(message).split(", last available logs")[0]
        header += f": {summary}" if summary else ""
        if job.stopping:
            header += f" [stopped by clusterbisect: {job.stopping}]"
        footer = message if error_type in INFRA_ERROR_TYPES else None
        self._write_log(job, output, dropped, header, footer)
        duration = time.monotonic() - job.submitted
        if job.stopping == "timeout":
            return RunResult(
                None, output, True, "Timeout", None, duration, str(job.probe.log_path), details
            )
        if job.stopping == "unschedulable":
            waited = f"still PENDING after {self.options.pending_timeout:g} s"
            why = f"{UNSCHEDULABLE}: {waited}: {_first_line(message)}"
            return RunResult(
                None, output, False, None, why, duration, str(job.probe.log_path), details
            )
        if status == "SUCCEEDED":
            return RunResult(
                0, output, duration_s=duration, log_path=str(job.probe.log_path), details=details
            )
        code = getattr(info, "driver_exit_code", None)
        if code is None and error_type == "JOB_ENTRYPOINT_COMMAND_ERROR":
            match = re.search(r"exit code (-?\d+)", message)
            code = int(match.group(1)) if match else None
        if status == "FAILED" and code is not None and error_type not in INFRA_ERROR_TYPES:
            reason = signal_reason(code)
            return RunResult(
                code, output, False, reason, None, duration, str(job.probe.log_path), details
            )
        if status == "STOPPED":
            infra = "STOPPED: the Ray job was stopped outside clusterbisect"
        else:
            infra = f"{error_type or 'FAILED'}: {_infra_summary(message)}"
        return RunResult(
            None, output, False, None, infra, duration, str(job.probe.log_path), details
        )

    def _infra(self, job: _Job, why: str, details: dict[str, object]) -> RunResult:
        self._write_log(job, "", 0, f"Ray job {job.submission_id} not run: {why}")
        return RunResult(
            None,
            "",
            infra_error=why,
            duration_s=time.monotonic() - job.submitted,
            log_path=str(job.probe.log_path),
            details={
                "ray_submission_id": job.submission_id,
                "ray_address": self._address,
                **details,
            },
        )

    def _logs(self, client: Any, job: _Job) -> tuple[str, int]:
        """The driver's log without Ray's preamble, its last ``max_log_bytes`` kept."""
        try:
            text = client.get_job_logs(job.submission_id) or ""
        except Exception as err:
            log.warning("ray.logs_unavailable", job=job.submission_id, error=str(err))
            return "", 0
        text = strip_preamble(text)
        data = text.encode("utf-8", errors="replace")
        limit = self.options.max_log_bytes
        if len(data) <= limit:
            return text, 0
        return data[-limit:].decode("utf-8", errors="replace"), len(data) - limit

    def _write_log(
        self, job: _Job, output: str, dropped: int, header: str, footer: str | None = None
    ) -> None:
        """The probe's log: Ray's verdict, the driver's output, Ray's error in full."""
        path = job.probe.log_path
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(f"[clusterbisect: {header}]\n")
            if dropped:
                handle.write(f"[clusterbisect: the first {dropped} bytes of output not kept]\n")
            handle.write(output)
            if output and not output.endswith("\n"):
                handle.write("\n")
            if footer:
                handle.write(footer if footer.endswith("\n") else footer + "\n")

    def _infeasible(self, client: Any, resources: dict[str, Any]) -> str | None:
        """Why no node of the cluster could ever run the entrypoint, or None."""
        wanted = {
            "CPU": resources.get("entrypoint_num_cpus"),
            "GPU": resources.get("entrypoint_num_gpus"),
            "memory": resources.get("entrypoint_memory"),
            **(resources.get("entrypoint_resources") or {}),
        }
        wanted = {k: float(v) for k, v in wanted.items() if v}
        if not wanted:
            return None
        nodes = self._node_totals(client)
        if not nodes:
            return None  # unknown (an autoscaling cluster may add nodes): wait instead
        for totals in nodes:
            if all(totals.get(k, 0.0) >= v for k, v in wanted.items()):
                return None
        asked = ", ".join(f"{k}={v:g}" for k, v in sorted(wanted.items()))
        return f"no node of the Ray cluster has {asked}"

    def _node_totals(self, client: Any) -> list[dict[str, float]]:
        """Total resources of each alive node, from the dashboard's state API."""
        if self._nodes is None:
            nodes: list[dict[str, float]] = []
            try:
                answer = client._do_request("GET", "/api/v0/nodes?limit=1000&detail=true")
                data = answer.json()["data"]["result"]["result"]
                for node in data:
                    if node.get("state") == "ALIVE":
                        nodes.append(
                            {k: float(v) for k, v in (node.get("resources_total") or {}).items()}
                        )
            except Exception as err:
                log.debug("ray.nodes_unavailable", error=str(err))
            # An autoscaler can add nodes: only a fixed local Ray is a reliable answer.
            self._nodes = nodes if self.local is not None else []
        return self._nodes

    # --- cleanup --------------------------------------------------------------------

    def _stop_all(self) -> None:
        """Stop every job still active and wait (bounded) until Ray says it stopped."""
        if not self._active or self._client is None:
            self._active.clear()
            return
        client = self._client
        for job in self._active.values():
            with contextlib.suppress(Exception):
                client.stop_job(job.submission_id)
        deadline = time.monotonic() + self.options.stop_grace_s
        waiting = set(self._active)
        while waiting and time.monotonic() < deadline:
            for submission_id in list(waiting):
                try:
                    if _text(client.get_job_status(submission_id)) in (
                        "SUCCEEDED",
                        "FAILED",
                        "STOPPED",
                    ):
                        waiting.discard(submission_id)
                except Exception:
                    waiting.discard(submission_id)
            if waiting:
                time.sleep(self.options.poll_s)
        if waiting:
            log.warning("ray.jobs_not_stopped", jobs=sorted(waiting))
        else:
            log.info("ray.jobs_stopped", count=len(self._active))
        self._active.clear()

    def close(self) -> None:
        """Stop any job still running, then the session's local Ray (if we started one)."""
        if self.closed:
            return
        try:
            self._stop_all()
        finally:
            self.closed = True
            self._client = None
            if self.local is not None:
                self.local.stop()


# --- helpers ------------------------------------------------------------------------


def _quiet_ray_logging() -> None:
    """Keep the Ray client's INFO lines (package uploads, ...) off our stderr.

    Our progress and structlog logs are the tool's output; Ray's warnings still show.
    """
    import logging

    ray_logger = logging.getLogger("ray")
    if ray_logger.getEffectiveLevel() < logging.WARNING:
        ray_logger.setLevel(logging.WARNING)


def strip_preamble(text: str) -> str:
    """Drop the lines the Jobs API writes before the workload's own output."""
    lines = text.splitlines(keepends=True)
    kept: list[str] = []
    patterns = list(_PREAMBLE)
    for i, line in enumerate(lines):
        if patterns and i < 4 and any(p.match(line.rstrip("\n")) for p in patterns):
            patterns = [p for p in patterns if not p.match(line.rstrip("\n"))]
            continue
        kept.append(line)
    return "".join(kept)


def _text(value: Any) -> str:
    return str(getattr(value, "value", value))


def _first_line(text: str, limit: int = 300) -> str:
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line[:limit]


def _infra_summary(message: str) -> str:
    """One line naming the cause, e.g. pip's ``No matching distribution found for x``."""
    found = _PIP_ERROR.findall(message)
    if found:
        return _first_line(found[-1])
    return _first_line(message)


def _is_connection_error(err: BaseException) -> bool:
    import requests

    return isinstance(err, requests.exceptions.ConnectionError | ConnectionError)
