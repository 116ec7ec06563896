"""The test node against the real control plane: what it promises to do as a kubelet.

Each test creates pods with the admin's client and reads back what the node reported
through the API server: env resolution, image pull failures, config errors, the
memory limit, termination messages, restarts, graceful deletion, volumes in the
container's own mount namespace, and the containerLogs options behind the proxy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from livekit import (
    Kube,
    container_status,
    live,
    namespace,
    run_pod,
    state_of,
    wait_for,
    wait_terminated,
)

pytestmark = live

PY = "python:3.12-slim"


@pytest.fixture(scope="module")
def kube() -> Kube:
    return Kube()


@pytest.fixture(scope="module")
def ns(kube: Kube) -> Iterator[str]:
    with namespace(kube, "cb-node") as name:
        kube.core.create_namespaced_config_map(
            name, {"metadata": {"name": "settings"}, "data": {"mode": "fast", "level": "3"}}
        )
        kube.core.create_namespaced_secret(
            name, {"metadata": {"name": "creds"}, "stringData": {"token": "s3cr3t"}}
        )
        yield name


def python(code: str, **container: Any) -> dict[str, Any]:
    return {"name": "main", "image": PY, "command": ["python", "-c", code], **container}


def logs(kube: Kube, ns: str, pod: str, **options: Any) -> str:
    return str(kube.core.read_namespaced_pod_log(pod, ns, container="main", **options))


def test_env_is_resolved_like_the_kubelet_and_nothing_leaks_from_the_host(
    kube: Kube, ns: str
) -> None:
    code = "import json, os; print(json.dumps(dict(os.environ)))"
    env = [
        {"name": "PLAIN", "value": "a"},
        {"name": "EXPANDED", "value": "$(PLAIN)-$(CFG_mode)-$$(PLAIN)-$(MISSING)"},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "LABEL", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['team']"}}},
        {
            "name": "MEM_MI",
            "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}},
        },
        {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu"}}},
        {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "level"}}},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
        {
            "name": "OPTIONAL",
            "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nope", "optional": True}},
        },
    ]
    container = python(
        code,
        env=env,
        envFrom=[{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
        resources={"requests": {"cpu": "250m"}, "limits": {"memory": "200Mi"}},
    )
    pod = run_pod(kube, ns, {"containers": [container]})
    name = pod["metadata"]["name"]
    kube.core.patch_namespaced_pod(name, ns, {"metadata": {"labels": {"team": "search"}}})
    term = wait_terminated(kube, ns, name, "main")
    assert term["exitCode"] == 0 and term["reason"] == "Completed"
    seen = json.loads(logs(kube, ns, name).strip().splitlines()[-1])
    assert seen["PLAIN"] == "a"
    assert seen["EXPANDED"] == "a-fast-$(PLAIN)-$(MISSING)"
    assert seen["POD"] == name and seen["NODE"] == "cpu-1"
    assert seen["MEM_MI"] == "200" and seen["CPU"] == "1"  # 250m rounds up to 1 core
    assert seen["LEVEL"] == "3" and seen["TOKEN"] == "s3cr3t"
    assert seen["CFG_mode"] == "fast" and seen["CFG_level"] == "3"
    assert "OPTIONAL" not in seen
    assert seen["HOSTNAME"] == name
    assert seen["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    # The host's environment stays out: only the image's PATH and what the pod asks for.
    host_only = {"CLUSTERBISECT_KUBECONFIG", "VIRTUAL_ENV", "PYTHONPATH", "PWD", "USER", "SHELL"}
    assert not host_only & set(seen)
    assert "LABEL" in seen  # the label was set after creation: read at container start


def test_an_image_that_cannot_be_pulled_stays_pending_in_backoff(kube: Kube, ns: str) -> None:
    container = {"name": "main", "image": "registry.example.com/does-not-exist:1"}
    name = run_pod(kube, ns, {"containers": [container]})["metadata"]["name"]
    reasons = set()

    def backing_off() -> bool:
        pod = kube.pod(ns, name)
        _, details = state_of(pod, "main")
        reasons.add(details.get("reason"))
        return pod["status"]["phase"] == "Pending" and "ImagePullBackOff" in reasons

    wait_for(backing_off, 60, "ImagePullBackOff", every_s=0.2)
    assert reasons & {"ErrImagePull", "ImagePullBackOff"} == reasons - {None, "ContainerCreating"}
    with pytest.raises(Exception, match="trying and failing to pull image"):
        logs(kube, ns, name)


def test_a_missing_secret_key_is_a_create_container_config_error(kube: Kube, ns: str) -> None:
    env = [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "absent"}}}]
    name = run_pod(kube, ns, {"containers": [python("print(1)", env=env)]})["metadata"]["name"]

    def config_error() -> dict[str, Any] | None:
        _, details = state_of(kube.pod(ns, name), "main")
        return details if details.get("reason") == "CreateContainerConfigError" else None

    details = wait_for(config_error, 60, "CreateContainerConfigError")
    assert details["message"] == f"couldn't find key absent in Secret {ns}/creds"
    assert kube.pod(ns, name)["status"]["phase"] == "Pending"


def test_the_memory_limit_is_enforced(kube: Kube, ns: str) -> None:
    hog = "x = []\nwhile True: x.append(bytearray(16 << 20))"
    container = python(hog, resources={"limits": {"memory": "64Mi"}})
    name = run_pod(kube, ns, {"containers": [container]})["metadata"]["name"]
    term = wait_terminated(kube, ns, name, "main")
    assert (term["exitCode"], term["reason"]) == (137, "OOMKilled")
    assert kube.pod(ns, name)["status"]["phase"] == "Failed"


def test_termination_messages_file_and_fallback_to_logs(kube: Kube, ns: str) -> None:
    file_policy = python(
        "open('/dev/termination-log', 'w').write('custom message'); raise SystemExit(2)"
    )
    fallback = python(
        "import sys; print('last words'); sys.exit(3)",
        terminationMessagePolicy="FallbackToLogsOnError",
    )
    fallback["name"] = "fallback"
    name = run_pod(kube, ns, {"containers": [file_policy, fallback]})["metadata"]["name"]
    first = wait_terminated(kube, ns, name, "main")
    second = wait_terminated(kube, ns, name, "fallback")
    assert (first["exitCode"], first["reason"], first["message"]) == (2, "Error", "custom message")
    assert (second["exitCode"], second["message"]) == (3, "last words\n")
    pod = wait_for(
        lambda: (p := kube.pod(ns, name))["status"]["phase"] == "Failed" and p, 30, "Failed"
    )
    ready = {c["type"]: c for c in pod["status"]["conditions"]}["Ready"]
    assert ready["status"] == "False" and ready["reason"] == "PodCompleted"


def test_init_containers_run_first_in_order_then_restarts_keep_previous_logs(
    kube: Kube, ns: str
) -> None:
    step = "open('/shared/steps', 'a').write('{}\\n')"
    inits: list[dict[str, Any]] = [
        {
            "name": f"init-{i}",
            "image": PY,
            "command": ["python", "-c", step.format(i)],
            "volumeMounts": [{"name": "shared", "mountPath": "/shared"}],
        }
        for i in (1, 2)
    ]
    # Fails on its first run, succeeds on the second (restartPolicy OnFailure).
    main = python(
        "import os, sys\n"
        "print(open('/shared/steps').read().split())\n"
        "first = not os.path.exists('/shared/ran')\n"
        "open('/shared/ran', 'w').close()\n"
        "print('attempt', 'first' if first else 'second')\n"
        "sys.exit(1 if first else 0)",
        volumeMounts=[{"name": "shared", "mountPath": "/shared"}],
    )
    spec = {
        "restartPolicy": "OnFailure",
        "initContainers": inits,
        "containers": [main],
        "volumes": [{"name": "shared", "emptyDir": {}}],
    }
    name = run_pod(kube, ns, spec)["metadata"]["name"]
    wait_for(lambda: kube.pod(ns, name)["status"]["phase"] == "Succeeded", 120, "Succeeded")
    status = container_status(kube.pod(ns, name), "main")
    assert status["restartCount"] == 1
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert logs(kube, ns, name) == "['1', '2']\nattempt second\n"
    assert logs(kube, ns, name, previous=True) == "['1', '2']\nattempt first\n"


def test_container_logs_options(kube: Kube, ns: str) -> None:
    code = (
        "import time\n"
        "for i in range(1, 6): print('early', i, flush=True)\n"
        "time.sleep(6)\n"
        "for i in range(1, 4): print('late', i, flush=True); time.sleep(0.5)\n"
    )
    name = run_pod(kube, ns, {"containers": [python(code)]})["metadata"]["name"]
    wait_for(lambda: state_of(kube.pod(ns, name), "main")[0] == "running", 60, "running")
    # follow: the stream ends when the container does.
    response = kube.core.read_namespaced_pod_log(
        name, ns, container="main", follow=True, _preload_content=False
    )
    followed = b"".join(response.stream(64)).decode()
    assert followed.splitlines()[-1] == "late 3" and followed.count("\n") == 8
    wait_terminated(kube, ns, name, "main")
    assert logs(kube, ns, name, tail_lines=2) == "late 2\nlate 3\n"
    assert logs(kube, ns, name, limit_bytes=10) == "early 1\nea"
    stamped = logs(kube, ns, name, timestamps=True).splitlines()
    assert stamped[-1].endswith(" late 3") and len(stamped) == 8
    # sinceSeconds that falls in the pause between the early and the late lines.
    last_early = datetime.fromisoformat(stamped[4].split()[0][:26] + "+00:00").timestamp()
    since = int(time.time() - last_early) - 2
    assert logs(kube, ns, name, since_seconds=since) == "late 1\nlate 2\nlate 3\n"
    with pytest.raises(Exception, match="previous terminated container"):
        logs(kube, ns, name, previous=True)


def test_graceful_deletion_waits_for_the_grace_period_then_kills(kube: Kube, ns: str) -> None:
    stubborn = python(
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: print('got SIGTERM', flush=True))\n"
        "print('ready', flush=True)\n"
        "while True: time.sleep(0.1)"
    )
    name = run_pod(kube, ns, {"containers": [stubborn], "terminationGracePeriodSeconds": 30})[
        "metadata"
    ]["name"]
    wait_for(lambda: logs(kube, ns, name) == "ready\n", 60, "the container to start")
    kube.core.delete_namespaced_pod(name, ns, grace_period_seconds=4)
    deleted = time.monotonic()
    # It ignores SIGTERM, so the pod is still there (terminating) while the grace runs.
    wait_for(lambda: "got SIGTERM" in logs(kube, ns, name), 10, "SIGTERM to reach it")
    assert kube.pod(ns, name)["metadata"]["deletionTimestamp"]

    def gone() -> bool:
        try:
            kube.pod(ns, name)
        except Exception as err:
            return getattr(err, "status", None) == 404
        return False

    wait_for(gone, 60, "the pod to be removed after SIGKILL")
    assert time.monotonic() - deleted >= 3.5  # not before the grace period


def test_volumes_are_mounted_at_their_paths_in_the_containers_own_namespace(
    kube: Kube, ns: str
) -> None:
    code = (
        "import json, os, ssl, urllib.request\n"
        "sa = '/var/run/secrets/kubernetes.io/serviceaccount'\n"
        "token = open(sa + '/token').read()\n"
        "ctx = ssl.create_default_context(cafile=sa + '/ca.crt')\n"
        "host = os.environ['KUBERNETES_SERVICE_HOST']\n"
        "port = os.environ['KUBERNETES_SERVICE_PORT']\n"
        "req = urllib.request.Request(f'https://{host}:{port}/api', "
        "headers={'Authorization': 'Bearer ' + token})\n"
        "api = json.load(urllib.request.urlopen(req, context=ctx))['kind']\n"
        "print(json.dumps({\n"
        "  'config': open('/etc/app/mode').read(),\n"
        "  'secret': open('/etc/creds/token').read(),\n"
        "  'podname': open('/etc/podinfo/name').read(),\n"
        "  'namespace': open(sa + '/namespace').read(),\n"
        "  'api': api,\n"
        "  'cwd': os.getcwd(), 'uid': os.getuid(),\n"
        "  'read_only': not os.access('/etc/app', os.W_OK),\n"
        "  'host_repo_hidden': not os.path.exists('/work'),\n"
        "}))"
    )
    container = python(
        code,
        workingDir="/srv/job",
        volumeMounts=[
            {"name": "app", "mountPath": "/etc/app", "readOnly": True},
            {"name": "creds", "mountPath": "/etc/creds"},
            {"name": "podinfo", "mountPath": "/etc/podinfo"},
        ],
        securityContext={"runAsUser": 1000, "runAsNonRoot": True},
    )
    spec = {
        "containers": [container],
        "securityContext": {"fsGroup": 2000},
        "volumes": [
            {"name": "app", "configMap": {"name": "settings"}},
            {"name": "creds", "secret": {"secretName": "creds"}},
            {
                "name": "podinfo",
                "downwardAPI": {
                    "items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]
                },
            },
        ],
    }
    name = run_pod(kube, ns, spec)["metadata"]["name"]
    term = wait_terminated(kube, ns, name, "main")
    assert term["exitCode"] == 0, logs(kube, ns, name)
    seen = json.loads(logs(kube, ns, name).strip().splitlines()[-1])
    assert seen == {
        "config": "fast",
        "secret": "s3cr3t",
        "podname": name,
        "namespace": ns,
        "api": "APIVersions",
        "cwd": "/srv/job",
        "uid": 1000,
        "read_only": True,
        "host_repo_hidden": True,
    }


def test_run_as_non_root_with_a_root_image_is_refused(kube: Kube, ns: str) -> None:
    container = python("print(1)", securityContext={"runAsNonRoot": True})
    name = run_pod(kube, ns, {"containers": [container]})["metadata"]["name"]

    def refused() -> dict[str, Any] | None:
        _, details = state_of(kube.pod(ns, name), "main")
        return details if details.get("reason") == "CreateContainerConfigError" else None

    details = wait_for(refused, 60, "CreateContainerConfigError")
    assert "runAsNonRoot and image will run as root" in details["message"]


def test_a_command_not_in_path_is_a_start_error(kube: Kube, ns: str) -> None:
    container = {"name": "main", "image": "busybox:1.36", "command": ["no-such-program"]}
    name = run_pod(kube, ns, {"containers": [container]})["metadata"]["name"]
    term = wait_terminated(kube, ns, name, "main")
    assert (term["exitCode"], term["reason"]) == (128, "StartError")
    assert 'exec: "no-such-program": executable file not found in $PATH' in term["message"]


def test_a_containers_escapees_end_with_it(kube: Kube, ns: str) -> None:
    """A process that leaves its group (setsid, double fork) does not outlive the
    container: it stays in the container's cgroup, which the node empties when the
    main process exits (the local backend's keeper does the same for local probes)."""
    escape = (
        "import os, sys, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        print('escapee', os.getpid(), flush=True)\n"
        "        time.sleep(600)\n"
        "    os._exit(0)\n"
        "os.wait()\n"
        "time.sleep(0.5)\n"
        "print('main done', flush=True)\n"
    )
    name = run_pod(kube, ns, {"containers": [python(escape)]})["metadata"]["name"]
    term = wait_terminated(kube, ns, name, "main")
    assert term["exitCode"] == 0
    text = logs(kube, ns, name)
    assert "main done" in text, text
    (pid,) = [int(line.split()[1]) for line in text.splitlines() if line.startswith("escapee")]

    def ended() -> bool:
        # The node's processes share this machine's PID namespace (only mount and UTS
        # namespaces are new): the escapee's PID is ours to look up. A zombie is dead.
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                return stat.read().rsplit(b")", 1)[1].split()[0] == b"Z"
        except OSError:
            return True

    wait_for(ended, 60, f"the escapee {pid} to be killed with its container")
