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
  its process tree, never ``ray stop``. Its entrypoints run under the local backend's
  keeper (``render.kept``), so what a probe leaves behind ends with it.

Either way the job ships its ``working_dir`` (the spec's, or the session's directory,
packaged once per session), so the same command works on both. Each job's record is
deleted once its log is kept; a job past its timeout, or running when the run is
interrupted, is stopped on the cluster and deleted too.

``ray`` is imported only inside this module's functions, and this module only when
the Ray backend is chosen.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

from clusterbisect.config import RayOptions, with_tuning
from clusterbisect.diff import Change
from clusterbisect.errors import BackendError, InputError, Interrupted
from clusterbisect.extras import require
from clusterbisect.files import open_private, private_dir
from clusterbisect.log import get_logger
from clusterbisect.outcome import RunResult, signal_reason
from clusterbisect.runners.base import Fidelity, PrivateFile, Probe, RunnerContext
from clusterbisect.runners.ray.cluster import LocalRay, LocalRayOptions
from clusterbisect.runners.ray.jobs import (
    FINAL,
    PROBE_KEY,
    SESSION_KEY,
    connect,
    delete_record,
    status_text,
    stop_and_delete,
)
from clusterbisect.runners.ray.messages import (
    INFRA_ERROR_TYPES,
    NO_AGENT,
    UNSCHEDULABLE,
    first_line,
    infra_summary,
    is_connection_error,
    strip_preamble,
)
from clusterbisect.runners.ray.render import (
    Submission,
    job_python,
    kept,
    not_carried,
    render_submission,
    why_untestable,
    why_untestable_in_workload,
)
from clusterbisect.settings import YAML_SEGMENT
from clusterbisect.specs.model import KUBERNETES, Spec
from clusterbisect.specs.pip import shown_lines
from clusterbisect.specs.workload import main_container

log = get_logger(__name__)


@dataclass
class RaySettings(RayOptions):
    """The user's options (``config.RayOptions``) and the backend's own tuning."""

    # Still PENDING (resources, runtime_env) this long: stopped as unschedulable (infra).
    pending_timeout: float = 600.0
    poll_s: float = 0.25
    stop_grace_s: float = 20.0  # wait this long for a stopped job to reach a final state
    keeper_grace_s: float = 3.0  # on the session's Ray: SIGTERM to SIGKILL of what is left
    max_log_bytes: int = 1 << 20  # the tail of the driver log kept per probe
    local: LocalRayOptions = field(default_factory=LocalRayOptions)


def make_runner(context: RunnerContext, options: RayOptions) -> RayRunner:
    """The Ray runner (connects or starts Ray on the first ``run``); the registry's factory."""
    return RayRunner(context, options)


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

    def __init__(
        self, context: RunnerContext | None = None, options: RayOptions | None = None
    ) -> None:
        self.context = context or RunnerContext()
        self.options = with_tuning(options, RaySettings)
        if self.context.parallel < 1:
            raise InputError("expected at least 1", field="parallel")
        self.local: LocalRay | None = None
        self._client: Any = None
        self._address: str | None = None
        self._active: dict[str, _Job] = {}
        # Stopped, but not final within stop_grace_s (a job still waiting for its
        # resources takes the stop only once it starts): tried again at close.
        self._lingering: set[str] = set()
        self._nodes: list[dict[str, float]] | None = None
        self._packages: dict[tuple[str, tuple[str, ...]], str] = {}  # working_dir -> URI
        self.closed = False

    # --- what can be tested ---------------------------------------------------------

    def target_address(self) -> str | None:
        """The cluster to use, or None for a local Ray started for the session."""
        return self.options.address or os.environ.get("RAY_ADDRESS") or None

    @functools.cached_property
    def _workload(self) -> Spec | None:
        """The session's good spec when it is a Kubernetes workload (not a RayJob)."""
        spec = self.context.good
        if spec is None or spec.format != KUBERNETES or spec.kind == "RayJob":
            return None
        return spec if main_container(spec) else None

    def untestable(self, changes: list[Change]) -> dict[str, str]:
        """Kubernetes-only settings of a RayJob or a workload, an overridden entrypoint,
        images without podman."""
        command_given = bool(self.context.command)
        workload = self._workload
        if workload is not None:
            container = self.context.container or main_container(workload)
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

    def fidelity(self) -> Fidelity:
        """Where the Ray jobs run, what they run, what of the spec they leave out."""
        where = self.target_address() or "a local Ray started for the session"
        spec = self.context.good
        runs = (
            "the workload after `--` as a Ray job"
            if self.context.command
            else "the spec's entrypoint as a Ray job"
        )
        return Fidelity(
            target=where,
            runs=runs,
            not_carried=not_carried(spec, where) if spec is not None else [],
        )

    def render(self, probe: Probe) -> dict[str, Any]:
        """The job submission for ``probe``, for display: secret values hidden (env
        vars by name; credentials in the entrypoint or a pip URL by shape)."""
        redactor = self.context.redactor
        kwargs = self._render(probe).kwargs()
        env_vars = kwargs["runtime_env"].get("env_vars")
        if isinstance(env_vars, dict):
            kwargs["runtime_env"] = {
                **kwargs["runtime_env"],
                "env_vars": redactor.env({str(k): str(v) for k, v in env_vars.items()}),
            }
        pins = kwargs["runtime_env"].get("pip")
        if isinstance(pins, list) and all(isinstance(p, str) for p in pins):
            # An index URL's credentials are not shown (the job installs with them).
            kwargs["runtime_env"] = {**kwargs["runtime_env"], "pip": shown_lines(pins)}
        address = self.target_address()
        return {
            "backend": self.name,
            "address": redactor.text(address) if address else "local Ray started for the session",
            "submission": redactor.value(kwargs),
            "changes": [redactor.value(c.to_dict()) for c in probe.changes],
        }

    def private(self, probe: Probe) -> PrivateFile | None:
        """The job submission with its real values, when :meth:`render` hides some: a
        Ray job cannot refer to a secret, so this is what a submission must send."""
        kwargs = self._render(probe).kwargs()
        if not self.context.redactor.hides(kwargs):
            return None
        return PrivateFile(
            suffix=".submission.json",
            text=json.dumps(kwargs, indent=2) + "\n",
            holds="the Ray job submission (JobSubmissionClient.submit_job keyword "
            "arguments) with its real values",
        )

    def _render(self, probe: Probe) -> Submission:
        return render_submission(
            probe.spec,
            probe.command,
            self.options,
            self.context.container,
            env_names=probe.env_names,
            # The session's state changes with every probe (logs): never part of a package.
            avoid=[str(self.context.state_dir)] if self.context.state_dir else [],
        )

    # --- connecting -----------------------------------------------------------------

    def client(self) -> Any:
        """The Jobs API client; starts the session's local Ray when there is no address."""
        if self.closed:
            raise BackendError("the Ray runner is closed")
        if self._client is not None:
            return self._client
        require("ray", "the Ray backend")
        address = self.target_address()
        headers: dict[str, str] = {}
        if address is None:
            self.local = LocalRay(self._local_options(), self.context.private_dir)
            self.local.start()
            address, headers = self.local.address, self.local.headers()
        self._client = connect(address, headers)
        self._address = address
        return self._client

    def _local_options(self) -> LocalRayOptions:
        """The local Ray's settings: the GPUs asked for, the job's interpreter."""
        local = self.options.local
        python = local.python
        if python is None and self.context.good is not None:
            with contextlib.suppress(InputError):  # no entrypoint: found when rendering
                python = job_python(self.context.good, self.context.command, self.context.container)
        return dataclasses.replace(
            local,
            num_gpus=self.options.num_gpus if self.options.num_gpus is not None else local.num_gpus,
            python=python,
        )

    # --- running --------------------------------------------------------------------

    def run(self, probes: list[Probe]) -> list[RunResult]:
        """Submit the probes (``parallel`` at a time), wait, and stop every job started."""
        # Render first: a spec Ray cannot run is bad input, found before Ray starts.
        submissions = [self._render(p) for p in probes]
        queue = list(enumerate(probes))
        results: list[RunResult | None] = [None] * len(probes)
        try:
            client = self.client()
            while queue or self._active:
                while queue and len(self._active) < self.context.parallel:
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
        submission.metadata.update({SESSION_KEY: probe.session_id, PROBE_KEY: probe.probe_id})
        # Unique even on a shared cluster and across resumes of the same session.
        submission_id = f"clusterbisect-{probe.session_id}-{probe.probe_id}-{secrets.token_hex(3)}"
        job = _Job(
            index,
            probe,
            submission_id,
            time.monotonic(),
            timeout_s=probe.timeout_s if probe.timeout_s else self.context.timeout_s,
        )
        if self.local is not None:  # the session's own Ray: this machine
            submission = kept(submission, self.options.keeper_grace_s)
        infeasible = self._infeasible(client, submission.resources)
        if infeasible:
            job.result = self._infra(job, f"{UNSCHEDULABLE}: {infeasible}", {})
            return job
        try:
            self._package(client, submission.runtime_env)
            self._submit_when_an_agent_takes_it(client, job, submission_id, submission)
        except InputError:
            raise
        except Exception as err:
            if is_connection_error(err):
                raise self._lost(err) from err
            # The probe's own runtime_env or fields were refused (a working_dir that
            # does not exist, a malformed field): this probe is unresolved.
            job.result = self._infra(job, f"SUBMISSION_FAILED: {first_line(str(err))}", {})
            return job
        self._active[submission_id] = job
        log.debug("ray.submitted", probe=probe.probe_id, job=submission_id)
        return job

    def _submit_when_an_agent_takes_it(
        self, client: Any, job: _Job, submission_id: str, submission: Submission
    ) -> None:
        """Submit; while the head has no job agent yet (a node still starting, a loaded
        machine: Ray answers "No available agent" after 10 s), try again, for up to
        ``pending_timeout``, as a job waiting for its node would."""
        while True:
            try:
                client.submit_job(submission_id=submission_id, **submission.kwargs())
                return
            except Exception as err:
                waited = time.monotonic() - job.submitted
                if NO_AGENT not in str(err) or waited > self.options.pending_timeout:
                    raise
                log.debug("ray.no_agent_yet", probe=job.probe.probe_id, waited=round(waited, 1))
                time.sleep(self.options.poll_s * 4)

    def _lost(self, err: BaseException) -> BackendError:
        """The Jobs API stopped answering: for the session's own Ray, say whether it
        died (and what its log says), since then no retry will help."""
        message = f"lost the Ray Jobs API at {self._address}: {err}"
        if self.local is not None and not self.local.running():
            message += (
                f". The session's local Ray stopped (see {self.local.log_path}): "
                f"{self.local.log_tail(400)}"
            )
        return BackendError(message)

    def _package(self, client: Any, runtime_env: dict[str, Any]) -> None:
        """Replace a local working_dir by its package on the cluster, uploaded once per
        session (Ray would hash the directory again for every job)."""
        working_dir = runtime_env.get("working_dir")
        if not isinstance(working_dir, str) or "://" in working_dir:
            return
        key = (working_dir, tuple(runtime_env.get("excludes") or ()))
        if key not in self._packages:
            packaged: dict[str, Any] = {"working_dir": working_dir, "excludes": list(key[1])}
            try:
                client._upload_working_dir_if_needed(packaged)  # as submit_job does
            except Exception as err:
                if is_connection_error(err) or working_dir != self.options.working_dir:
                    raise  # the spec's own working_dir: this probe's submission failed
                raise InputError(
                    f"cannot ship {working_dir} as the jobs' working_dir: {err}. Give a "
                    "smaller directory with --working-dir, or leave files out with a "
                    ".rayignore or .gitignore there",
                    field="--working-dir",
                ) from err
            self._packages[key] = packaged["working_dir"]
            log.debug("ray.packaged", working_dir=working_dir, uri=packaged["working_dir"])
        runtime_env["working_dir"] = self._packages[key]

    def _check(self, client: Any, job: _Job) -> bool:
        """Advance one job; True when its result is known (and the job is final)."""
        try:
            info = client.get_job_info(job.submission_id)
        except Exception as err:
            raise self._lost(err) from err
        status = status_text(info.status)
        now = time.monotonic()
        if status == "RUNNING" and job.running_since is None:
            job.running_since = now
        if status in FINAL:
            job.result = self._final(client, job, info, status)
            delete_record(client, job.submission_id)  # its log is kept: nothing to keep there
            return True
        if job.stopping:
            if now - job.stop_sent > self.options.stop_grace_s:
                # Still not final: left on the cluster, where cleanup and resume find it.
                log.warning("ray.stop_slow", job=job.submission_id)
                self._lingering.add(job.submission_id)
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
        error_type = status_text(info.error_type) if info.error_type else None
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
        summary = first_line(message).split(", last available logs")[0]
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
            why = f"{UNSCHEDULABLE}: {waited}: {first_line(message)}"
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
            infra = f"{error_type or 'FAILED'}: {infra_summary(message)}"
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
        private_dir(path.parent)
        with open_private(path, "w", encoding="utf-8") as handle:  # the output as it was
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
        """Stop every job still active (or stopped earlier and not final yet), wait
        (bounded) until Ray says it stopped, and delete its record."""
        active, self._active = self._active, {}
        stopping = [*active, *sorted(self._lingering - set(active))]
        self._lingering = set()
        if stopping and self._client is not None:
            deleted, running = stop_and_delete(
                self._client, stopping, self.options.stop_grace_s, self.options.poll_s
            )
            log.info("ray.jobs_stopped", count=len(deleted))
            if running:  # left on the cluster, where cleanup and resume find them
                log.warning("ray.jobs_left", jobs=running)

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
