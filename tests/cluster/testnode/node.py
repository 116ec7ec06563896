"""One Node: registration, its Lease, the watch on the pods bound to it, and the
services a pod worker needs (images, env, launch specs, API writes)."""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException
from kubernetes.utils.quantity import parse_quantity

from . import env as envmod
from . import volumes
from .config import DEFAULT_PATH, Config, NodeSpec
from .logs import timestamp
from .pod import CreateError, PodWorker
from .runtime import Cgroups, LaunchSpec
from .status import now

log = logging.getLogger("testnode.node")

SMP = "application/strategic-merge-patch+json"
# A reference the container runtime would accept (the distribution grammar, loosely).
_IMAGE = re.compile(
    r"^(?:[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*(?::[\w][\w.-]{0,127})?(?:@sha256:[a-f0-9]{64})?$"
)
STATUS_RETRY_S = 120.0  # how long a pod's status write is retried
DEFAULT_CAPACITY = {"cpu": "4", "memory": "8Gi", "pods": "110", "ephemeral-storage": "20Gi"}


class NodeAgent:
    """The kubelet of one Node, minus everything the test node does not do."""

    def __init__(self, config: Config, spec: NodeSpec, cgroups: Cgroups, api_port: int) -> None:
        self.config = config
        self.spec = spec
        self.name = spec.name
        self.cgroups = cgroups
        self.address = "127.0.0.1"
        self.api_port = api_port
        self.port = spec.port
        self.pods_dir = config.state_dir / spec.name / "pods"
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self.allocatable = {**DEFAULT_CAPACITY, **spec.capacity}
        conf = kubernetes.client.Configuration()
        conf.host = config.api_server
        conf.ssl_ca_cert = str(config.ca_file)
        conf.cert_file = str(config.pki_dir / f"node-{spec.name}.crt")
        conf.key_file = str(config.pki_dir / f"node-{spec.name}.key")
        conf.connection_pool_maxsize = 32
        self.client = kubernetes.client.ApiClient(conf)
        # Any: bodies are plain dicts, which every client version accepts.
        self.core: Any = kubernetes.client.CoreV1Api(self.client)
        self.leases: Any = kubernetes.client.CoordinationV1Api(self.client)
        self.objects = _Objects(self)
        self.workers: dict[str, PodWorker] = {}
        self.by_name: dict[tuple[str, str], PodWorker] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.node_uid: str | None = None

    # --- registration and heartbeat ---------------------------------------------------

    def node_status(self) -> dict[str, Any]:
        stamp = now()
        conditions = [
            ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID"),
            ("Ready", "True", "KubeletReady"),
        ]
        return {
            "capacity": self.allocatable,
            "allocatable": self.allocatable,
            "conditions": [
                {
                    "type": kind,
                    "status": value,
                    "reason": reason,
                    "message": "clusterbisect test node",
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                }
                for kind, value, reason in conditions
            ],
            "addresses": [
                {"type": "InternalIP", "address": self.address},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
            "nodeInfo": {
                "architecture": "amd64",
                "operatingSystem": "linux",
                "osImage": "clusterbisect test node",
                "kernelVersion": "",
                "kubeletVersion": self.config_version(),
                "kubeProxyVersion": "",
                "containerRuntimeVersion": "testnode://0.1",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        }

    def config_version(self) -> str:
        return "v0.0.0-testnode"

    def register(self) -> None:
        labels = {
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            **self.spec.labels,
        }
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": labels},
            "spec": {"taints": self.spec.taints} if self.spec.taints else {},
        }
        try:
            created = self.core.create_node(body)
            self.node_uid = created.metadata.uid
        except ApiException as err:
            if err.status != 409:
                raise
            existing = self.core.read_node(self.name)
            self.node_uid = existing.metadata.uid
            self.core.patch_node(self.name, {"metadata": {"labels": labels}}, _content_type=SMP)
        self.core.patch_node_status(self.name, {"status": self.node_status()}, _content_type=SMP)
        log.info("node %s registered (kubelet port %d)", self.name, self.port)

    def heartbeat(self) -> None:
        """Renew the node's Lease every 10 s; refresh its status every minute."""
        last_status = time.monotonic()
        while not self.stopped.is_set():
            try:
                self._renew_lease()
                if time.monotonic() - last_status > 60:
                    self.core.patch_node_status(
                        self.name, {"status": self.node_status()}, _content_type=SMP
                    )
                    last_status = time.monotonic()
            except Exception as err:  # keep beating: the API server may be restarting
                log.warning("node %s: heartbeat failed: %s", self.name, err)
            self.stopped.wait(10)

    def _renew_lease(self) -> None:
        ns = "kube-node-lease"
        stamp = timestamp()[:26] + "Z"  # MicroTime
        try:
            lease = self.leases.read_namespaced_lease(self.name, ns)
        except ApiException as err:
            if err.status != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": self.name,
                    "namespace": ns,
                    "ownerReferences": [
                        {
                            "apiVersion": "v1",
                            "kind": "Node",
                            "name": self.name,
                            "uid": self.node_uid,
                        }
                    ],
                },
                "spec": {
                    "holderIdentity": self.name,
                    "leaseDurationSeconds": self.config.lease_duration_s,
                    "renewTime": stamp,
                },
            }
            self.leases.create_namespaced_lease(ns, body)
            return
        self.leases.patch_namespaced_lease(
            self.name,
            ns,
            {
                "metadata": {"resourceVersion": lease.metadata.resource_version},
                "spec": {"renewTime": stamp},
            },
            _content_type=SMP,
        )

    # --- pods ----------------------------------------------------------------------------

    def watch_pods(self) -> None:
        """Follow the pods bound to this node, from a list and a watch that resumes."""
        selector = f"spec.nodeName={self.name}"
        version: str | None = None
        while not self.stopped.is_set():
            try:
                if version is None:
                    listed = self.raw(
                        self.core.list_pod_for_all_namespaces, field_selector=selector
                    )
                    seen = set()
                    for pod in listed.get("items") or []:
                        seen.add(pod["metadata"]["uid"])
                        self._on_pod("MODIFIED", pod)
                    with self.lock:
                        lost = [w for uid, w in self.workers.items() if uid not in seen]
                    for worker in lost:
                        worker.removed()
                    version = listed["metadata"]["resourceVersion"]
                stream = kubernetes.watch.Watch().stream(
                    self.core.list_pod_for_all_namespaces,
                    field_selector=selector,
                    resource_version=version,
                    timeout_seconds=60,
                    allow_watch_bookmarks=True,
                )
                for event in stream:
                    if self.stopped.is_set():
                        return
                    obj = event["raw_object"]
                    kind = event["type"]
                    if kind == "ERROR":
                        if obj.get("code") == 410:
                            version = None
                        break
                    version = obj["metadata"].get("resourceVersion", version)
                    if kind != "BOOKMARK":
                        self._on_pod(kind, obj)
            except ApiException as err:
                if err.status == 410:
                    version = None
                else:
                    log.warning("node %s: pod watch: %s", self.name, err)
                    self.stopped.wait(1)
            except Exception as err:
                log.warning("node %s: pod watch: %s", self.name, err)
                self.stopped.wait(1)

    def _on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self.lock:
            worker = self.workers.get(uid)
            if worker is None and kind != "DELETED":
                worker = PodWorker(self, pod)
                self.workers[uid] = worker
                self.by_name[(worker.namespace, worker.name)] = worker
                worker.thread.start()
                return
        if worker is None:
            return
        if kind == "DELETED":
            worker.removed()
        else:
            worker.update(pod)

    def forget(self, worker: PodWorker) -> None:
        with self.lock:
            self.workers.pop(worker.uid, None)
            if self.by_name.get((worker.namespace, worker.name)) is worker:
                del self.by_name[(worker.namespace, worker.name)]

    def find(self, namespace: str, name: str) -> PodWorker | None:
        with self.lock:
            return self.by_name.get((namespace, name))

    def stop(self) -> None:
        self.stopped.set()
        with self.lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.removed()
        for worker in workers:
            worker.thread.join(timeout=15)

    # --- API writes for pod workers -----------------------------------------------------------

    def patch_pod_status(self, worker: PodWorker, body: dict[str, Any]) -> bool:
        """False when the pod is gone (404, or another pod by that name now). Retried
        for up to two minutes, as the kubelet's status manager keeps syncing: a status
        written while the API server restarts is not lost."""
        deadline = time.monotonic() + STATUS_RETRY_S
        attempt = 0
        while not self.stopped.is_set() and time.monotonic() < deadline:
            attempt += 1
            try:
                self.core.patch_namespaced_pod_status(
                    worker.name, worker.namespace, body, _content_type=SMP
                )
                return True
            except ApiException as err:
                if err.status in (404, 409):
                    return False
                log.warning("pod %s/%s: status: %s", worker.namespace, worker.name, err.reason)
            except Exception as err:
                log.warning("pod %s/%s: status: %s", worker.namespace, worker.name, err)
            time.sleep(min(0.5 * attempt, 5.0))
        return True

    def delete_pod(self, worker: PodWorker) -> None:
        """The kubelet's final delete: grace 0, only this pod (uid precondition)."""
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": worker.uid}}
        try:
            self.core.delete_namespaced_pod(worker.name, worker.namespace, body=body)
        except ApiException as err:
            if err.status not in (404, 409):
                log.warning("pod %s/%s: delete: %s", worker.namespace, worker.name, err)

    def event(
        self, worker: PodWorker, container: str | None, kind: str, reason: str, message: str
    ) -> None:
        stamp = now()
        involved: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": worker.name,
            "namespace": worker.namespace,
            "uid": worker.uid,
        }
        if container:
            involved["fieldPath"] = f"spec.containers{{{container}}}"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{worker.name}.", "namespace": worker.namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": "kubelet", "host": self.name},
            "reportingComponent": "kubelet",
            "reportingInstance": self.name,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            self.core.create_namespaced_event(worker.namespace, body)
        except Exception as err:  # events are best effort, as in the kubelet
            log.debug("event %s: %s", reason, err)

    def token_for(self, worker: PodWorker) -> volumes.TokenSource:
        """A TokenRequest source bound to ``worker``'s pod (what the Node authorizer
        lets a node ask for: tokens of its pods' service accounts, bound to the pod)."""

        def token(namespace: str, account: str, audiences: list[str], ttl: int) -> str:
            body = {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {
                    "audiences": audiences,
                    "expirationSeconds": max(ttl, 600),
                    "boundObjectRef": {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": worker.name,
                        "uid": worker.uid,
                    },
                },
            }
            try:
                reply = self.raw(
                    self.core.create_namespaced_service_account_token, account, namespace, body
                )
            except ApiException as err:
                raise volumes.VolumeError(
                    f"failed to fetch token: {err.status} {err.reason}"
                ) from None
            return str(reply["status"]["token"])

        return token

    # --- what a container needs -------------------------------------------------------------

    def pull(self, container: dict[str, Any]) -> tuple[str, str] | None:
        """(reason, message) when the image cannot be had; None when it is 'present'."""
        image = container.get("image") or ""
        if not _IMAGE.match(image):
            return (
                "InvalidImageName",
                f'Failed to apply default image tag "{image}": couldn\'t parse image name '
                f'"{image}": invalid reference format',
            )
        pattern = self.config.pull_fails
        if pattern is None or not pattern.search(image):
            return None
        if container.get("imagePullPolicy") == "Never":
            return (
                "ErrImageNeverPull",
                f'Container image "{image}" is not present with pull policy of Never',
            )
        return (
            "ErrImagePull",
            f'rpc error: code = NotFound desc = failed to pull and unpack image "{image}": '
            f'failed to resolve reference "{image}": {image}: not found',
        )

    def service_env(self) -> dict[str, str]:
        # The kubernetes Service's variables, pointing at the API server itself: there
        # is no kube-proxy behind the service IP on this machine.
        host, port = "127.0.0.1", str(self.api_port)
        url = f"tcp://{host}:{port}"
        return {
            "KUBERNETES_SERVICE_HOST": host,
            "KUBERNETES_SERVICE_PORT": port,
            "KUBERNETES_SERVICE_PORT_HTTPS": port,
            "KUBERNETES_PORT": url,
            f"KUBERNETES_PORT_{port}_TCP": url,
            f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp",
            f"KUBERNETES_PORT_{port}_TCP_PORT": port,
            f"KUBERNETES_PORT_{port}_TCP_ADDR": host,
        }

    def launch_spec(
        self, worker: PodWorker, container: dict[str, Any], instance: int
    ) -> tuple[LaunchSpec, int | None]:
        """What the launcher needs, and the memory limit in bytes (or None)."""
        pod = worker.pod
        spec = pod["spec"]
        image = self.config.image(container.get("image") or "")
        pod_sc = spec.get("securityContext") or {}
        sc = {**pod_sc, **(container.get("securityContext") or {})}
        uid = sc.get("runAsUser", image.user if image.user is not None else 0)
        gid = sc.get("runAsGroup", 0)
        if sc.get("runAsNonRoot") and uid == 0:
            raise envmod.ConfigError(
                "container has runAsNonRoot and image will run as root "
                f'(pod: "{worker.name}_{worker.namespace}({worker.uid})", '
                f"container: {container['name']})"
            )
        groups = list(pod_sc.get("supplementalGroups") or [])
        if pod_sc.get("fsGroup") is not None:
            groups.insert(0, pod_sc["fsGroup"])
        own = envmod.resolve(pod, container, self.objects, self.allocatable, self.service_env())
        path = image.env.get("PATH", DEFAULT_PATH)
        if image.commands:
            path = f"/.testnode/bin:{path}"
        full_env = {"PATH": path, **image.env, **own}
        full_env["PATH"] = own.get("PATH", path)
        hostname = (spec.get("hostname") or worker.name)[:63]
        full_env.setdefault("HOSTNAME", hostname)
        full_env.setdefault("HOME", "/root" if uid == 0 else "/")
        argv = envmod.argv(container, image.entrypoint, image.cmd, own)
        if not argv:
            raise CreateError("failed to generate container spec: no command specified")
        mounts: list[dict[str, Any]] = [
            {"source": source, "target": target, "read_only": True}
            for target, source in image.mounts.items()
        ]
        forced = volumes.read_only(pod)
        for mount in container.get("volumeMounts") or []:
            source = worker.volumes.get(mount["name"])
            if source is None:
                raise CreateError(f"volume {mount['name']!r} is not set up")
            sub = mount.get("subPath") or envmod.expand(mount.get("subPathExpr") or "", own.get)
            if sub:
                source = str(Path(source) / sub)
                if not Path(source).exists():
                    Path(source).mkdir(parents=True, exist_ok=True)
            mounts.append(
                {
                    "source": source,
                    "target": mount["mountPath"],
                    "read_only": bool(mount.get("readOnly")) or mount["name"] in forced,
                }
            )
        work = worker.dir / "containers" / container["name"]
        work.mkdir(parents=True, exist_ok=True)
        message_file = work / f"termination-log.{instance}"
        message_file.write_bytes(b"")
        if uid:
            os.chown(message_file, uid, gid)
        root, scratch = work / "root", work / "scratch"
        root.mkdir(exist_ok=True)
        scratch.mkdir(exist_ok=True)
        limit = ((container.get("resources") or {}).get("limits") or {}).get("memory")
        memory = int(parse_quantity(limit)) if limit is not None else None
        launch = LaunchSpec(
            root=str(root),
            scratch=str(scratch),
            argv=argv,
            env=full_env,
            cwd=container.get("workingDir") or image.workdir or "/",
            uid=int(uid),
            gid=int(gid),
            groups=[int(g) for g in groups],
            hostname=hostname,
            mounts=mounts,
            shm_size=self.config.shm_size,
            termination_log={
                "source": str(message_file),
                "path": container.get("terminationMessagePath") or "/dev/termination-log",
            },
            commands=image.commands,
        )
        return launch, memory

    # --- raw API reads ---------------------------------------------------------------------

    @staticmethod
    def raw(call: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """A client call's JSON as a dict (camelCase, like the API server sends it)."""
        response = call(*args, _preload_content=False, **kwargs)
        return json.loads(response.data)


class _Objects:
    """ConfigMaps and Secrets, read with the node's own identity (the Node authorizer
    lets a node read only what its pods refer to)."""

    def __init__(self, node: NodeAgent) -> None:
        self.node = node

    def _read(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        core = self.node.core
        read = {
            "configmaps": core.read_namespaced_config_map,
            "secrets": core.read_namespaced_secret,
            "persistentvolumeclaims": core.read_namespaced_persistent_volume_claim,
        }[kind]
        try:
            return self.node.raw(read, name, namespace)
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def claim(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self._read("persistentvolumeclaims", namespace, name)

    def volume(self, name: str) -> dict[str, Any] | None:
        try:
            return self.node.raw(self.node.core.read_persistent_volume, name)
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    def config_map(self, namespace: str, name: str) -> dict[str, str] | None:
        obj = self._read("configmaps", namespace, name)
        if obj is None:
            return None
        data = dict(obj.get("data") or {})
        for key, value in (obj.get("binaryData") or {}).items():
            data[key] = base64.b64decode(value).decode("utf-8", "surrogateescape")
        return data

    def secret(self, namespace: str, name: str) -> dict[str, str] | None:
        obj = self._read("secrets", namespace, name)
        if obj is None:
            return None
        return {
            key: base64.b64decode(value).decode("utf-8", "surrogateescape")
            for key, value in (obj.get("data") or {}).items()
        }
