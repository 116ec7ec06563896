"""Every training workload kind, loaded, diffed and probed as its operator would run it.

The fixtures (tests/fixtures/k8s/) are the project's own, in the shape of each kind's
published examples: Volcano's PyTorch plugin job, LWS's multi-template sample,
Kubeflow Trainer's multi-node TrainJob on a torch ClusterTrainingRuntime. Probe Jobs
are validated with kubernetes-validate (strict); the RayJob probe, a CRD kind without
a published schema there, has each of its pod templates validated as a PodTemplate.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import FIXTURES
from test_k8s_render import (
    K8S_FIXTURES,
    SECRET_VALUE,
    change,
    client_runner,
    containers,
    env_of,
    load,
    probe_for,
    validate,
)

from clusterbisect.diff import diff
from clusterbisect.errors import InputError
from clusterbisect.runners.kubernetes import operators, rayjobs, render
from clusterbisect.settings import apply_changes, flatten
from clusterbisect.specs import kinds, load_spec, parse_spec
from clusterbisect.specs.kubernetes import pod_templates, resolve


def write(path: Path, *docs: dict[str, Any]) -> str:
    path.write_text(yaml.safe_dump_all(list(docs)))
    return str(path)


def fixture_docs(name: str) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((K8S_FIXTURES / f"{name}.yaml").read_text()))


def probe_job(spec: Any, changes: list[Any] | None = None, **options: Any) -> dict[str, Any]:
    return client_runner(**options).manifests(probe_for(spec, changes or []))[-1]


# --- which kind, where its templates are ---------------------------------------------------


@pytest.mark.parametrize(
    ("name", "roles", "prefixes"),
    [
        ("volcanojob", ["master", "worker"], ["tasks[master].", "tasks[worker]."]),
        ("leaderworkerset", ["leader", "worker"], ["leader.", "worker."]),
        (
            "trainjob",
            ["node", "dataset-initializer"],
            ["runtime.jobs[node].", "runtime.jobs[dataset-initializer]."],
        ),
    ],
)
def test_new_kinds_are_loaded_with_their_templates(
    name: str, roles: list[str], prefixes: list[str]
) -> None:
    spec = load(name)
    refs = pod_templates(spec)
    assert [r.role for r in refs] == roles  # the probed one first
    assert [r.key_prefix for r in refs] == prefixes
    for ref in refs:
        assert isinstance(resolve(spec.document, ref.path)["spec"]["containers"], list)


def test_a_volcano_job_is_read_by_its_api_version() -> None:
    """A batch.volcano.sh Job keeps its templates under spec.tasks[], and is not
    comparable with a batch/v1 Job."""
    volcano = load("volcanojob")
    assert volcano.kind == "Job" and kinds.identify(volcano.document) == kinds.VOLCANO_JOB
    batch = load("job")
    with pytest.raises(InputError, match="cannot compare"):
        diff(batch, volcano)
    # A Job of an unknown group is an unknown kind, searched for templates.
    other = {**fixture_docs("volcanojob")[0], "apiVersion": "example.com/v1"}
    assert kinds.identify(other) == "Job.example.com"


def test_the_diff_of_each_new_kind_is_exact(tmp_path: Path) -> None:
    cases = {
        "volcanojob": (
            lambda d: d["spec"]["tasks"][0]["template"]["spec"]["containers"][0],
            "tasks[worker].containers[pytorch].image",
        ),
        "leaderworkerset": (
            lambda d: d["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0],
            "worker.containers[worker].image",
        ),
    }
    for name, (container, key) in cases.items():
        good = fixture_docs(name)[0]
        bad = copy.deepcopy(good)
        container(bad)["image"] = "python:3.13-slim"
        changes = diff(
            load_spec(write(tmp_path / "g.yaml", good)), load_spec(write(tmp_path / "b.yaml", bad))
        )
        assert [(c.key, c.good, c.bad) for c in changes] == [
            (key, "python:3.12-slim", "python:3.13-slim")
        ]
    # A TrainJob: the trainer's and the runtime's settings, each under its own key.
    good, runtime = fixture_docs("trainjob")
    bad, bad_runtime = copy.deepcopy(good), copy.deepcopy(runtime)
    bad["spec"]["trainer"]["env"][0]["value"] = "0.5"
    node = bad_runtime["spec"]["template"]["spec"]["replicatedJobs"][1]["template"]["spec"]
    node["template"]["spec"]["nodeSelector"]["pool"] = "gpu"
    changes = diff(
        load_spec(write(tmp_path / "g.yaml", good, runtime)),
        load_spec(write(tmp_path / "b.yaml", bad, bad_runtime)),
    )
    assert sorted(c.key for c in changes) == [
        "runtime.jobs[node].nodeSelector.pool",
        "spec.trainer.env.LR",
    ]


def test_a_trainjob_without_its_runtime_says_what_to_add(tmp_path: Path) -> None:
    path = write(tmp_path / "train.yaml", fixture_docs("trainjob")[0])
    with pytest.raises(InputError) as caught:
        load_spec(path)
    message = caught.value.message
    assert message.startswith(path) and "ClusterTrainingRuntime 'torch-ranker'" in message
    assert "kubectl get clustertrainingruntime torch-ranker -o yaml" in message


def test_a_training_runtime_alone_is_probed_like_a_jobset() -> None:
    runtime = fixture_docs("trainjob")[1]
    spec = parse_spec(yaml.safe_dump(runtime), "runtime.yaml")
    assert [r.role for r in pod_templates(spec)] == ["node", "dataset-initializer"]
    job = probe_job(spec)
    validate(job)
    assert containers(job)["node"]["image"] == "python:3.11-slim"


@pytest.mark.parametrize(
    ("name", "what"),
    [("argo-workflow", "an Argo Workflow"), ("sparkapplication", "a Spark application")],
)
def test_argo_and_spark_are_refused_with_what_to_pass(cli: Any, name: str, what: str) -> None:
    path = str(K8S_FIXTURES / f"{name}.yaml")
    proc = cli("diff", path, path, expect=2)
    assert proc.stderr.startswith(f"error: {path}: ") and what in proc.stderr
    assert "Pass the" in proc.stderr and "has no pod template" not in proc.stderr


# --- which template a probe runs -------------------------------------------------------------


def _tfjob_without_chief() -> Any:
    doc = fixture_docs("tfjob")[0]
    replicas = doc["spec"]["tfReplicaSpecs"]
    del replicas["Chief"]
    doc["spec"]["tfReplicaSpecs"] = {"PS": replicas["PS"], "Worker": replicas["Worker"]}
    return parse_spec(yaml.safe_dump(doc, sort_keys=False), "tf.yaml")


def test_the_default_template_is_the_coordinator_else_the_first_worker() -> None:
    tf = _tfjob_without_chief()
    assert [r.role for r in kinds.template_refs(tf.document, "TFJob")] == ["PS", "Worker"]
    assert render.probe_template(tf).role == "Worker"  # not the PS listed first
    config = json.loads(env_of(containers(probe_job(tf))["tensorflow"])["TF_CONFIG"])
    assert config["task"] == {"type": "worker", "index": 0}

    doc = fixture_docs("jobset")[0]
    doc["spec"]["replicatedJobs"].reverse()  # workers first
    doc["spec"]["coordinator"] = {"replicatedJob": "driver", "jobIndex": 0, "podIndex": 0}
    jobset = parse_spec(yaml.safe_dump(doc), "jobset.yaml")
    assert render.probe_template(jobset).role == "driver"
    doc["spec"]["coordinator"]["replicatedJob"] = "workers"
    assert render.probe_template(parse_spec(yaml.safe_dump(doc), "j.yaml")).role == "workers"

    mpi = fixture_docs("volcanojob")[0]
    for task in mpi["spec"]["tasks"]:
        task["name"] = "mpi" + task["name"]
    mpi["spec"]["plugins"] = {"ssh": [], "svc": []}
    assert render.probe_template(parse_spec(yaml.safe_dump(mpi), "mpi.yaml")).role == "mpimaster"
    mpi["spec"]["plugins"]["pytorch"] = ["--master=mpiworker"]  # what the plugin is told
    assert render.probe_template(parse_spec(yaml.safe_dump(mpi), "m.yaml")).role == "mpiworker"


def test_template_picks_any_template_and_makes_its_changes_testable() -> None:
    spec = load("pytorchjob")
    worker = change(spec, "replicas[Worker].containers[pytorch].env.LR", "0.5")
    master = change(spec, "replicas[Master].containers[pytorch].env.LR", "0.5")
    default = client_runner(spec).untestable([worker, master])
    assert list(default) == [worker.key]
    assert "--template Worker" in default[worker.key]

    runner = client_runner(spec, template="worker")  # any case
    assert list(runner.untestable([worker, master])) == [master.key]
    job = runner.manifests(probe_for(spec, [worker]))[-1]
    validate(job)
    assert job["metadata"]["annotations"][render.ANN_TEMPLATE] == "PyTorchJob/Worker"
    assert env_of(containers(job)["pytorch"])["LR"] == "0.5"

    with pytest.raises(InputError, match=r"--template: no pod template 'Chief'.*Worker, Master"):
        client_runner(spec, template="Chief")


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("volcanojob", "master"),
        ("volcanojob", "worker"),
        ("leaderworkerset", "leader"),
        ("leaderworkerset", "worker"),
        ("trainjob", "node"),
        ("trainjob", "dataset-initializer"),
        ("jobset", "workers"),
        ("tfjob", "PS"),
        ("mpijob", "Worker"),
    ],
)
def test_every_template_of_every_kind_renders_a_valid_probe(name: str, role: str) -> None:
    spec = load(name)
    job = probe_job(spec, template=role)
    validate(job)
    assert job["metadata"]["annotations"][render.ANN_TEMPLATE] == f"{spec.kind}/{role}"
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    shown = yaml.safe_dump(client_runner(template=role).render(probe_for(spec, [])))
    assert SECRET_VALUE not in shown


# --- what the operators do, for a world of one ---------------------------------------------


def test_volcano_plugins_env_for_a_world_of_one() -> None:
    job = probe_job(load("volcanojob"))
    env = env_of(containers(job)["pytorch"])
    assert {k: env[k] for k in ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")} == {
        "MASTER_ADDR": "localhost",
        "MASTER_PORT": "23456",
        "WORLD_SIZE": "1",
        "RANK": "0",
    }
    assert env["VK_TASK_INDEX"] == env["VC_TASK_INDEX"] == "0"  # the env plugin
    assert env["VC_MASTER_HOSTS"] == "localhost" and env["VC_MASTER_NUM"] == "1"  # svc
    assert env["LR"] == "0.02"  # the master's own


def test_leaderworkerset_env_for_a_group_of_one() -> None:
    env = env_of(containers(probe_job(load("leaderworkerset")))["leader"])
    assert (env["LWS_LEADER_ADDRESS"], env["LWS_GROUP_SIZE"], env["LWS_WORKER_INDEX"]) == (
        "localhost",
        "1",
        "0",
    )


def test_a_trainjob_probe_runs_the_trainer_over_the_runtime() -> None:
    spec = load("trainjob")
    image = change(spec, "spec.trainer.image", "python:3.13-slim")
    selector = change(spec, "runtime.jobs[node].nodeSelector.pool", "gpu")
    initializer = change(
        spec, "runtime.jobs[dataset-initializer].containers[dataset-initializer].image", "x:1"
    )
    runner = client_runner(spec)
    assert list(runner.untestable([image, selector, initializer])) == [initializer.key]
    job = runner.manifests(probe_for(spec, [image, selector]))[-1]
    validate(job)
    node = containers(job)["node"]
    assert node["image"] == "python:3.13-slim"  # the trainer's, over the runtime's 3.11
    assert node["command"] == ["python", "-c"]
    assert node["resources"]["limits"] == {"memory": "256Mi"}
    env = env_of(node)
    assert env["LR"] == "0.02" and "secretKeyRef" in env["WANDB_API_KEY"]  # both kept
    assert {k: env[k] for k in ("PET_NNODES", "PET_NODE_RANK", "PET_MASTER_PORT")} == {
        "PET_NNODES": "1",
        "PET_NODE_RANK": "0",
        "PET_MASTER_PORT": "29500",
    }
    assert job["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "gpu"}


def test_an_indexed_job_runs_indexed() -> None:
    """The Job controller gives an Indexed Job's pod JOB_COMPLETION_INDEX: the probe
    runs as an Indexed Job of one completion, so the pod gets index 0 the same way."""
    doc = yaml.safe_load((K8S_FIXTURES / "cronjob.yaml").read_text())
    job_doc = {**doc, "kind": "Job", "spec": doc["spec"]["jobTemplate"]["spec"]}
    job_doc["spec"].update(completionMode="Indexed", completions=8, parallelism=4)
    spec = parse_spec(yaml.safe_dump(job_doc), "indexed.yaml")
    job = probe_job(spec)
    validate(job)
    assert {k: job["spec"][k] for k in ("completionMode", "completions", "parallelism")} == {
        "completionMode": "Indexed",
        "completions": 1,
        "parallelism": 1,
    }
    runner = client_runner(spec)
    mode = change(spec, "spec.completionMode", "NonIndexed")
    assert runner.untestable([mode]) == {}  # it reaches the probe
    carried = {n.setting: n.reason for n in runner.fidelity().not_carried}
    assert "spec.completions" in carried and "world of one" in carried["spec.completions"]
    assert "spec.completionMode" not in carried

    jobset = fixture_docs("jobset")[0]
    jobset["spec"]["replicatedJobs"][0]["template"]["spec"]["completionMode"] = "Indexed"
    job = probe_job(parse_spec(yaml.safe_dump(jobset), "js.yaml"))
    assert job["spec"]["completionMode"] == "Indexed"


def test_a_command_that_cannot_be_a_world_of_one_is_said() -> None:
    doc = fixture_docs("pytorchjob")[0]
    master = doc["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["spec"]["containers"][0]
    master["command"] = ["torchrun", "--nnodes=2", "--nproc_per_node=1", "train.py"]
    master.pop("args")
    doc["spec"]["nprocPerNode"] = "1"
    spec = parse_spec(yaml.safe_dump(doc), "ddp.yaml")
    env = env_of(containers(probe_job(spec))["pytorch"])
    assert env["PET_NNODES"] == "1"
    said = {n.setting: n for n in client_runner(spec).fidelity().not_carried}
    item = said["replicas[Master].containers[pytorch].command"]
    assert item.value == "--nnodes 2" and "world of one" in item.reason
    assert operators.world_of_one(["sh", "-c", "torchrun --nnodes 1:4 train.py"]) is None
    assert operators.world_of_one(["deepspeed", "--num_nodes", "4", "t.py"]) == "--num_nodes 4"
    # A replaced command is not the workload's any more.
    assert not any(
        "world of one" in n.reason
        for n in client_runner(spec, command=["python", "-c", "pass"]).fidelity().not_carried
        if n.setting.endswith(".command")
    )


def test_what_admission_needs_is_carried_and_testable() -> None:
    """A Kubeflow job's Kueue queue label and its priority class reach the probe Job
    (isolation.py copies them), so they are neither untestable nor listed as not
    carried; the rest of the job's metadata and run policy is."""
    doc = fixture_docs("pytorchjob")[0]
    doc["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] = "team-a"
    doc["spec"]["runPolicy"]["schedulingPolicy"] = {"priorityClass": "low", "queue": "q"}
    spec = parse_spec(yaml.safe_dump(doc), "queued.yaml")
    job = probe_job(spec)
    validate(job)
    assert job["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "team-a"
    assert job["spec"]["template"]["spec"]["priorityClassName"] == "low"
    runner = client_runner(spec)
    queue = change(spec, "metadata.labels.kueue.x-k8s.io/queue-name", "team-b")
    priority = change(spec, "spec.runPolicy.schedulingPolicy.priorityClass", "high")
    app = change(spec, "metadata.labels.app", "other")
    assert list(runner.untestable([queue, priority, app])) == [app.key]
    said = {n.setting for n in runner.fidelity().not_carried}
    assert queue.key not in said and priority.key not in said
    assert {"metadata.labels.app", "spec.runPolicy.schedulingPolicy.queue"} <= said


# --- where probes go ---------------------------------------------------------------------------


def test_probes_default_to_the_source_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    spec = load("volcanojob")  # metadata.namespace: ml
    runner = client_runner(spec)
    assert runner.manifests(probe_for(spec, []))[-1]["metadata"]["namespace"] == "ml"
    assert runner.fidelity().target.startswith("namespace 'ml' (the source's")
    flagged = client_runner(spec, namespace="probes")
    assert flagged.fidelity().target == "namespace 'probes' (-n)"
    assert flagged.manifests(probe_for(spec, []))[-1]["metadata"]["namespace"] == "probes"


def test_the_dry_run_lists_what_the_probe_does_not_carry(cli: Any, tmp_path: Path) -> None:
    good = fixture_docs("volcanojob")[0]
    bad = copy.deepcopy(good)
    bad["spec"]["tasks"][1]["template"]["spec"]["containers"][0]["env"][0]["value"] = "0.5"
    bad["spec"]["queue"] = "gpu"
    paths = [write(tmp_path / "good.yaml", good), write(tmp_path / "bad.yaml", bad)]
    plan = cli.json("run", *paths, "--backend", "kubernetes", "--dry-run", expect=0)
    fidelity = plan["fidelity"]
    assert fidelity["runs"] == "the master template of the Job, as a Job of one pod"
    assert fidelity["target"].startswith("namespace 'ml' (the source's")
    said = {n["setting"]: n["reason"] for n in fidelity["not_carried"]}
    assert {"spec.minAvailable", "spec.queue", "spec.maxRetry", "tasks[worker]"} <= set(said)
    assert [u["key"] for u in plan["untestable"]] == ["spec.queue"]
    text = cli("run", *paths, "--backend", "kubernetes", "--dry-run", expect=0).stdout
    assert "Not carried by the probes" in text and "spec.minAvailable = 3" in text
    # Step mode says the same when it starts, and with each next probe.
    state = str(tmp_path / "state")
    started = cli.json(
        "start", *paths, "--backend", "kubernetes", "--state-dir", state, "--verbose", expect=0
    )
    assert started["fidelity"] == fidelity
    full = cli.json("next", "--state-dir", state, "--verbose", expect=0)
    assert full["fidelity"] == fidelity
    # The compact reply (the default) counts what --verbose lists.
    compact = cli.json("next", "--state-dir", state, expect=0)["fidelity"]
    assert compact["not_carried_count"] == len(fidelity["not_carried"])


# --- RayJob probes ----------------------------------------------------------------------------


def pod_template_is_valid(template: dict[str, Any]) -> None:
    validate(
        {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}
    )


def test_a_rayjob_is_probed_as_a_rayjob() -> None:
    spec = load("rayjob")
    lr = change(spec, "head.containers[ray-head].env.LR", "0.5")
    secret = change(spec, "head.containers[ray-head].env.HF_TOKEN", "hf_new_123", secret=True)
    runner = client_runner(spec, namespace="ns1")
    probe = probe_for(spec, [lr, secret])
    manifest = runner.manifests(probe)[-1]
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayJob"
    body = manifest["spec"]
    assert body["entrypoint"] == "python train.py"  # KubeRay's submitter runs it
    assert body["shutdownAfterJobFinishes"] is True and body["backoffLimit"] == 0
    assert body["submitterConfig"] == {"backoffLimit": 0}
    assert body["activeDeadlineSeconds"] == 900
    assert manifest["metadata"]["namespace"] == "ns1"
    labels = manifest["metadata"]["labels"]
    assert labels[render.LABEL_SESSION] == "20261127-023012-a1b2c3"
    for ref in kinds.template_refs(manifest, "RayJob"):
        template = resolve(manifest, ref.path)
        pod_template_is_valid(template)
        assert template["metadata"]["labels"][render.LABEL_PROBE] == "p003"
    head = body["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert env_of(head)["LR"] == "0.5" and env_of(head)["HF_TOKEN"] == "hf_new_123"
    shown = yaml.safe_dump(runner.render(probe))
    assert "hf_new_123" not in shown and SECRET_VALUE not in shown

    # Every change is testable but what a probe RayJob sets itself.
    deadline = change(spec, "spec.shutdownAfterJobFinishes", False)
    entry = change(spec, "spec.entrypoint", "python other.py")
    assert list(runner.untestable([lr, deadline, entry])) == [deadline.key]
    probe.command = ["python", "-c", "print('smoke')"]
    assert (
        runner.manifests(probe)[-1]["spec"]["entrypoint"]
        == "python -c 'print('\"'\"'smoke'\"'\"')'"
    )
    assert (
        "replaces the entrypoint"
        in client_runner(spec, command=["python", "x.py"]).untestable([entry])[entry.key]
    )
    assert "fresh Ray cluster" in runner.fidelity().runs


def test_rayjob_probes_refuse_options_that_mean_nothing_for_them() -> None:
    spec = load("rayjob")
    for options, flag in (
        ({"template": "head"}, "--template"),
        ({"args": ["--x"]}, "--args"),
        ({"probe": "smoke"}, "--probe"),
    ):
        with pytest.raises(InputError, match=flag):
            client_runner(spec, **options)


def test_rayjob_verdicts_from_kuberay_status() -> None:
    def status(**fields: str) -> dict[str, Any]:
        return {"status": fields}

    assert rayjobs.verdict(status(jobDeploymentStatus="Running", jobStatus="RUNNING")) is None
    ok = rayjobs.verdict(status(jobDeploymentStatus="Complete", jobStatus="SUCCEEDED"))
    assert ok is not None and ok.exit_code == 0
    failed = rayjobs.verdict(
        status(jobDeploymentStatus="Failed", jobStatus="FAILED", reason="AppFailed")
    )
    assert failed is not None and failed.exit_code == 1 and failed.infra_error is None
    late = rayjobs.verdict(status(jobDeploymentStatus="Failed", reason="DeadlineExceeded"))
    assert late is not None and late.timed_out
    refused = rayjobs.verdict(
        status(jobDeploymentStatus="Failed", reason="SubmissionFailed", message="no dashboard")
    )
    assert refused is not None and "could not be submitted: no dashboard" in str(
        refused.infra_error
    )


# --- Anyscale-style job files ---------------------------------------------------------------


def test_an_anyscale_job_file_keeps_its_runtime_fields(tmp_path: Path) -> None:
    from clusterbisect.runners.ray.render import not_carried, render_submission, why_untestable

    spec = load_spec(str(FIXTURES / "anyscale_job.yaml"))
    submission = render_submission(spec)
    runtime_env = submission.runtime_env
    assert runtime_env["working_dir"] == str(FIXTURES)  # made absolute from the file's dir
    assert runtime_env["env_vars"] == {"LR": "0.01", "HF_TOKEN": SECRET_VALUE}
    assert runtime_env["pip"] == ["numpy==1.26.4"]

    settings = flatten(spec)
    assert settings["env_vars.LR"].env_name == "LR"
    bad = spec.copy()
    bad.document["env_vars"]["LR"] = "0.5"
    bad.document["requirements"] = ["numpy==2.0.0"]
    bad.document["compute_config"] = "gpu-h100-x8"
    changes = {c.key: c for c in diff(spec, bad)}
    assert set(changes) == {"env_vars.LR", "requirements.numpy", "compute_config"}
    probe_spec = apply_changes(spec, [changes["env_vars.LR"], changes["requirements.numpy"]])
    after = render_submission(probe_spec).runtime_env
    assert after["env_vars"]["LR"] == "0.5" and after["pip"] == ["numpy==2.0.0"]
    reasons = {
        k: why_untestable(c, rayjob=False, command_given=False, podman=False)
        for k, c in changes.items()
    }
    assert reasons["env_vars.LR"] is None and reasons["requirements.numpy"] is None
    assert "cluster" in str(reasons["compute_config"])
    left = {n.setting for n in not_carried(spec, "a local Ray")}
    assert left == {"image_uri", "compute_config", "max_retries"}


# --- errors name the user's file ---------------------------------------------------------------


def test_a_session_of_one_object_of_a_file_reopens_and_names_the_users_file(
    cli: Any, tmp_path: Path
) -> None:
    """`start FILE#NAME` keeps the pick in its copy; an error about a stored input
    names the file the user gave, not the copy under inputs/."""
    pod = yaml.safe_load((K8S_FIXTURES / "pod.yaml").read_text())
    other = {**copy.deepcopy(pod), "metadata": {"name": "other"}}
    bad_pod = copy.deepcopy(pod)
    bad_pod["spec"]["containers"][0]["env"][0]["value"] = "0.5"
    good = write(tmp_path / "good.yaml", pod, other)
    bad = write(tmp_path / "bad.yaml", bad_pod, other)
    name = pod["metadata"]["name"]
    state = tmp_path / "state"
    started = cli.json(
        "start", f"{good}#{name}", f"{bad}#{name}", "--backend", "kubernetes",
        "--state-dir", str(state), expect=0,
    )  # fmt: skip
    assert started["changes_searched"] == 1
    view = cli.json("next", "--state-dir", str(state), expect=0)
    assert view["probe"]["id"] == "p001"
    # The stored copy turns into something refused: the error names good.yaml#NAME.
    (state / "inputs" / "good.yaml").write_text((K8S_FIXTURES / "argo-workflow.yaml").read_text())
    proc = cli("next", "--state-dir", str(state), "--json", expect=2)
    assert f"{good}#{name}: " in proc.stderr and "inputs/" not in proc.stderr
