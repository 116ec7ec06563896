#!/usr/bin/env python3
"""The project's local Kubernetes control plane: `make cluster` and `make cluster-down`.

    python tests/cluster/cluster.py up       # build what is missing, start, bootstrap
    python tests/cluster/cluster.py down     # stop what `up` started, by PID
    python tests/cluster/cluster.py status   # where things are, and their memory
    python tests/cluster/cluster.py restart kube-apiserver   # stop one component, start it again

`up` builds tests/cluster/controlplane (one Go binary, `kcp`: etcd, kube-apiserver,
kube-controller-manager, kube-scheduler, certificates) into build/controlplane/<key>/
unless it is there, starts each component on a free loopback port, applies the
project's namespace, RBAC, the example's objects and the test CRDs, starts the test
node (tests/cluster/testnode) and writes .cluster/kubeconfig. See docs/cluster.md.

Exit codes: 0 done, 2 bad input or state (a port in use, a stale .cluster/ from a
killed run, no Go toolchain), 3 a failure (a build, a component that did not start).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SOURCE = HERE / "controlplane"
NODE_CONFIG = HERE / "node.yaml"
CONTEXT = "clusterbisect-local"
NAMESPACE = "clusterbisect"
MIN_GO = (1, 26)
# What `up` applies once the API server is ready, in order.
BOOTSTRAP = [
    ROOT / "manifests" / "namespace.yaml",
    ROOT / "manifests" / "rbac.yaml",
    ROOT / "manifests" / "example" / "training-upgrade.yaml",
]
START_TIMEOUT_S = 90.0


class ClusterError(Exception):
    """One line for the user, and the exit code."""

    def __init__(self, message: str, code: int = 3) -> None:
        super().__init__(message)
        self.code = code


def say(text: str) -> None:
    print(f"cluster: {text}", flush=True)


def state_dir() -> Path:
    return Path(os.environ.get("CLUSTER_DIR", ROOT / ".cluster")).resolve()


# --- the binary ------------------------------------------------------------------------


def k8s_version() -> str:
    match = re.search(r"^\s*k8s\.io/kubernetes (v\S+)", (SOURCE / "go.mod").read_text(), re.M)
    if not match:
        raise ClusterError(f"{SOURCE / 'go.mod'}: no k8s.io/kubernetes requirement", 2)
    return match[1]


def binary_path() -> Path:
    """build/controlplane/kubernetes-<version>-<hash of the module's files>/kcp."""
    digest = hashlib.sha256()
    for path in sorted(SOURCE.iterdir()):
        if path.suffix in (".go", ".mod", ".sum"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    key = f"kubernetes-{k8s_version()}-{digest.hexdigest()[:12]}"
    base = Path(os.environ.get("CLUSTER_BUILD_DIR", ROOT / "build" / "controlplane"))
    return base.resolve() / key / "kcp"


def go_env() -> dict[str, str]:
    env = dict(os.environ)
    env["GOTOOLCHAIN"] = "local"  # the module needs go 1.26: never fetch a toolchain
    env["GOFLAGS"] = "-mod=readonly"
    env.setdefault("GOMAXPROCS", str(os.cpu_count() or 2))
    return env


def build(binary: Path) -> None:
    go = shutil.which("go")
    if go is None:
        raise ClusterError(
            "no Go toolchain on PATH: the control plane is built from Go modules "
            f"(Go {MIN_GO[0]}.{MIN_GO[1]} or newer; see docs/cluster.md)",
            2,
        )
    found = subprocess.run([go, "version"], capture_output=True, text=True, env=go_env())
    match = re.search(r"go(\d+)\.(\d+)", found.stdout)
    if not match or (int(match[1]), int(match[2])) < MIN_GO:
        raise ClusterError(
            f"Go {MIN_GO[0]}.{MIN_GO[1]} or newer is needed to build the control plane; "
            f"found: {found.stdout.strip() or found.stderr.strip()}",
            2,
        )
    binary.parent.mkdir(parents=True, exist_ok=True)
    log = binary.parent / "build.log"
    partial = binary.with_suffix(".partial")
    say(f"building {binary.parent.name} (the first build takes several minutes) ...")
    started = time.monotonic()
    command = [
        go, "build", "-p", str(os.cpu_count() or 2), "-trimpath",
        "-ldflags", "-s -w", "-o", str(partial), ".",
    ]  # fmt: skip
    with log.open("w") as out:
        done = subprocess.run(
            command, cwd=SOURCE, stdout=out, stderr=subprocess.STDOUT, env=go_env()
        )
    if done.returncode != 0:
        partial.unlink(missing_ok=True)
        raise ClusterError(f"the control plane build failed (exit {done.returncode}); {tail(log)}")
    partial.rename(binary)
    say(f"built {binary} in {time.monotonic() - started:.0f} s")


def tail(log: Path, lines: int = 15) -> str:
    try:
        text = log.read_text(errors="replace").rstrip().splitlines()[-lines:]
    except OSError:
        return f"no log at {log}"
    return f"last lines of {log}:\n    " + "\n    ".join(text)


# --- processes -----------------------------------------------------------------------------


def start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (to tell a reused PID from ours); None
    when it is gone or a zombie (which is reaped here if it is our child)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        return None
    return fields[19]


def alive(entry: dict[str, Any]) -> bool:
    return start_time(entry["pid"]) == entry["start"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def listening_ports() -> set[int]:
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":  # LISTEN
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


class Cluster:
    """The state of one cluster: .cluster/state.json and what it names."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.state_file = base / "state.json"
        self.logs = base / "logs"
        self.pki = base / "pki"
        self.state: dict[str, Any] = {"components": {}, "ports": {}}

    def load(self) -> bool:
        try:
            self.state = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return False
        except (OSError, json.JSONDecodeError) as err:
            raise ClusterError(
                f"{self.state_file}: unreadable ({err}); run `make cluster-down`", 2
            ) from None
        return True

    def save(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state, indent=2))
        tmp.replace(self.state_file)

    def spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, append: bool = False
    ) -> dict[str, Any]:
        log = self.logs / f"{name}.log"
        with log.open("a" if append else "w") as out:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives `make`, and is stopped only by `down`
                env=env,
                cwd=ROOT,
            )
        entry = {
            "pid": process.pid,
            "start": start_time(process.pid),
            "log": str(log),
            "argv": argv,
            "pythonpath": (env or {}).get("PYTHONPATH"),
        }
        self.state["components"][name] = entry
        self.save()
        return entry

    def wait_ready(self, name: str, probe: Any, timeout_s: float = START_TIMEOUT_S) -> None:
        entry = self.state["components"][name]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not alive(entry):
                raise ClusterError(f"{name} exited during start-up; {tail(Path(entry['log']))}")
            with contextlib.suppress(Exception):
                if probe():
                    return
            time.sleep(0.25)
        raise ClusterError(
            f"{name} was not ready after {timeout_s:.0f} s; {tail(Path(entry['log']))}"
        )

    def stop(self, quiet: bool = False) -> list[str]:
        """Stop every recorded process (the node first), by PID; returns problems."""
        problems = []
        components = list(self.state.get("components", {}).items())
        for name, entry in reversed(components):
            if not alive(entry):
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(entry["pid"], signal.SIGTERM)
            deadline = time.monotonic() + 20
            while alive(entry) and time.monotonic() < deadline:
                time.sleep(0.1)
            if alive(entry):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(entry["pid"], signal.SIGKILL)
                time.sleep(0.5)
            if alive(entry):
                problems.append(f"{name} (pid {entry['pid']}) did not stop")
            elif not quiet:
                say(f"stopped {name} (pid {entry['pid']})")
        problems += sweep_cgroups(self.state.get("cgroup"))
        deadline = time.monotonic() + 10
        ours = set(self.state.get("ports", {}).values())
        while ours & listening_ports() and time.monotonic() < deadline:
            time.sleep(0.2)
        for port in sorted(ours & listening_ports()):
            problems.append(f"port {port} is still listening")
        return problems

    def stop_one(self, name: str) -> None:
        """Stop one component by its PID (SIGTERM, then SIGKILL after 20 s)."""
        entry = self.state["components"][name]
        with contextlib.suppress(ProcessLookupError):
            os.kill(entry["pid"], signal.SIGTERM)
        deadline = time.monotonic() + 20
        while alive(entry) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(entry):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(entry["pid"], signal.SIGKILL)
            time.sleep(0.5)
        if alive(entry):
            raise ClusterError(f"{name} (pid {entry['pid']}) did not stop")

    def start_one(self, name: str) -> None:
        """Start a stopped component again with its recorded command line (its log is
        appended to) and wait until it is ready."""
        entry = self.state["components"][name]
        if alive(entry):
            raise ClusterError(f"{name} (pid {entry['pid']}) is running", 2)
        env = {**os.environ, "PYTHONPATH": entry["pythonpath"]} if entry.get("pythonpath") else None
        self.spawn(name, entry["argv"], env, append=True)
        pki, port = self.pki, self.state["ports"]["apiserver"]
        if name == "kube-apiserver":
            self.wait_ready(name, lambda: tls_get(f"https://127.0.0.1:{port}/readyz", pki) == "ok")
        else:  # still running after two seconds
            deadline = time.monotonic() + 2
            self.wait_ready(name, lambda: time.monotonic() > deadline)


def restart(name: str, down_s: float = 0.0) -> float:
    """Stop component ``name`` (say kube-apiserver), keep it down ``down_s``, start it
    again; the seconds it was unreachable. For the live tests (an API server restart
    in the middle of a probe)."""
    cluster = Cluster(state_dir())
    if not cluster.load():
        raise ClusterError("no cluster is running", 2)
    if name not in cluster.state.get("components", {}):
        known = ", ".join(cluster.state.get("components", {}))
        raise ClusterError(f"no component {name!r} (components: {known})", 2)
    started = time.monotonic()
    cluster.stop_one(name)
    time.sleep(down_s)
    cluster.start_one(name)
    return time.monotonic() - started


def sweep_cgroups(name: str | None) -> list[str]:
    """Kill what is left in the test node's cgroups (its containers) and remove them."""
    if not name:
        return []
    problems = []
    for root in (Path("/sys/fs/cgroup/memory"), Path("/sys/fs/cgroup")):
        base = root / name
        if not base.is_dir():
            continue
        for group in sorted(base.rglob("*"), key=lambda p: -len(p.parts)) + [base]:
            procs = group / "cgroup.procs"
            if not procs.exists():
                continue
            for _ in range(50):
                pids = [int(p) for p in procs.read_text().split()]
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.1)
            try:
                group.rmdir()
            except OSError as err:
                problems.append(f"cgroup {group}: {err.strerror}")
    return problems


# --- certificates, kubeconfigs, readiness ----------------------------------------------------


def kubeconfig(path: Path, server: str, pki: Path, user: str, namespace: str | None = None) -> None:
    context: dict[str, Any] = {"cluster": CONTEXT, "user": user}
    if namespace:
        context["namespace"] = namespace
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": CONTEXT,
                "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate": str(pki / f"{user}.crt"),
                    "client-key": str(pki / f"{user}.key"),
                },
            }
        ],
        "contexts": [{"name": CONTEXT, "context": context}],
        "current-context": CONTEXT,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    path.chmod(0o600)


def tls_get(url: str, pki: Path, user: str | None = "admin") -> str:
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    if user:
        context.load_cert_chain(pki / f"{user}.crt", pki / f"{user}.key")
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(url, context=context, timeout=5) as reply:
        return str(reply.read().decode())


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return str(reply.read().decode())


# --- up / down / status ---------------------------------------------------------------------


def node_names() -> list[str]:
    doc = yaml.safe_load(NODE_CONFIG.read_text())
    return [n["name"] for n in doc.get("nodes") or []]


def requested_port(name: str) -> int | None:
    value = os.environ.get(name)
    if not value:
        return None
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ClusterError(f"{name}={value!r}: expected a TCP port number", 2)
    port = int(value)
    if port_in_use(port):
        raise ClusterError(f"port 127.0.0.1:{port} ({name}) is in use", 2)
    return port


def up() -> int:
    started = time.monotonic()
    cluster = Cluster(state_dir())
    if cluster.load():
        components = cluster.state.get("components", {})
        dead = [name for name, entry in components.items() if not alive(entry)]
        if not dead and cluster.state.get("ready"):
            say("already running")
            print_summary(cluster)
            return 0
        what = ", ".join(f"{n} (pid {components[n]['pid']})" for n in dead) or "an unfinished start"
        raise ClusterError(
            f"stale {cluster.base} from a killed run ({what} not running): "
            "run `make cluster-down` first",
            2,
        )
    api_port = requested_port("CLUSTER_API_PORT") or free_port()
    binary = binary_path()
    if not binary.exists():
        build(binary)
    for sub in ("pki", "etcd", "node", "logs"):
        shutil.rmtree(cluster.base / sub, ignore_errors=True)
    cluster.logs.mkdir(parents=True)
    ports = {
        "apiserver": api_port,
        "etcd": free_port(),
        "etcd-peer": free_port(),
        "controller-manager": free_port(),
        "scheduler": free_port(),
    }
    if len(set(ports.values())) != len(ports):
        raise ClusterError("could not find distinct free ports; try again", 3)
    cluster.state.update(
        ports=ports,
        binary=str(binary),
        cgroup=f"clusterbisect-testnode/{hashlib.sha256(str(cluster.base).encode()).hexdigest()[:10]}",
    )
    cluster.save()
    try:
        start_all(cluster, binary, ports)
    except BaseException:
        problems = cluster.stop(quiet=True)
        for problem in problems:
            say(f"cleanup: {problem}")
        if not problems:
            remove_state(cluster)
        raise
    cluster.state["ready"] = True
    cluster.state["startup_s"] = round(time.monotonic() - started, 1)
    cluster.save()
    say(f"up in {time.monotonic() - started:.1f} s")
    print_summary(cluster)
    return 0


def start_all(cluster: Cluster, binary: Path, ports: dict[str, int]) -> None:
    pki = cluster.pki
    done = subprocess.run(
        [
            str(binary),
            "pki",
            "-dir",
            str(pki),
            *[arg for n in node_names() for arg in ("-node", n)],
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise ClusterError(f"writing certificates failed: {done.stderr.strip()}")
    server = f"https://127.0.0.1:{ports['apiserver']}"
    kubeconfig(cluster.base / "kubeconfig", server, pki, "admin", NAMESPACE)
    for user in ("controller-manager", "scheduler"):
        kubeconfig(cluster.base / f"{user}.kubeconfig", server, pki, user)

    etcd_url = f"http://127.0.0.1:{ports['etcd']}"
    cluster.spawn(
        "etcd",
        [
            str(binary), "etcd", "-data-dir", str(cluster.base / "etcd"),
            "-listen-client-url", etcd_url,
            "-listen-peer-url", f"http://127.0.0.1:{ports['etcd-peer']}",
            "-unsafe-no-fsync",
        ],
    )  # fmt: skip
    cluster.wait_ready("etcd", lambda: '"health":"true"' in http_get(etcd_url + "/health"))

    cluster.spawn(
        "kube-apiserver",
        [
            str(binary), "kube-apiserver",
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", f"--secure-port={ports['apiserver']}",
            "--advertise-address=127.0.0.1",
            # The endpoint reconciler refuses a loopback address for the kubernetes Service.
            "--endpoint-reconciler-type=none",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP",
            "--profiling=false",
        ],
    )  # fmt: skip
    cluster.wait_ready("kube-apiserver", lambda: tls_get(server + "/readyz", pki) == "ok")

    for name, port in (
        ("kube-controller-manager", ports["controller-manager"]),
        ("kube-scheduler", ports["scheduler"]),
    ):
        config = cluster.base / f"{name.removeprefix('kube-')}.kubeconfig"
        extra = []
        if name == "kube-controller-manager":
            extra = [
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                "--use-service-account-credentials=true",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
            ]
        cluster.spawn(
            name,
            [
                str(binary), name,
                f"--kubeconfig={config}",
                f"--authentication-kubeconfig={config}",
                f"--authorization-kubeconfig={config}",
                "--bind-address=127.0.0.1", f"--secure-port={port}",
                "--leader-elect=false",
                *extra,
            ],
        )  # fmt: skip
    for name, port in (
        ("kube-controller-manager", ports["controller-manager"]),
        ("kube-scheduler", ports["scheduler"]),
    ):
        cluster.wait_ready(
            name, lambda port=port: tls_get(f"https://127.0.0.1:{port}/healthz", pki, None) == "ok"
        )

    bootstrap(cluster.base / "kubeconfig", lambda path: json.loads(tls_get(server + path, pki)))

    cluster.spawn(
        "testnode",
        [
            sys.executable, "-m", "testnode",
            "--config", str(NODE_CONFIG),
            "--api-server", server,
            "--pki-dir", str(pki),
            "--state-dir", str(cluster.base / "node"),
            "--cgroup-name", cluster.state["cgroup"],
        ],
        env={**os.environ, "PYTHONPATH": str(HERE)},
    )  # fmt: skip
    cluster.wait_ready("testnode", lambda: nodes_ready(cluster.base / "kubeconfig"))


def api(kubeconfig_path: Path) -> Any:
    import kubernetes

    return kubernetes.config.new_client_from_config(config_file=str(kubeconfig_path))


def bootstrap(kubeconfig_path: Path, fetch: Any) -> None:
    """The project's namespace and RBAC, the example's objects and the test CRDs."""
    import kubernetes
    from kubernetes.client.exceptions import ApiException
    from kubernetes.utils import FailToCreateError, create_from_dict

    sys.path.insert(0, str(HERE))
    try:
        import crds
    finally:
        sys.path.pop(0)
    client = api(kubeconfig_path)
    docs: list[dict[str, Any]] = []
    for path in BOOTSTRAP:
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    docs += crds.definitions(fetch)
    for doc in docs:
        try:
            create_from_dict(client, doc)
        except FailToCreateError as err:
            if not all(isinstance(e, ApiException) and e.status == 409 for e in err.api_exceptions):
                raise ClusterError(
                    f"bootstrap: creating {doc['kind']} {doc['metadata']['name']}: {err}"
                ) from None
    # CRDs must be established, and the namespace's default ServiceAccount must exist,
    # before anything is created there.
    ext: Any = kubernetes.client.ApiextensionsV1Api(client)
    core: Any = kubernetes.client.CoreV1Api(client)
    deadline = time.monotonic() + 60
    names = [d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition"]
    while time.monotonic() < deadline:
        established = all(
            any(
                c.type == "Established" and c.status == "True"
                for c in ext.read_custom_resource_definition(n).status.conditions or []
            )
            for n in names
        )
        with contextlib.suppress(ApiException):
            if established and core.read_namespaced_service_account("default", NAMESPACE):
                return
        time.sleep(0.5)
    raise ClusterError(
        "bootstrap: the CRDs or the namespace's default ServiceAccount did not appear in 60 s"
    )


def nodes_ready(kubeconfig_path: Path) -> bool:
    import kubernetes

    core: Any = kubernetes.client.CoreV1Api(api(kubeconfig_path))
    nodes = {n.metadata.name: n for n in core.list_node().items}
    for name in node_names():
        node = nodes.get(name)
        if node is None:
            return False
        ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
        tainted = any(t.key == "node.kubernetes.io/not-ready" for t in node.spec.taints or [])
        if not ready or tainted:
            return False
    return True


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its descendants, in MiB."""
    total = 0
    pids = [pid]
    while pids:
        current = pids.pop()
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
            pids += [int(c) for c in children]
    return total / 1024


def print_summary(cluster: Cluster) -> None:
    state = cluster.state
    ports = state.get("ports", {})
    base = cluster.base
    rel = base.relative_to(ROOT) if base.is_relative_to(ROOT) else base
    print(f"  kubeconfig  {rel}/kubeconfig  (context {CONTEXT}, namespace {NAMESPACE})")
    print(f"  API server  https://127.0.0.1:{ports.get('apiserver')}")
    print(f"  binary      {state.get('binary')}")
    total = 0.0
    for name, entry in state.get("components", {}).items():
        mib = rss_mib(entry["pid"]) if alive(entry) else 0.0
        total += mib
        port = {"etcd": "etcd", "kube-apiserver": "apiserver"}.get(name, name.removeprefix("kube-"))
        where = f"127.0.0.1:{ports[port]}" if port in ports else "-"
        print(f"  {name:<24} pid {entry['pid']:<8} {where:<16} {mib:6.0f} MiB  {entry['log']}")
    print(f"  memory      {total:.0f} MiB resident in all")
    print(f"  nodes       {', '.join(node_names())} (tests/cluster/node.yaml)")
    print(f"  use it      export KUBECONFIG={base}/kubeconfig")


def down() -> int:
    cluster = Cluster(state_dir())
    if not cluster.load():
        say(f"nothing to stop (no {cluster.state_file})")
        return 0
    problems = cluster.stop()
    if problems:
        raise ClusterError("; ".join(problems), 3)
    remove_state(cluster)
    say(f"down; logs kept in {cluster.logs}")
    return 0


def remove_state(cluster: Cluster) -> None:
    """Everything of a stopped cluster but its logs."""
    names = ("pki", "etcd", "node", "kubeconfig", "controller-manager.kubeconfig")
    for sub in (*names, "scheduler.kubeconfig", "state.json"):
        path = cluster.base / sub
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def status() -> int:
    cluster = Cluster(state_dir())
    if not cluster.load():
        say("not running")
        return 1
    dead = [n for n, e in cluster.state.get("components", {}).items() if not alive(e)]
    say("running" if not dead else f"stale: {', '.join(dead)} not running")
    print_summary(cluster)
    return 0 if not dead else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "status", "restart"])
    parser.add_argument("component", nargs="?", help="restart: the component to restart")
    args = parser.parse_args(argv)
    try:
        if args.command == "restart":
            if not args.component:
                raise ClusterError("restart: name the component (e.g. kube-apiserver)", 2)
            say(f"{args.component} was down for {restart(args.component):.1f} s")
            return 0
        return {"up": up, "down": down, "status": status}[args.command]()
    except ClusterError as err:
        print(f"cluster: {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        print("cluster: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
