"""Probe Jobs rendered from every supported kind are valid Kubernetes (1.29 and 1.33).

kubernetes-validate checks the schema strictly (no unknown fields); the naming rules
the schema does not encode (DNS-1123 names, label values) are checked here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import kubernetes_validate
import pytest
import yaml
from conftest import EXAMPLES, FIXTURES, ROOT

from clusterbisect.diff import Change
from clusterbisect.errors import InputError
from clusterbisect.runners.base import Probe, RunnerContext
from clusterbisect.runners.kubernetes import KubernetesRunner, KubernetesSettings, operators, render
from clusterbisect.settings import apply_changes, flatten
from clusterbisect.specs import load_spec, parse_spec
from clusterbisect.specs.model import Spec

K8S_FIXTURES = FIXTURES / "k8s"
EXAMPLE = EXAMPLES / "training-upgrade"
VERSIONS = ("1.29.0", "1.33.0")
SECRET_VALUE = "hf_live_9f8e7d6c5b4a"  # in every fixture, as a literal env value

DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")

# kind fixture -> (main container, the key of its main container's LR env var)
KINDS = {
    "pod": ("trainer", "containers[trainer].env.LR"),
    "job": ("trainer", "containers[trainer].env.NCCL_DEBUG"),
    "cronjob": ("trainer", "containers[trainer].env.LR"),
    "deployment": ("trainer", "containers[trainer].env.LR"),
    "statefulset": ("trainer", "containers[trainer].env.LR"),
    "daemonset": ("trainer", "containers[trainer].env.LR"),
    "replicaset": ("trainer", "containers[trainer].env.LR"),
    "pytorchjob": ("pytorch", "replicas[Master].containers[pytorch].env.LR"),
    "tfjob": ("tensorflow", "replicas[Chief].containers[tensorflow].env.LR"),
    "mpijob": ("launcher", "replicas[Launcher].containers[launcher].env.LR"),
    "raycluster": ("ray-head", "head.containers[ray-head].env.LR"),
    "jobset": ("trainer", "jobs[driver].containers[trainer].env.LR"),
    "volcanojob": ("pytorch", "tasks[master].containers[pytorch].env.LR"),
    "leaderworkerset": ("leader", "leader.containers[leader].env.LR"),
    "trainjob": ("node", "spec.trainer.env.LR"),
}


def load(kind: str) -> Spec:
    if kind == "job":
        return load_spec(str(EXAMPLE / "good.yaml"))
    return load_spec(str(K8S_FIXTURES / f"{kind}.yaml"))


def change(spec: Spec, key: str, bad: Any, *, secret: bool = False) -> Change:
    """A modification of an existing setting, with the path the spec layer gives it."""
    setting = flatten(spec)[key]
    good = setting.value
    if setting.env_name and isinstance(good, dict):  # env elements carry {"name", "value"}
        bad = {**good, "value": bad}
    return Change(
        key,
        "modified",
        good,
        bad,
        setting.category,
        setting.path,
        secret,
        setting.container,
        setting.env_name,
    )


def probe_for(
    spec: Spec, changes: list[Change], probe_id: str = "p003", tmp: Path | None = None
) -> Probe:
    root = tmp or Path("/nonexistent")
    return Probe(
        probe_id=probe_id,
        session_id="20261127-023012-a1b2c3",
        spec=apply_changes(spec, changes),
        changes=changes,
        log_path=root / "logs" / f"{probe_id}.log",
        timeout_s=900,
        purpose="search",
    )


def validate(manifest: dict[str, Any]) -> None:
    for version in VERSIONS:
        try:
            kubernetes_validate.validate(manifest, version, strict=True)
        except kubernetes_validate.ValidationError as err:  # keep the failure message short
            raise AssertionError(f"invalid for {version}: {str(err).splitlines()[0]}") from None


def check_names(manifest: dict[str, Any]) -> None:
    meta = manifest["metadata"]
    assert DNS1123.match(meta["name"]) and len(meta["name"]) <= 63, meta["name"]
    labels = dict(meta.get("labels") or {})
    if manifest["kind"] == "Job":
        labels.update(manifest["spec"]["template"]["metadata"]["labels"])
    for key, value in labels.items():
        assert LABEL_NAME.match(key.split("/")[-1]), key
        assert LABEL_VALUE.match(value) and len(value) <= 63, (key, value)


def containers(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in job["spec"]["template"]["spec"]["containers"]}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def client_runner(
    good: Spec | None = None, manifests_dir: Path | None = None, **options: Any
) -> KubernetesRunner:
    """A runner that renders as a client dry run does (no cluster)."""
    context = RunnerContext(dry_run="client", good=good, manifests_dir=manifests_dir)
    return KubernetesRunner(context, KubernetesSettings(**options))


@pytest.fixture
def runner() -> KubernetesRunner:
    return client_runner(namespace="clusterbisect")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_renders_a_valid_probe_job(kind: str, runner: KubernetesRunner) -> None:
    spec = load(kind)
    main, key = KINDS[kind]
    lr = change(spec, key, "0.5")
    secret = (
        change(
            spec, key.replace(key.rsplit(".", 1)[-1], "HF_TOKEN"), "hf_new_secret_123", secret=True
        )
        if kind != "job"
        else None
    )
    changes = [lr] + ([secret] if secret else [])
    probe = probe_for(spec, changes)

    *needs, job = runner.manifests(probe)
    validate(job)
    check_names(job)
    # The secret env value lives in the probe's Secret (the example Job holds none).
    (moved,) = needs if secret else [{}]
    if secret:
        validate(moved)
        check_names(moved)
        assert moved["kind"] == "Secret" and moved["metadata"]["name"] == job["metadata"]["name"]
        assert moved["metadata"]["labels"] == job["metadata"]["labels"]

    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    body = job["spec"]
    assert body["backoffLimit"] == 0
    assert body["activeDeadlineSeconds"] == 900
    assert body["ttlSecondsAfterFinished"] == 3600
    assert body["podFailurePolicy"]["rules"] == [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}
    ]
    pod = body["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    # The probe runs the primary template with the probe's change applied.
    applied = env_of(containers(job)[main])
    assert applied[lr.env_name or ""] == "0.5"

    labels = job["metadata"]["labels"]
    assert labels[render.LABEL_MANAGED_BY] == "clusterbisect"
    assert labels[render.LABEL_SESSION] == "20261127-023012-a1b2c3"
    assert labels[render.LABEL_PROBE] == "p003"
    pod_labels = body["template"]["metadata"]["labels"]
    assert pod_labels[render.LABEL_JOB] == job["metadata"]["name"]
    assert pod_labels[render.LABEL_PROBE] == "p003"

    annotated = json.loads(job["metadata"]["annotations"][render.ANN_CHANGES])
    assert [c["key"] for c in annotated] == [c.key for c in changes]
    assert job["metadata"]["annotations"][render.ANN_CHANGE_COUNT] == str(len(changes))
    assert job["metadata"]["namespace"] == "clusterbisect"

    # Neither what is shown (render) nor the Job sent to the cluster holds a secret
    # value: the Job refers to the probe's Secret, which holds the real one.
    shown = yaml.safe_dump(runner.render(probe))
    for text in (shown, yaml.safe_dump(job)):
        assert SECRET_VALUE not in text and "hf_new_secret_123" not in text
    if secret:
        ref = env_of(containers(job)[main])["HF_TOKEN"]
        assert ref == {"secretKeyRef": {"name": moved["metadata"]["name"], "key": ANY}}
        assert moved["stringData"][ref["secretKeyRef"]["key"]] == "hf_new_secret_123"
        assert yaml.safe_load(runner.private(probe).text) == moved  # type: ignore[union-attr]
    else:
        assert runner.private(probe) is None


@pytest.mark.parametrize(
    ("kind", "role"),
    [
        ("pytorchjob", "PyTorchJob/Master"),
        ("tfjob", "TFJob/Chief"),
        ("mpijob", "MPIJob/Launcher"),
        ("jobset", "JobSet/driver"),
        ("deployment", "Deployment"),
    ],
)
def test_the_primary_template_is_probed(kind: str, role: str, runner: KubernetesRunner) -> None:
    spec = load(kind)
    job = runner.manifests(probe_for(spec, []))[-1]
    assert job["metadata"]["annotations"][render.ANN_TEMPLATE] == role
    if kind == "pytorchjob":  # the Master's LR (0.02), not the Worker's (0.01)
        assert env_of(containers(job)["pytorch"])["LR"] == "0.02"


def test_kubeflow_probes_get_the_operators_env_for_a_world_of_one(
    runner: KubernetesRunner,
) -> None:
    """A replica run as a plain Job needs what the training operator would inject."""
    job = runner.manifests(probe_for(load("pytorchjob"), []))[-1]
    validate(job)
    env = env_of(containers(job)["pytorch"])
    assert {k: env[k] for k in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")} == {
        "MASTER_ADDR": "localhost",
        "MASTER_PORT": "23456",
        "WORLD_SIZE": "1",
        "RANK": "0",
    }
    assert env["LR"] == "0.02"  # the job's own env is kept
    annotations = job["metadata"]["annotations"]
    assert annotations[render.ANN_OPERATOR_ENV] == "MASTER_ADDR,MASTER_PORT,WORLD_SIZE,RANK"

    tf = runner.manifests(probe_for(load("tfjob"), []))[-1]
    config = json.loads(env_of(containers(tf)["tensorflow"])["TF_CONFIG"])
    assert config == {
        "cluster": {"chief": ["localhost:2222"]},
        "task": {"type": "chief", "index": 0},
    }
    # An MPIJob's launcher and plain Jobs get nothing.
    for kind in ("mpijob", "job"):
        job = runner.manifests(probe_for(load(kind), []))[-1]
        assert render.ANN_OPERATOR_ENV not in job["metadata"]["annotations"]


def test_the_jobs_own_env_and_ports_win_over_the_operator_defaults() -> None:
    spec = load("pytorchjob")
    master = spec.document["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]
    container = master["containers"][0]
    container["env"].append({"name": "WORLD_SIZE", "value": "32"})
    container["ports"] = [{"name": "pytorchjob-port", "containerPort": 29500}]
    spec.document["spec"]["nprocPerNode"] = "8"
    ref = render.probe_template(spec)
    added = operators.add_operator_env(spec, ref, container)
    env = env_of(container)
    assert "WORLD_SIZE" not in added and env["WORLD_SIZE"] == "32"
    assert env["MASTER_PORT"] == "29500" and env["PET_MASTER_PORT"] == "29500"
    assert env["PET_NNODES"] == "1" and env["PET_NPROC_PER_NODE"] == "8"


def test_names_never_collide_and_stay_short() -> None:
    names = {render.job_name("20261127-023012-a1b2c3", "p001") for _ in range(500)}
    assert len(names) == 500
    long = render.job_name("Session_ID with spaces and a very long tail " * 4, "p123456789")
    assert DNS1123.match(long) and len(long) <= 63
    assert render.label_value("a b") != render.label_value("a_b")  # altered values keep a hash
    assert LABEL_VALUE.match(render.label_value("-weird value: " + "x" * 80))
    assert render.label_value("20261127-023012-a1b2c3") == "20261127-023012-a1b2c3"


def test_a_probe_launched_again_gets_a_new_name_a_rendering_keeps_its_own(
    runner: KubernetesRunner,
) -> None:
    probe = probe_for(load("pod"), [])
    # Each launch: a fresh name for the Job and its Secret.
    first, second = runner._job(probe), runner._job(probe)
    assert [m["kind"] for m in first] == ["Secret", "Job"]
    assert first[-1]["metadata"]["name"] != second[-1]["metadata"]["name"]
    assert first[0]["metadata"]["name"] == first[-1]["metadata"]["name"]
    # A rendering shown twice names the same Secret as the private file beside it.
    shown = runner.render(probe)
    assert shown == runner.render(probe)
    secret = yaml.safe_load(runner.private(probe).text)  # type: ignore[union-attr]
    assert secret["metadata"]["name"] == shown["metadata"]["name"]


def test_controller_and_selector_labels_stay_off_probe_pods(runner: KubernetesRunner) -> None:
    job = runner.manifests(probe_for(load("job"), []))[-1]
    pod_labels = job["spec"]["template"]["metadata"]["labels"]
    assert not {"job-name", "controller-uid", "batch.kubernetes.io/controller-uid"} & set(
        pod_labels
    )
    assert pod_labels["team"] == "search-relevance"  # ordinary labels are kept
    assert "selector" not in job["spec"]
    deployment = runner.manifests(probe_for(load("deployment"), []))[-1]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert "app" not in labels and labels["team"] == "search"  # app=ranker selects the Service


def test_command_and_args_overrides_replace_the_main_workload() -> None:
    spec = load("job")
    smoke = client_runner(command=["python", "-c", "print(1)"])
    job = smoke.manifests(probe_for(spec, []))[-1]
    trainer = containers(job)["trainer"]
    assert trainer["command"] == ["python", "-c", "print(1)"] and "args" not in trainer
    validate(job)
    with_args = client_runner(args=["--max-steps=5"])
    trainer = containers(with_args.manifests(probe_for(spec, []))[-1])["trainer"]
    assert trainer["command"] == ["python", "train.py"] and trainer["args"] == ["--max-steps=5"]
    from_argv = client_runner()
    probe = probe_for(spec, [])
    probe.command = ["python", "train.py", "--smoke"]
    trainer = containers(from_argv.manifests(probe)[-1])["trainer"]
    assert trainer["command"] == ["python", "train.py", "--smoke"] and "args" not in trainer


def test_probe_workload_is_mounted_from_a_configmap(tmp_path: Path) -> None:
    probes = tmp_path / "probes"
    probes.mkdir()
    (probes / "smoke.py").write_text("print('smoke ok')\n")
    runner = client_runner(namespace="ns1", probe="smoke", probes_dir=str(probes))
    configmap, _secret, job = runner.manifests(probe_for(load("pod"), []))
    validate(configmap)
    validate(job)
    check_names(configmap)
    assert configmap["data"] == {"smoke.py": "print('smoke ok')\n"}
    assert configmap["metadata"]["labels"][render.LABEL_MANAGED_BY] == "clusterbisect"
    pod = job["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == render.PROBE_VOLUME)
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    trainer = containers(job)["trainer"]
    assert trainer["command"] == ["python3", f"{render.PROBE_MOUNT}/smoke.py"]
    assert {
        "name": render.PROBE_VOLUME,
        "mountPath": render.PROBE_MOUNT,
        "readOnly": True,
    } in trainer["volumeMounts"]
    shown = runner.render(probe_for(load("pod"), []))
    assert shown["kind"] == "List" and [i["kind"] for i in shown["items"]] == ["ConfigMap", "Job"]
    missing = client_runner(probe="nope", probes_dir=str(probes))
    with pytest.raises(InputError, match=r"no probe 'nope'.*smoke"):
        missing.manifests(probe_for(load("pod"), []))


def test_untestable_changes_are_outside_the_probed_template() -> None:
    spec = load("pytorchjob")
    runner = client_runner(spec)
    master = change(spec, "replicas[Master].containers[pytorch].env.LR", "0.1")
    worker = change(spec, "replicas[Worker].containers[pytorch].env.LR", "0.1")
    object_label = change(spec, "metadata.labels.app", "other")
    template_label = change(spec, "replicas[Master].template.labels.team", "infra")
    reasons = runner.untestable([master, worker, object_label, template_label])
    assert set(reasons) == {worker.key, object_label.key}
    assert "Worker" in reasons[worker.key] and "Master" in reasons[worker.key]
    assert "PyTorchJob metadata" in reasons[object_label.key]


def test_untestable_job_level_fields_and_overridden_settings() -> None:
    spec = load("job")
    runner = client_runner(spec, command=["python", "-c", "pass"])
    backoff = change(spec, "spec.backoffLimit", 3)
    restart = change(spec, "restartPolicy", "OnFailure")
    command = change(spec, "containers[trainer].command", ["python", "other.py"])
    image = change(spec, "containers[trainer].image", "registry.example.com/ml/pytorch-train:2.6.0")
    reasons = runner.untestable([backoff, restart, command, image])
    assert set(reasons) == {backoff.key, restart.key, command.key}
    assert "restartPolicy Never" in reasons[restart.key]
    assert "--command" in reasons[command.key]


def test_pod_labels_and_deployment_selector_labels_stay_off_probe_pods() -> None:
    # A Pod has no selector: any of its labels may be a Service's.
    pod_spec = load("pod")
    runner = client_runner(pod_spec)
    reasons = runner.untestable([change(pod_spec, "metadata.labels.team", "infra")])
    assert "Service" in reasons["metadata.labels.team"]
    assert runner.untestable([change(pod_spec, "containers[trainer].env.LR", "1")]) == {}
    deployment = load("deployment")
    runner = client_runner(deployment)
    reasons = runner.untestable(
        [
            change(deployment, "template.labels.app", "ranker-v2"),
            change(deployment, "template.labels.team", "x"),
        ]
    )
    assert list(reasons) == ["template.labels.app"] and "Service" in reasons["template.labels.app"]


def test_a_non_kubernetes_spec_is_bad_input(tmp_path: Path) -> None:
    env = tmp_path / "good.env"
    env.write_text("A=1\n")
    with pytest.raises(InputError, match="Kubernetes objects"):
        client_runner(load_spec(str(env)))


def test_client_dry_run_writes_manifests_without_a_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "does-not-exist"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    runner = client_runner(manifests_dir=tmp_path / "manifests")
    spec = load("job")
    probes = [
        probe_for(spec, [], "p001", tmp_path),
        probe_for(
            spec, [change(spec, "containers[trainer].env.NCCL_DEBUG", "INFO")], "p002", tmp_path
        ),
    ]
    results = runner.run(probes)
    assert [r.exit_code for r in results] == [None, None]
    assert all(r.infra_error and "dry run" in r.infra_error for r in results)
    for probe in probes:
        written = list(
            yaml.safe_load_all((tmp_path / "manifests" / f"{probe.probe_id}.yaml").read_text())
        )
        assert len(written) == 1
        validate(written[0])
    plan = runner.dry_run(probes[1:])
    assert plan["mode"] == "client" and plan["namespace"] is None and plan["ok"]
    assert plan["probes"][0]["changes"] == ["containers[trainer].env.NCCL_DEBUG"]
    assert runner._conn is None  # never connected


def test_client_dry_run_takes_the_namespace_from_the_kubeconfig_context(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kind", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "me", "user": {"token": "t"}}],
                "contexts": [
                    {
                        "name": "kind-clusterbisect",
                        "context": {"cluster": "kind", "user": "me", "namespace": "probes"},
                    }
                ],
                "current-context": "kind-clusterbisect",
            }
        )
    )
    runner = client_runner(kubeconfig=str(config))
    job = runner.manifests(probe_for(load("job"), []))[-1]
    assert job["metadata"]["namespace"] == "probes"


MANIFESTS = ROOT / "manifests"


@pytest.mark.parametrize("name", ["namespace.yaml", "rbac.yaml", "example/training-upgrade.yaml"])
def test_cluster_manifests_are_valid(name: str) -> None:
    for document in yaml.safe_load_all((MANIFESTS / name).read_text()):
        validate(document)


def test_the_role_grants_only_what_the_runner_uses() -> None:
    role = next(
        d for d in yaml.safe_load_all((MANIFESTS / "rbac.yaml").read_text()) if d["kind"] == "Role"
    )
    grants = {
        (g, r): set(rule["verbs"])
        for rule in role["rules"]
        for g in rule["apiGroups"]
        for r in rule["resources"]
    }
    assert grants == {
        ("batch", "jobs"): {"create", "get", "list", "watch", "delete"},
        ("", "pods"): {"get", "list", "delete"},
        ("", "pods/log"): {"get"},
        ("", "configmaps"): {"create", "list", "delete"},
        ("ray.io", "rayjobs"): {"create", "get", "list", "delete"},
        ("", "events"): {"list"},
        # a probe's own Secret; never get, list or watch (they would read any Secret)
        ("", "secrets"): {"create", "patch", "delete"},
    }


def test_kind_sized_copies_keep_the_same_changes() -> None:
    import sys

    from clusterbisect.diff import diff
    from clusterbisect.specs import parse_spec

    sys.path.insert(0, str(MANIFESTS))
    try:
        from kind_example import kind_sized
    finally:
        sys.path.pop(0)
    originals = [(EXAMPLE / f"{n}.yaml").read_text() for n in ("good", "bad")]
    sized = [yaml.safe_dump(kind_sized(yaml.safe_load(t))) for t in originals]
    before = diff(parse_spec(originals[0], "good.yaml"), parse_spec(originals[1], "bad.yaml"))
    after = diff(parse_spec(sized[0], "good.yaml"), parse_spec(sized[1], "bad.yaml"))
    assert [c.key for c in after] == [c.key for c in before]
    limits = {c.key: c.bad for c in after}["containers[trainer].resources.limits.memory"]
    assert limits == "384Mi"
    job = kind_sized(yaml.safe_load(originals[0]))
    assert "nvidia.com/gpu" not in json.dumps(job["spec"]["template"]["spec"]["containers"])
    assert all("persistentVolumeClaim" not in v for v in job["spec"]["template"]["spec"]["volumes"])


# --- what probes do not share with production ----------------------------------------------


def volumes_of(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in job["spec"]["template"]["spec"].get("volumes") or []}


def mounts_of(job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    trainer = containers(job)["trainer"]
    return {m["name"]: m for m in trainer.get("volumeMounts") or []}


@pytest.mark.parametrize(
    ("options", "checkpoints", "mount_read_only"),
    [
        (
            {},
            {
                "persistentVolumeClaim": {
                    "claimName": "checkpoints-search-relevance",
                    "readOnly": True,
                }
            },
            True,
        ),
        ({"scratch_volumes": True}, {"emptyDir": {}}, False),
        (
            {"allow_shared_volumes": True},
            {"persistentVolumeClaim": {"claimName": "checkpoints-search-relevance"}},
            False,
        ),
    ],
)
def test_persistent_volumes_are_not_shared_writable_unless_asked(
    options: dict[str, Any], checkpoints: dict[str, Any], mount_read_only: bool
) -> None:
    spec = load("job")
    runner = client_runner(spec, **options)
    job = runner.manifests(probe_for(spec, []))[-1]
    validate(job)
    volumes = volumes_of(job)
    assert {k: v for k, v in volumes["checkpoints"].items() if k != "name"} == checkpoints
    assert bool(mounts_of(job)["checkpoints"].get("readOnly")) is mount_read_only
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"  # per-pod volumes are kept
    assert "readOnly" not in mounts_of(job)["dshm"]
    changed = job["metadata"]["annotations"].get(render.ANN_VOLUMES, "")
    notes = runner.notes()
    if options.get("allow_shared_volumes"):
        assert changed == "" and notes == []
    else:
        # datasets was read-only already: not a change; the two writable claims are.
        assert "volume datasets" not in changed
        assert "volume model-cache (PVC model-cache-rwx)" in changed
        assert "volume checkpoints (PVC checkpoints-search-relevance)" in changed
        assert any("checkpoints" in note for note in notes)


def test_both_volume_options_at_once_are_bad_input() -> None:
    with pytest.raises(InputError, match="--allow-shared-volumes and --scratch-volumes"):
        KubernetesSettings(allow_shared_volumes=True, scratch_volumes=True)


def test_statefulset_claim_templates_become_per_probe_volumes() -> None:
    document = yaml.safe_load((K8S_FIXTURES / "statefulset.yaml").read_text())
    trainer = document["spec"]["template"]["spec"]["containers"][0]
    trainer["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    document["spec"]["volumeClaimTemplates"] = [
        {
            "metadata": {"name": "data", "labels": {"app": "ranker"}},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
    ]
    spec = parse_spec(yaml.safe_dump(document), "statefulset.yaml")
    job = client_runner(spec).manifests(probe_for(spec, []))[-1]
    validate(job)
    data = volumes_of(job)["data"]
    assert data["ephemeral"]["volumeClaimTemplate"]["spec"]["resources"] == {
        "requests": {"storage": "1Gi"}
    }
    assert not mounts_of(job)["data"].get("readOnly")  # a fresh volume of its own: writable
    scratch = client_runner(spec, scratch_volumes=True).manifests(probe_for(spec, []))[-1]
    assert volumes_of(scratch)["data"] == {"name": "data", "emptyDir": {}}


def test_a_pod_input_keeps_its_priority_class_but_not_the_computed_priority() -> None:
    document = yaml.safe_load((K8S_FIXTURES / "pod.yaml").read_text())
    document["spec"].update(priorityClassName="batch-low", priority=5, preemptionPolicy="Never")
    spec = parse_spec(yaml.safe_dump(document), "pod.yaml")
    job = client_runner(spec).manifests(probe_for(spec, []))[-1]
    validate(job)
    pod = job["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "batch-low"
    assert "priority" not in pod and "preemptionPolicy" not in pod
    assert "app" not in job["spec"]["template"]["metadata"]["labels"]  # a Service's, maybe
    reasons = client_runner(spec).untestable([change(spec, "priority", 7)])
    assert "admission" in reasons["priority"]


def test_admission_labels_are_copied_onto_probe_jobs() -> None:
    document = yaml.safe_load((EXAMPLE / "good.yaml").read_text())
    document["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] = "team-a"
    document["spec"]["template"]["metadata"]["labels"]["kueue.x-k8s.io/priority-class"] = "low"
    spec = parse_spec(yaml.safe_dump(document), "good.yaml")
    job = client_runner(spec).manifests(probe_for(spec, []))[-1]
    labels = job["metadata"]["labels"]
    assert labels["kueue.x-k8s.io/queue-name"] == "team-a"
    assert labels["kueue.x-k8s.io/priority-class"] == "low"
    assert "team" not in labels
    extended = client_runner(spec, admission_labels=["team", "platform.example.com/*"])
    labels = extended.manifests(probe_for(spec, []))[-1]["metadata"]["labels"]
    assert labels["team"] == "search-relevance"
    assert labels["platform.example.com/base-image-version"] == "2026.11.01"
    assert labels[render.LABEL_MANAGED_BY] == "clusterbisect"  # ours always win


def test_a_kubeflow_priority_class_reaches_the_probe_pod() -> None:
    document = yaml.safe_load((K8S_FIXTURES / "pytorchjob.yaml").read_text())
    document["spec"].setdefault("runPolicy", {})["schedulingPolicy"] = {"priorityClass": "high"}
    spec = parse_spec(yaml.safe_dump(document), "pytorchjob.yaml")
    job = client_runner(spec).manifests(probe_for(spec, []))[-1]
    assert job["spec"]["template"]["spec"]["priorityClassName"] == "high"
