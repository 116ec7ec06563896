"""One pod on the test node: its sandbox (volumes), containers, status and deletion."""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import logs, status, volumes
from .env import ConfigError
from .runtime import Process

if TYPE_CHECKING:
    from .node import NodeAgent

log = logging.getLogger("testnode.pod")

MAX_BACKOFF_S = 300.0
MAX_MESSAGE = 4096  # bytes of a termination message file, as the kubelet reads


class CreateError(Exception):
    """The container cannot be created (CreateContainerError)."""


@dataclass
class Stop:
    """Why the pod's containers are being stopped."""

    grace_s: float
    deleting: bool = False
    reason: str | None = None
    message: str | None = None


class PodWorker:
    """Runs one pod from the moment it is bound to the node until it is deleted."""

    def __init__(self, node: NodeAgent, pod: dict[str, Any]) -> None:
        self.node = node
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        self.pod = pod
        self.dir = node.pods_dir / self.uid
        self.lock = threading.RLock()
        self.push_lock = threading.Lock()  # one status write at a time, in order
        self.stopping = threading.Event()
        self.stop_info: Stop | None = None
        self.deleting = threading.Event()  # deletionTimestamp seen
        self.gone = False  # removed from the API: nothing more to write
        self.states: dict[str, status.ContainerState] = {}
        self.processes: dict[str, Process] = {}
        self.sandbox_ready = False
        self.initialized = False
        self.terminal = False
        self.final_phase: str | None = None
        self.reason: str | None = None
        self.message: str | None = None
        self.conditions: list[dict[str, Any]] = list(
            (pod.get("status") or {}).get("conditions") or []
        )
        self.start_time = (pod.get("status") or {}).get("startTime") or status.now()
        self.volumes: dict[str, str] = {}
        self.thread = threading.Thread(target=self.run, name=f"pod-{self.name}", daemon=True)

    # --- signals from the watch ---------------------------------------------------

    @property
    def spec(self) -> dict[str, Any]:
        return self.pod["spec"]

    def update(self, pod: dict[str, Any]) -> None:
        with self.lock:
            self.pod = pod
        meta = pod["metadata"]
        if meta.get("deletionTimestamp") and not self.deleting.is_set():
            grace = meta.get("deletionGracePeriodSeconds")
            self.request_stop(
                Stop(grace_s=float(grace if grace is not None else 30), deleting=True)
            )
            self.deleting.set()

    def removed(self) -> None:
        """The pod was deleted from the API (force deletion): stop at once."""
        self.gone = True
        self.request_stop(Stop(grace_s=0, deleting=True))
        self.deleting.set()

    def request_stop(self, stop: Stop) -> None:
        with self.lock:
            if self.stop_info is None or stop.grace_s < self.stop_info.grace_s:
                self.stop_info = stop
        self.stopping.set()

    # --- the pod's life -----------------------------------------------------------

    def run(self) -> None:
        try:
            if (self.pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                self._run()
            self.deleting.wait()
            self._kill_all(0)
            if not self.gone:
                self.node.delete_pod(self)
        except Exception:
            log.exception("pod %s/%s: the worker failed", self.namespace, self.name)
        finally:
            self._kill_all(0)
            self.node.forget(self)
            shutil.rmtree(self.dir, ignore_errors=True)

    def _run(self) -> None:
        for container in self.spec.get("initContainers") or []:
            self.states[container["name"]] = status.ContainerState(
                container["name"],
                container.get("image", ""),
                init=True,
                sidecar=container.get("restartPolicy") == "Always",
                state={"waiting": {"reason": "PodInitializing"}},
            )
        waiting = "PodInitializing" if self.spec.get("initContainers") else "ContainerCreating"
        for container in self.spec.get("containers") or []:
            self.states[container["name"]] = status.ContainerState(
                container["name"],
                container.get("image", ""),
                state={"waiting": {"reason": waiting}},
            )
        self.push()
        if self._sandbox() and self._init_containers():
            self._main_containers()
        with self.lock:
            if self.stop_info is not None and self.stop_info.reason:
                self.reason, self.message = self.stop_info.reason, self.stop_info.message
            self.terminal = True
        self.push()

    def _sandbox(self) -> bool:
        """Set up the volumes, retrying like the kubelet (FailedMount events)."""
        delay = 1.0
        while not self.stopping.is_set():
            try:
                self.volumes = volumes.setup(
                    self.pod,
                    self.dir,
                    self.node.objects,
                    self.node.token_for(self),
                    self.node.allocatable,
                )
            except (volumes.VolumeError, OSError) as err:
                self.node.event(
                    self, None, "Warning", "FailedMount", f"MountVolume.SetUp failed: {err}"
                )
                if self.stopping.wait(delay):
                    return False
                delay = min(delay * 2, 30)
                continue
            self.sandbox_ready = True
            self.push()
            return True
        return False

    def _init_containers(self) -> bool:
        policy = "Never" if self.spec.get("restartPolicy") == "Never" else "OnFailure"
        for container in self.spec.get("initContainers") or []:
            if self.stopping.is_set():
                return False
            name = container["name"]
            if container.get("restartPolicy") == "Always":
                threading.Thread(
                    target=self._run_container, args=(container, "Always"), daemon=True
                ).start()
                while self.states[name].kind != "running" and not self.stopping.wait(0.1):
                    pass
                continue
            self._run_container(container, policy)
            term = self.states[name].terminated()
            if term is None or term["exitCode"] != 0:
                return False
        self.initialized = True
        return True

    def _main_containers(self) -> None:
        policy = self.spec.get("restartPolicy", "Always")
        threads = [
            threading.Thread(target=self._run_container, args=(c, policy), daemon=True)
            for c in self.spec.get("containers") or []
        ]
        for thread in threads:
            thread.start()
        deadline = self.spec.get("activeDeadlineSeconds")
        started = time.monotonic()
        while any(t.is_alive() for t in threads):
            if self.stopping.wait(0.2):
                break
            if deadline is not None and time.monotonic() - started > deadline:
                self.request_stop(
                    Stop(
                        grace_s=float(self.spec.get("terminationGracePeriodSeconds", 30)),
                        reason="DeadlineExceeded",
                        message="Pod was active on the node longer than the specified deadline",
                    )
                )
        if self.stopping.is_set():
            info = self.stop_info
            self._kill_all(info.grace_s if info else 0)
        else:
            # Every regular container is done: the sidecars go too.
            self.request_stop(
                Stop(grace_s=float(self.spec.get("terminationGracePeriodSeconds", 30)))
            )
            self._kill_all(self.stop_info.grace_s if self.stop_info else 0)
        for thread in threads:
            thread.join()

    def _kill_all(self, grace_s: float) -> None:
        """SIGTERM each container's main process, SIGKILL what is left after the grace."""
        with self.lock:
            running = list(self.processes.values())
        for process in running:
            if grace_s > 0:
                process.signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for process in running:
            if process.wait(max(0.0, deadline - time.monotonic())) is None:
                process.kill()
        for process in running:
            process.wait(10)

    # --- one container --------------------------------------------------------------

    def _run_container(self, container: dict[str, Any], policy: str) -> None:
        name = container["name"]
        image_backoff = self.node.config.image_backoff_s
        crash_backoff = self.node.config.crashloop_backoff_s
        instance = 0
        while not self.stopping.is_set():
            problem = self.node.pull(container)
            if problem is not None:
                reason, message = problem
                self._waiting(name, reason, message)
                self.node.event(
                    self,
                    name,
                    "Warning",
                    "Failed",
                    f"Failed to pull image {container.get('image')!r}: {message}",
                )
                if reason != "ErrImagePull":
                    if self.stopping.wait(image_backoff):
                        return
                    continue
                if self.stopping.wait(1.0):
                    return
                backoff_message = f'Back-off pulling image "{container.get("image")}"'
                self._waiting(name, "ImagePullBackOff", backoff_message)
                self.node.event(self, name, "Normal", "BackOff", backoff_message)
                if self.stopping.wait(image_backoff):
                    return
                image_backoff = min(image_backoff * 2, MAX_BACKOFF_S)
                continue
            try:
                launch, memory = self.node.launch_spec(self, container, instance)
            except ConfigError as err:
                self._waiting(name, "CreateContainerConfigError", str(err))
                self.node.event(self, name, "Warning", "Failed", f"Error: {err}")
                if self.stopping.wait(2.0):
                    return
                continue
            except CreateError as err:
                self._waiting(name, "CreateContainerError", str(err))
                self.node.event(self, name, "Warning", "Failed", f"Error: {err}")
                if self.stopping.wait(2.0):
                    return
                continue
            started_at = time.monotonic()
            term = self._start(container, instance, launch, memory)
            with self.lock:
                state = self.states[name]
                state.state = {"terminated": term}
                state.ready = False
            self.push()
            if self.stopping.is_set() or policy == "Never":
                return
            if policy == "OnFailure" and term["exitCode"] == 0:
                return
            if instance > 0:
                if time.monotonic() - started_at > 600:
                    crash_backoff = self.node.config.crashloop_backoff_s
                message = (
                    f"back-off {int(crash_backoff)}s restarting failed container={name} "
                    f"pod={self.name}_{self.namespace}({self.uid})"
                )
                with self.lock:
                    state.last_state = {"terminated": term}
                    state.state = {"waiting": {"reason": "CrashLoopBackOff", "message": message}}
                self.push()
                self.node.event(
                    self, name, "Warning", "BackOff", "Back-off restarting failed container"
                )
                if self.stopping.wait(crash_backoff):
                    return
                crash_backoff = min(crash_backoff * 2, MAX_BACKOFF_S)
            with self.lock:
                state.last_state = {"terminated": term}
                state.restart_count += 1
            instance += 1

    def _start(
        self, container: dict[str, Any], instance: int, launch: Any, memory: int | None
    ) -> dict[str, Any]:
        name = container["name"]
        cid = uuid.uuid4().hex
        work = self.dir / "containers" / name
        log_path = self.log_path(name, instance)
        log_path.unlink(missing_ok=True)
        message_file = work / f"termination-log.{instance}"
        process = Process(
            launch, work, log_path, self.node.cgroups, f"{self.uid}-{name}-{instance}", memory
        )
        container_id = f"testnode://{cid}"
        if process.start_error is not None:
            code = process.wait()
            process.finish()
            return {
                "exitCode": code if code is not None else 128,
                "reason": "StartError",
                "message": process.start_error,
                "startedAt": "1970-01-01T00:00:00Z",
                "finishedAt": status.now(),
                "containerID": container_id,
            }
        started = status.now()
        with self.lock:
            self.processes[name] = process
            state = self.states[name]
            state.state = {"running": {"startedAt": started}}
            state.ready = True
            state.container_id = container_id
        self.push()
        self.node.event(self, name, "Normal", "Started", f"Started container {name}")
        code = process.wait()
        oom = process.finish()
        with self.lock:
            self.processes.pop(name, None)
        exit_code = 128 + signal.SIGKILL if code is None else code
        term: dict[str, Any] = {
            "exitCode": exit_code,
            "reason": "OOMKilled" if oom else ("Completed" if exit_code == 0 else "Error"),
            "startedAt": started,
            "finishedAt": status.now(),
            "containerID": container_id,
        }
        message = ""
        with contextlib.suppress(OSError):
            message = message_file.read_bytes()[:MAX_MESSAGE].decode("utf-8", "replace")
        policy = container.get("terminationMessagePolicy", "File")
        if not message and exit_code != 0 and policy == "FallbackToLogsOnError":
            message = logs.tail_text(log_path)
        if message:
            term["message"] = message
        return term

    def _waiting(self, name: str, reason: str, message: str) -> None:
        with self.lock:
            state = self.states[name]
            state.state = {"waiting": {"reason": reason, "message": message}}
            state.ready = False
        self.push()

    def log_path(self, container: str, instance: int) -> Path:
        return self.dir / "logs" / container / f"{instance}.log"

    def running(self, container: str) -> bool:
        with self.lock:
            state = self.states.get(container)
            return state is not None and state.kind == "running"

    # --- status ---------------------------------------------------------------------

    def push(self) -> None:
        """Write the pod's status (a strategic merge patch, with the uid precondition)."""
        with self.push_lock:
            with self.lock:
                if self.gone:
                    return
                body = self._status_patch()
            if not self.node.patch_pod_status(self, body):
                self.gone = True

    def _status_patch(self) -> dict[str, Any]:
        pod_phase = self.final_phase or status.phase(
            self.spec, self.states, self.terminal, self.initialized
        )
        if self.reason == "DeadlineExceeded":
            pod_phase = "Failed"
        if pod_phase in ("Succeeded", "Failed"):
            self.final_phase = pod_phase
        self.conditions = status.conditions(
            self.spec, self.states, pod_phase, self.sandbox_ready, self.conditions
        )
        init, regular = status.sorted_statuses(self.spec, self.states)
        ip = self.node.address
        body: dict[str, Any] = {
            "metadata": {"uid": self.uid},
            "status": {
                "phase": pod_phase,
                "conditions": self.conditions,
                "hostIP": ip,
                "hostIPs": [{"ip": ip}],
                "podIP": ip,
                "podIPs": [{"ip": ip}],
                "startTime": self.start_time,
                "initContainerStatuses": init,
                "containerStatuses": regular,
            },
        }
        if self.reason:
            body["status"]["reason"] = self.reason
            body["status"]["message"] = self.message
        return body
