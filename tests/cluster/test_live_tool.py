"""clusterbisect against the real control plane (make cluster), through its CLI.

The step mode on the cluster, a server dry run followed by a real create of the same
probe, every input kind rendered and created with fieldValidation=Strict, and the
least-privilege RBAC of manifests/rbac.yaml (a token from the TokenRequest API).
"""

from __future__ import annotations

import copy
import json
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from livekit import (
    CULPRIT,
    KUBECONFIG,
    NAMESPACE,
    ROOT,
    Kube,
    cli,
    container_status,
    kind_sized_example,
    live,
    namespace,
    run_json,
    session_leftovers,
    wait_for,
)

pytestmark = live

FIXTURES = ROOT / "tests" / "fixtures"


@pytest.fixture(scope="module")
def kube() -> Kube:
    return Kube()


def job_outcome(kube: Kube, ns: str, name: str, container: str) -> tuple[int, str]:
    """Wait for a Job's pod to finish; its main container's exit code and log."""

    def finished() -> dict[str, Any] | None:
        pods = kube.raw(
            kube.core.list_namespaced_pod, ns, label_selector=f"batch.kubernetes.io/job-name={name}"
        )["items"]
        for pod in pods:
            state = container_status(pod, container).get("state") or {}
            if "terminated" in state:
                return {"pod": pod["metadata"]["name"], **state["terminated"]}
        return None

    term = wait_for(finished, 180, f"job {name} to finish")
    text = kube.core.read_namespaced_pod_log(term["pod"], ns, container=container)
    return int(term["exitCode"]), text


def test_step_mode_bisects_the_example_on_the_cluster(tmp_path: Path, kube: Kube) -> None:
    """The agent's loop: start, then next and record, each probe Job applied by hand."""
    good, bad = kind_sized_example(tmp_path)
    state = tmp_path / "state"
    code, _, err = run_json(
        cli(
            "start",
            str(good),
            str(bad),
            "--backend",
            "kubernetes",
            "-n",
            NAMESPACE,
            "--fail-on",
            "Weights only load failed",
            "--state-dir",
            str(state),
            "--json",
        )
    )
    assert code == 0, err
    call = [cli("call", "next", kube=False)[0], "call"]
    view = run_json(
        [*call, "next", "--input", "-"],
        stdin=json.dumps({"state_dir": str(state), "verbose": True}),
    )[1]
    probes = 0
    while not view["done"]:
        probe = view["probe"]
        manifests = probe["rendered"]
        jobs = manifests if isinstance(manifests, list) else [manifests]
        job = next(m for m in jobs if m.get("kind") == "Job")
        job["metadata"].pop("namespace", None)
        created = kube.raw(
            kube.batch.create_namespaced_job, NAMESPACE, job, field_validation="Strict"
        )
        name = created["metadata"]["name"]
        exit_code, text = job_outcome(kube, NAMESPACE, name, "trainer")
        kube.batch.delete_namespaced_job(name, NAMESPACE, propagation_policy="Background")
        log = tmp_path / f"{probe['id']}.log"
        log.write_text(text)
        code, reply, err = run_json(
            [*call, "record", "--input", "-"],
            stdin=json.dumps(
                {
                    "state_dir": str(state),
                    "exit_code": exit_code,
                    "log_file": str(log),
                    "verbose": True,  # the next view whole: its rendered Job
                }
            ),
        )
        assert code == 0, (reply, err)
        view = reply["next"]
        probes += 1
        assert probes < 40, "the step-mode session does not converge"
    result = view.get("result", view)
    keys = [[c["key"] for c in culprit["changes"]] for culprit in result["culprits"]]
    assert result["status"] == "found" and keys == [[CULPRIT]], result


def test_server_dry_run_then_a_real_create_of_the_same_probe(tmp_path: Path, kube: Kube) -> None:
    good, bad = kind_sized_example(tmp_path)
    state = tmp_path / "state"
    code, plan, err = run_json(
        cli(
            "run",
            str(good),
            str(bad),
            "--backend",
            "kubernetes",
            "-n",
            NAMESPACE,
            "--dry-run",
            "server",
            "--state-dir",
            str(state),
            "--json",
        )
    )
    assert code == 0 and plan["status"] == "dry_run", (plan, err)
    assert session_leftovers(kube, NAMESPACE, plan["session_id"]) == {"jobs": [], "pods": []}
    # The bad baseline, as the API server accepted it in the dry run, now for real.
    manifest = yaml.safe_load((state / "dry-run" / "p002.yaml").read_text())
    docs = manifest if isinstance(manifest, list) else [manifest]
    job = next(d for d in docs if d.get("kind") == "Job")
    # The written manifest hides secret-looking literals; the example has none inline.
    job["metadata"].pop("namespace", None)
    created = kube.raw(kube.batch.create_namespaced_job, NAMESPACE, job, field_validation="Strict")
    name = created["metadata"]["name"]
    try:
        exit_code, text = job_outcome(kube, NAMESPACE, name, "trainer")
    finally:
        kube.batch.delete_namespaced_job(name, NAMESPACE, propagation_policy="Background")
    assert exit_code == 1 and "Weights only load failed" in text, text[-2000:]


K8S = FIXTURES / "k8s"
KINDS = {
    "Job": K8S / "cronjob.yaml",  # its jobTemplate, as a Job
    "CronJob": K8S / "cronjob.yaml",
    "Deployment": K8S / "deployment.yaml",
    "StatefulSet": K8S / "statefulset.yaml",
    "Pod": K8S / "pod.yaml",
    "PyTorchJob": K8S / "pytorchjob.yaml",
    "VolcanoJob": K8S / "volcanojob.yaml",
    "LeaderWorkerSet": K8S / "leaderworkerset.yaml",
    "JobSet": K8S / "jobset.yaml",
    "TrainJob": K8S / "trainjob.yaml",  # with its ClusterTrainingRuntime
    "ClusterTrainingRuntime": K8S / "trainjob.yaml",  # the runtime alone (see _runtime_alone)
}

# The custom kinds the test cluster serves (tests/cluster/crds.py): API version ->
# kind -> (plural, namespaced).
CUSTOM = {
    "kubeflow.org/v1": {"PyTorchJob": ("pytorchjobs", True)},
    "ray.io/v1": {"RayJob": ("rayjobs", True)},
    "batch.volcano.sh/v1alpha1": {"Job": ("jobs", True)},
    "leaderworkerset.x-k8s.io/v1": {"LeaderWorkerSet": ("leaderworkersets", True)},
    "jobset.x-k8s.io/v1alpha2": {"JobSet": ("jobsets", True)},
    "trainer.kubeflow.org/v1alpha1": {
        "TrainJob": ("trainjobs", True),
        "ClusterTrainingRuntime": ("clustertrainingruntimes", False),
    },
}


def _custom(doc: dict[str, Any]) -> tuple[str, str, str, bool] | None:
    plural = CUSTOM.get(doc["apiVersion"], {}).get(doc["kind"])
    if plural is None:
        return None
    group, version = doc["apiVersion"].split("/")
    return group, version, *plural


def _probed_container(doc: dict[str, Any]) -> dict[str, Any]:
    """The main container of the template a probe of ``doc`` runs (by default)."""
    spec = doc["spec"]
    kind = doc["kind"]
    if kind == "Pod":
        template = doc
    elif kind == "CronJob":
        template = spec["jobTemplate"]["spec"]["template"]
    elif kind == "PyTorchJob":
        template = spec["pytorchReplicaSpecs"]["Master"]["template"]
    elif doc["apiVersion"].startswith("batch.volcano.sh/"):
        template = next(t for t in spec["tasks"] if t["name"] == "master")["template"]
    elif kind == "LeaderWorkerSet":
        template = spec["leaderWorkerTemplate"]["leaderTemplate"]
    elif kind == "JobSet":
        template = spec["replicatedJobs"][0]["template"]["spec"]["template"]
    elif kind == "TrainJob":
        return dict(spec["trainer"])  # its env is laid over the runtime's trainer
    elif kind == "ClusterTrainingRuntime":
        node = next(j for j in spec["template"]["spec"]["replicatedJobs"] if j["name"] == "node")
        template = node["template"]["spec"]["template"]
    else:
        template = spec["template"]
    return dict(template["spec"]["containers"][0])


def _runtime_alone(trainjob: dict[str, Any], runtime: dict[str, Any]) -> dict[str, Any]:
    """A ClusterTrainingRuntime given alone (no TrainJob): its trainer step runs the
    command and env the TrainJob would have laid over it."""
    runtime = copy.deepcopy(runtime)
    trainer = trainjob["spec"]["trainer"]
    jobs = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    node = next(j for j in jobs if j["name"] == "node")["template"]["spec"]["template"]
    container = node["spec"]["containers"][0]
    container.update(command=trainer["command"], args=trainer["args"])
    container["env"] = [*container.get("env", []), *trainer["env"]]
    return runtime


def create_strict(kube: Kube, ns: str, doc: dict[str, Any]) -> None:
    """Create any of the input kinds with fieldValidation=Strict."""
    kind = doc["kind"]
    custom = _custom(doc)
    if custom is not None:
        group, version, plural, namespaced = custom
        if namespaced:
            kube.custom.create_namespaced_custom_object(
                group, version, ns, plural, doc, field_validation="Strict"
            )
        else:
            kube.custom.create_cluster_custom_object(
                group, version, plural, doc, field_validation="Strict"
            )
        return
    create = {
        "Job": kube.batch.create_namespaced_job,
        "CronJob": kube.batch.create_namespaced_cron_job,
        "Deployment": kube.apps.create_namespaced_deployment,
        "StatefulSet": kube.apps.create_namespaced_stateful_set,
        "Pod": kube.core.create_namespaced_pod,
    }[kind]
    create(ns, doc, field_validation="Strict")


def delete_any(kube: Kube, ns: str, doc: dict[str, Any]) -> None:
    name, kind = doc["metadata"]["name"], doc["kind"]
    custom = _custom(doc)
    if custom is not None:
        group, version, plural, namespaced = custom
        if namespaced:
            kube.custom.delete_namespaced_custom_object(group, version, ns, plural, name)
        else:
            kube.custom.delete_cluster_custom_object(group, version, plural, name)
        return
    delete = {
        "Job": kube.batch.delete_namespaced_job,
        "CronJob": kube.batch.delete_namespaced_cron_job,
        "Deployment": kube.apps.delete_namespaced_deployment,
        "StatefulSet": kube.apps.delete_namespaced_stateful_set,
        "Pod": kube.core.delete_namespaced_pod,
    }[kind]
    delete(name, ns, propagation_policy="Background")


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_input_kind_is_rendered_and_created_strictly(
    kind: str, tmp_path: Path, kube: Kube
) -> None:
    """The input object itself and the probe Jobs rendered from it are accepted with
    fieldValidation=Strict, and the probes run: the main container sees the probe's
    env (the input's LR in the good baseline, 0.5 in the bad one)."""
    good, *extra = yaml.safe_load_all(KINDS[kind].read_text())  # a TrainJob's runtime
    if kind == "Job":
        good = {**good, "kind": "Job", "spec": good["spec"]["jobTemplate"]["spec"]}
    if kind == "ClusterTrainingRuntime":
        good, extra = _runtime_alone(good, extra[0]), []
    good["metadata"] = {
        k: v for k, v in good["metadata"].items() if k in ("name", "labels", "annotations")
    }
    good.pop("status", None)
    bad = copy.deepcopy(good)
    # The probed pod template (a Kubeflow job's Master, a Volcano master task, an LWS
    # leader, a TrainJob's trainer) changes.
    main = _probed_container(bad)
    lr = next(e["value"] for e in main["env"] if e["name"] == "LR")
    for env in main["env"]:
        if env["name"] == "LR":
            env["value"] = "0.5"
    with namespace(kube, "cb-kinds") as ns:
        kube.core.create_namespaced_service_account(ns, {"metadata": {"name": "trainer"}})
        kube.core.create_namespaced_secret(
            ns, {"metadata": {"name": "wandb"}, "stringData": {"api-key": "not-a-real-key"}}
        )
        for doc in (good, *extra):  # the input is what its CRD accepts
            create_strict(kube, ns, doc)
        for doc in (good, *extra):
            delete_any(kube, ns, doc)
        paths = []
        for side, doc in (("good", good), ("bad", bad)):
            path = tmp_path / f"{side}.yaml"
            path.write_text(yaml.safe_dump_all([doc, *extra]))
            paths.append(str(path))
        state = tmp_path / "state"
        code, plan, err = run_json(
            cli(
                "run",
                *paths,
                "--backend",
                "kubernetes",
                "-n",
                ns,
                "--dry-run",
                "client",
                "--state-dir",
                str(state),
                "--json",
            )
        )
        assert code == 0 and plan["status"] == "dry_run", (plan, err)
        seen = {}
        for probe, expected in (("p001", f"lr {lr}"), ("p002", "lr 0.5")):
            manifest = yaml.safe_load((state / "dry-run" / f"{probe}.yaml").read_text())
            docs = manifest if isinstance(manifest, list) else [manifest]
            job = next(d for d in docs if d.get("kind") == "Job")
            # The probe's secret values are in a Secret the Job refers to, written
            # beside it (mode 0600); applied first, as the dry run says.
            private = state / "dry-run" / f"{probe}.secret.yaml"
            for doc in yaml.safe_load_all(private.read_text()) if private.exists() else []:
                doc["metadata"].pop("namespace", None)
                if doc["kind"] == "Job":
                    job = doc
                else:
                    kube.raw(kube.core.create_namespaced_secret, ns, doc)
            job["metadata"].pop("namespace", None)
            created = kube.raw(kube.batch.create_namespaced_job, ns, job, field_validation="Strict")
            main = job["spec"]["template"]["spec"]["containers"][0]["name"]
            exit_code, text = job_outcome(kube, ns, created["metadata"]["name"], main)
            seen[probe] = (exit_code, text.strip())
            assert exit_code == 0 and text.strip() == expected, seen


def _rayjob_pair(tmp_path: Path, api_version: str = "ray.io/v1") -> list[str]:
    """A good and a bad RayJob (the head's LR), as files."""
    good = yaml.safe_load((K8S / "rayjob.yaml").read_text())
    good["apiVersion"] = api_version
    bad = copy.deepcopy(good)
    head = bad["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    for env in head["env"]:
        if env["name"] == "LR":
            env["value"] = "0.5"
    paths = []
    for side, doc in (("good", good), ("bad", bad)):
        path = tmp_path / f"{side}.yaml"
        path.write_text(yaml.safe_dump(doc))
        paths.append(str(path))
    return paths


def _probe_rayjobs(kube: Kube, ns: str, session_id: str) -> list[str]:
    found = kube.custom.list_namespaced_custom_object(
        "ray.io", "v1", ns, "rayjobs", label_selector=f"clusterbisect.io/session={session_id}"
    )
    return [
        o["metadata"]["name"] for o in found["items"] if "deletionTimestamp" not in o["metadata"]
    ]


def test_rayjob_probes_are_rayjobs_created_strictly_and_cleaned_up(
    tmp_path: Path, kube: Kube
) -> None:
    """No KubeRay operator runs on the test cluster, so probe RayJobs never start a
    Ray cluster: this proves what clusterbisect does (the server accepts the probe
    RayJobs with fieldValidation=Strict; Ctrl-C deletes them), not what KubeRay does
    with them (docs/cluster.md)."""
    paths = _rayjob_pair(tmp_path)
    with namespace(kube, "cb-rayjob") as ns:
        state = tmp_path / "dry"
        code, plan, err = run_json(
            cli("run", *paths, "--backend", "kubernetes", "-n", ns, "--dry-run", "server",
                "--state-dir", str(state), "--json")
        )  # fmt: skip
        assert code == 0 and plan["status"] == "dry_run", (plan, err)
        assert plan["fidelity"]["runs"].startswith("the whole RayJob")
        manifest = yaml.safe_load((state / "dry-run" / "p002.yaml").read_text())
        assert manifest["kind"] == "RayJob" and manifest["spec"]["entrypoint"] == "python train.py"

        state = tmp_path / "run"
        process = subprocess.Popen(
            cli("run", *paths, "--backend", "kubernetes", "-n", ns, "--timeout", "600",
                "--state-dir", str(state), "--json"),
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            session_id = wait_for(
                lambda: json.loads((state / "session.json").read_text())["session_id"],
                60,
                "the session",
            )
            created = wait_for(
                lambda: _probe_rayjobs(kube, ns, session_id), 120, "the probe RayJobs"
            )
            body = kube.custom.get_namespaced_custom_object(
                "ray.io", "v1", ns, "rayjobs", created[0]
            )
            assert body["spec"]["shutdownAfterJobFinishes"] is True
            assert body["spec"]["submitterConfig"] == {"backoffLimit": 0}
            process.send_signal(signal.SIGINT)
            process.wait(timeout=120)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.returncode == 130, process.stderr.read() if process.stderr else ""
        assert wait_for(lambda: not _probe_rayjobs(kube, ns, session_id) or None, 60, "cleanup")


def test_rayjob_probes_where_the_crd_is_missing_name_the_ray_backend(
    tmp_path: Path, kube: Kube
) -> None:
    """The test cluster serves ray.io/v1 only: a v1alpha1 RayJob has no CRD here."""
    paths = _rayjob_pair(tmp_path, "ray.io/v1alpha1")
    done = subprocess.run(
        cli("run", *paths, "--backend", "kubernetes", "-n", NAMESPACE,
            "--state-dir", str(tmp_path / "state")),
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {paths[0]}: --backend: this cluster has no RayJob CRD")
    assert "--backend ray" in done.stderr and "Traceback" not in done.stderr


def _token_kubeconfig(kube: Kube, path: Path) -> None:
    """A kubeconfig holding only a TokenRequest token of the clusterbisect ServiceAccount."""
    request = {"spec": {"audiences": [], "expirationSeconds": 3600}}
    token = kube.raw(
        kube.core.create_namespaced_service_account_token, "clusterbisect", NAMESPACE, request
    )["status"]["token"]
    admin = yaml.safe_load(Path(str(KUBECONFIG)).read_text())
    cluster = admin["clusters"][0]
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": "clusterbisect-sa", "user": {"token": token}}],
        "contexts": [
            {
                "name": "clusterbisect-sa",
                "context": {
                    "cluster": cluster["name"],
                    "user": "clusterbisect-sa",
                    "namespace": NAMESPACE,
                },
            }
        ],
        "current-context": "clusterbisect-sa",
    }
    path.write_text(yaml.safe_dump(doc))


def test_the_rbac_role_is_enough_for_a_bisection_and_no_more(tmp_path: Path, kube: Kube) -> None:
    from kubernetes.client.exceptions import ApiException

    config = tmp_path / "sa.kubeconfig"
    _token_kubeconfig(kube, config)
    good, bad = kind_sized_example(tmp_path)
    argv = [
        *cli("run", str(good), str(bad), kube=False),
        "--kubeconfig",
        str(config),
        "--backend",
        "kubernetes",
        "--fail-on",
        "Weights only load failed",
        "--parallel",
        "2",
        "--timeout",
        "300",
        "--state-dir",
        str(tmp_path / "state"),
        "--json",
    ]
    code, result, err = run_json(argv, timeout=1200)
    assert code == 0 and result["status"] == "found", (result, err[-3000:])
    keys = [[c["key"] for c in culprit["changes"]] for culprit in result["culprits"]]
    assert keys == [[CULPRIT]]
    # Outside the Role: secrets, other kinds, other namespaces, cluster scope.
    sa = Kube(str(config), context="clusterbisect-sa")
    refused = []
    for call, args in (
        (sa.core.list_namespaced_secret, (NAMESPACE,)),
        (sa.apps.list_namespaced_deployment, (NAMESPACE,)),
        (sa.batch.list_namespaced_job, ("default",)),
        (sa.core.list_node, ()),
        (sa.core.delete_collection_namespaced_event, (NAMESPACE,)),  # events: list only
    ):
        with pytest.raises(ApiException) as caught:
            call(*args)
        refused.append(caught.value.status)
    assert refused == [403] * len(refused)
    sa.core.list_namespaced_event(NAMESPACE)  # granted: why a probe's pod is stuck
    # And the CLI names what is missing (exit 3), e.g. for cleanup in another namespace.
    done = subprocess.run(
        [*cli("cleanup", kube=False), "--kubeconfig", str(config), "-n", "default", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3, done.stdout + done.stderr
    assert "forbidden" in (done.stdout + done.stderr).lower()


def test_kubectl_logs_goes_through_the_api_servers_proxy(tmp_path: Path, kube: Kube) -> None:
    """kubectl (on the machine) reads a probe pod's log via the kubelet API."""
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is not on PATH"
    with namespace(kube, "cb-kubectl") as ns:
        kube.core.create_namespaced_pod(
            ns,
            {
                "metadata": {"name": "hello"},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "main",
                            "image": "busybox:1.36",
                            "command": ["sh", "-c", "for i in 1 2 3; do echo line $i; done"],
                        }
                    ],
                },
            },
        )
        wait_for(
            lambda: kube.pod(ns, "hello")["status"].get("phase") == "Succeeded",
            120,
            "pod hello to succeed",
        )
        done = subprocess.run(
            [kubectl, "--kubeconfig", str(KUBECONFIG), "-n", ns, "logs", "hello", "--tail=2"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == "line 2\nline 3\n"
