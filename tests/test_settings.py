"""Flattening specs into keyed settings and applying changes back (with properties)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from conftest import FIXTURES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clusterbisect.diff import ADDED, MODIFIED, REMOVED, Change, diff
from clusterbisect.settings import (
    YAML_SEGMENT,
    apply_changes,
    flatten,
    normalize_path,
)
from clusterbisect.specs import load_spec, parse_spec
from clusterbisect.specs.model import Spec
from clusterbisect.specs.workload import main_container, spec_env

K8S_VERSION = kubernetes_validate.latest_version()


def load(name: str) -> Spec:
    return load_spec(str(FIXTURES / name))


def values(spec: Spec) -> dict[str, Any]:
    """Settings as key -> value: what "equal up to noise" means."""
    return {k: s.value for k, s in flatten(spec).items()}


def change(key: str, kind: str, good: Any, bad: Any, path: tuple[Any, ...]) -> Change:
    return Change(key=key, change=kind, good=good, bad=bad, category="other", path=path)


# --- keys ------------------------------------------------------------------------------


def test_job_keys_and_categories() -> None:
    flat = flatten(load("job_v1.yaml"))
    expected = {
        "containers[trainer].image": ("registry.example.com/ml/llm-train:2026.11.1", "image"),
        "containers[trainer].env.NCCL_DEBUG": ("INFO", "env"),
        "containers[trainer].resources.limits.memory": ("64Gi", "resources"),
        "containers[trainer].command": (["python", "-m", "train"], "command"),
        "containers[trainer].ports[29500].name": ("dist", "other"),
        "containers[trainer].volumeMounts[/dev/shm].name": ("dshm", "system"),
        "nodeSelector.cloud.google.com/gke-accelerator": ("nvidia-tesla-a100", "scheduling"),
        "metadata.labels.team": ("ml-platform", "metadata"),
        "template.labels.app": ("llm-train", "metadata"),
        "volumes[dshm].emptyDir.sizeLimit": ("16Gi", "system"),
        "imagePullSecrets[registry-creds]": ({"name": "registry-creds"}, "image"),
        "restartPolicy": ("Never", "runtime"),
        "spec.backoffLimit": (0, "runtime"),
    }
    for key, (value, category) in expected.items():
        assert (flat[key].value, flat[key].category) == (value, category), key
    assert flat["containers[trainer].env.NCCL_DEBUG"].container == "trainer"
    assert flat["containers[trainer].env.NCCL_DEBUG"].env_name == "NCCL_DEBUG"
    assert flat["restartPolicy"].container is None
    # tolerations are not a named list: one leaf
    assert isinstance(flat["tolerations"].value, list)
    # secretKeyRef is kept by reference
    assert flat["containers[trainer].env.WANDB_API_KEY"].value == {
        "secretKeyRef": {"key": "api-key", "name": "wandb"}
    }


def test_keys_are_stable_when_lists_are_reordered(tmp_path: Path) -> None:
    doc = yaml.safe_load((FIXTURES / "job_v1.yaml").read_text())
    pod = doc["spec"]["template"]["spec"]
    pod["containers"][0]["env"].reverse()
    pod["volumes"].reverse()
    pod["containers"][0]["volumeMounts"].reverse()
    path = tmp_path / "reordered.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert values(load_spec(str(path))) == values(load("job_v1.yaml"))
    assert diff(load("job_v1.yaml"), load_spec(str(path))) == []


def test_duplicate_names_make_the_list_one_leaf(tmp_path: Path) -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "i",
                    "env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}],
                }
            ]
        },
    }
    spec = parse_spec(json.dumps(doc), "dup.json")
    flat = flatten(spec)
    assert flat["containers[c].env"].value == [
        {"name": "A", "value": "1"},
        {"name": "A", "value": "2"},
    ]


def test_main_container_and_spec_env() -> None:
    job = load("job_v1.yaml")
    assert main_container(job) == "trainer"
    env = spec_env(job)
    assert env["NCCL_DEBUG"] == "INFO" and env["OMP_NUM_THREADS"] == "8"
    assert "WANDB_API_KEY" not in env and "POD_IP" not in env  # valueFrom entries
    deployment = load("deployment.yaml")
    assert main_container(deployment) == "server"
    assert spec_env(deployment, container="metrics") == {}
    assert spec_env(load("ray_job.yaml")) == {"OMP_NUM_THREADS": "4", "NCCL_DEBUG": "INFO"}
    assert spec_env(load("rayjob.yaml")) == {"RAY_DEDUP_LOGS": "0", "OMP_NUM_THREADS": "4"}
    assert spec_env(load("env_dump.txt"))["CUDA_VERSION"] == "12.4.1"
    assert spec_env(load("snapshot_good.json"))["NCCL_DEBUG"] == "INFO"
    assert spec_env(load("requirements_v1.txt")) == {}
    assert main_container(load("pytorchjob.yaml")) == "pytorch"
    assert main_container(load("ray_job.yaml")) is None


def test_default_container_annotation_wins(tmp_path: Path) -> None:
    doc = yaml.safe_load((FIXTURES / "deployment.yaml").read_text())
    doc["spec"]["template"]["metadata"]["annotations"] = {
        "kubectl.kubernetes.io/default-container": "metrics"
    }
    assert main_container(parse_spec(yaml.safe_dump(doc), "d.yaml")) == "metrics"


# --- applying ----------------------------------------------------------------------------


def test_apply_env_added_modified_removed() -> None:
    job = load("job_v1.yaml")
    base = ("spec", "template", "spec", "containers", ("name", "trainer"), "env")
    changes = [
        change("e.NEW", ADDED, None, "1", (*base, ("name", "NEW"))),
        change("e.NCCL_DEBUG", MODIFIED, "INFO", "WARN", (*base, ("name", "NCCL_DEBUG"))),
        change("e.OMP", REMOVED, "8", None, (*base, ("name", "OMP_NUM_THREADS"))),
        change(
            "e.REF",
            ADDED,
            None,
            {"secretKeyRef": {"name": "s", "key": "k"}},
            (*base, ("name", "REF")),
        ),
    ]
    out = apply_changes(job, changes)
    env = out.document["spec"]["template"]["spec"]["containers"][0]["env"]
    by_name = {e["name"]: e for e in env}
    assert by_name["NEW"] == {"name": "NEW", "value": "1"}
    assert by_name["NCCL_DEBUG"] == {"name": "NCCL_DEBUG", "value": "WARN"}
    assert "OMP_NUM_THREADS" not in by_name
    assert by_name["REF"] == {
        "name": "REF",
        "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}},
    }
    # the good spec is untouched
    assert spec_env(job)["NCCL_DEBUG"] == "INFO"
    assert out.kind == job.kind and out.source == job.source


def test_removal_prunes_emptied_mappings() -> None:
    job = load("job_v1.yaml")
    path = ("spec", "template", "spec", "nodeSelector", "cloud.google.com/gke-accelerator")
    out = apply_changes(job, [change("n", REMOVED, "x", None, path)])
    assert "nodeSelector" not in out.document["spec"]["template"]["spec"]


def test_rayjob_runtime_env_yaml_is_reserialised() -> None:
    good = load("rayjob.yaml")
    base = ("spec", "runtimeEnvYAML", YAML_SEGMENT)
    changes = [
        change(
            "p.numpy", MODIFIED, "numpy==1.26.4", "numpy==2.0.1", (*base, "pip", ("@pkg", "numpy"))
        ),
        change(
            "p.requests", REMOVED, "requests==2.31.0", None, (*base, "pip", ("@pkg", "requests"))
        ),
        change("p.torch", ADDED, None, "torch==2.5.0", (*base, "pip", ("@pkg", "torch"))),
        change("e.X", ADDED, None, "1", (*base, "env_vars", "X")),
    ]
    out = apply_changes(good, changes)
    text = out.document["spec"]["runtimeEnvYAML"]
    assert isinstance(text, str)
    runtime_env = yaml.safe_load(text)
    # the list is rebuilt in good's order, the new package last
    assert runtime_env["pip"] == ["numpy==2.0.1", "gymnasium[atari]>=0.29", "torch==2.5.0"]
    assert runtime_env["env_vars"] == {"RAY_DEDUP_LOGS": "0", "OMP_NUM_THREADS": "4", "X": "1"}
    assert runtime_env["working_dir"] == "https://example.com/sweep.zip"


def test_whole_element_changes_apply() -> None:
    good, bad = load("job_v1.yaml"), load("job_v2.yaml")
    doc = json.loads(json.dumps(bad.document))
    doc["spec"]["template"]["spec"]["containers"].append({"name": "sidecar", "image": "envoy:1.30"})
    del doc["spec"]["template"]["spec"]["volumes"][0]
    bad2 = Spec("kubernetes", "Job", "bad2", doc, "batch/v1")
    changes = {c.key: c for c in diff(good, bad2)}
    assert changes["containers[sidecar]"].change == ADDED
    assert changes["containers[sidecar]"].bad == {"name": "sidecar", "image": "envoy:1.30"}
    assert changes["volumes[dataset]"].change == REMOVED
    assert not any(k.startswith("containers[sidecar].") for k in changes)
    only = apply_changes(good, [changes["containers[sidecar]"]])
    names = [c["name"] for c in only.document["spec"]["template"]["spec"]["containers"]]
    assert names == ["trainer", "sidecar"]


def test_paths_survive_a_json_round_trip() -> None:
    good, bad = load("rayjob.yaml"), load("job_v2.yaml")
    changes = diff(load("job_v1.yaml"), bad)
    round_tripped = [
        Change(**{**c.__dict__, "path": normalize_path(json.loads(json.dumps(c.path)))})
        for c in changes
    ]
    assert values(apply_changes(load("job_v1.yaml"), round_tripped)) == values(bad)
    assert good.kind == "RayJob"


@pytest.mark.parametrize(
    ("good", "bad"),
    [
        ("job_v1.yaml", "job_v2.yaml"),
        ("job_v2.yaml", "job_v1.yaml"),
        ("ray_job.yaml", "ray_job_details.json"),
        ("ray_job_details.json", "ray_job.yaml"),
        ("requirements_v1.txt", "requirements_v2.txt"),
        ("snapshot_good.json", "snapshot_bad.json"),
        ("env_dump.txt", "app.env"),
    ],
)
def test_fixture_pairs_apply_all_gives_bad(good: str, bad: str) -> None:
    g, b = load(good), load(bad)
    changes = diff(g, b)
    assert changes
    assert values(apply_changes(g, changes)) == values(b)
    assert apply_changes(g, []).document == g.document


# --- properties --------------------------------------------------------------------------

NAMES = ["trainer", "sidecar", "init"]
IMAGES = ["pytorch:2.3", "pytorch:2.4", "busybox:1.36"]
ENV_NAMES = ["NCCL_DEBUG", "OMP_NUM_THREADS", "HF_TOKEN", "CUDA_LAUNCH_BLOCKING", "A_B"]
VOLUMES = ["data", "dshm", "cfg"]

env_entry = st.one_of(
    st.sampled_from(["0", "1", "INFO", "WARN", ""]).map(lambda v: {"value": v}),
    st.sampled_from(["s1", "s2"]).map(
        lambda s: {"valueFrom": {"secretKeyRef": {"name": s, "key": "k"}}}
    ),
)


@st.composite
def containers(draw: st.DrawFn) -> list[dict[str, Any]]:
    out = []
    for name in draw(st.lists(st.sampled_from(NAMES), min_size=1, max_size=3, unique=True)):
        c: dict[str, Any] = {"name": name, "image": draw(st.sampled_from(IMAGES))}
        env_names = draw(st.lists(st.sampled_from(ENV_NAMES), max_size=4, unique=True))
        if env_names:
            c["env"] = [{"name": n, **draw(env_entry)} for n in env_names]
        if draw(st.booleans()):
            c["args"] = draw(st.lists(st.sampled_from(["--a", "--b", "-v"]), max_size=3))
        limits = draw(
            st.dictionaries(
                st.sampled_from(["cpu", "memory"]), st.sampled_from(["1", "2", "4Gi"]), max_size=2
            )
        )
        if limits:
            c["resources"] = {"limits": limits}
        mounts = draw(st.lists(st.sampled_from(VOLUMES), max_size=2, unique=True))
        if mounts:
            c["volumeMounts"] = [{"name": m, "mountPath": f"/mnt/{m}"} for m in mounts]
        out.append(c)
    return out


volume = st.sampled_from(
    [
        {"emptyDir": {}},
        {"emptyDir": {"medium": "Memory"}},
        {"emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}},
        {"configMap": {"name": "cfg"}},
    ]
)


@st.composite
def jobs(draw: st.DrawFn) -> dict[str, Any]:
    pod: dict[str, Any] = {"restartPolicy": draw(st.sampled_from(["Never", "OnFailure"]))}
    pod["containers"] = draw(containers())
    vols = draw(st.lists(st.sampled_from(VOLUMES), max_size=3, unique=True))
    if vols:
        pod["volumes"] = [{"name": v, **draw(volume)} for v in vols]
    selector = draw(
        st.dictionaries(st.sampled_from(["gpu", "zone", "pool"]), st.sampled_from(["a", "b"]))
    )
    if selector:
        pod["nodeSelector"] = selector
    if draw(st.booleans()):
        pod["tolerations"] = [{"key": "gpu", "operator": "Exists"}]
    labels = draw(st.dictionaries(st.sampled_from(["app", "team"]), st.sampled_from(["x", "y"])))
    spec: dict[str, Any] = {"template": {"metadata": {"labels": labels}, "spec": pod}}
    if draw(st.booleans()):
        spec["backoffLimit"] = draw(st.integers(0, 3))
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "job", "uid": draw(st.uuids()).hex},
        "spec": spec,
    }


def as_spec(doc: dict[str, Any], name: str) -> Spec:
    return parse_spec(yaml.safe_dump(doc), name)


def assert_valid_job(spec: Spec) -> None:
    manifest = json.loads(json.dumps(spec.document))
    manifest.setdefault("metadata", {})["name"] = "probe"
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def draw_subset(data: st.DataObject, changes: list[Change]) -> list[Change]:
    if not changes:
        return []
    return data.draw(st.lists(st.sampled_from(changes), unique_by=lambda c: c.key))


# CLUSTERBISECT_EXAMPLES=1000 for a deeper search.
PROPERTY = settings(
    max_examples=int(os.environ.get("CLUSTERBISECT_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@PROPERTY
@given(jobs(), jobs(), st.data())
def test_property_job_apply(good_doc: dict, bad_doc: dict, data: st.DataObject) -> None:
    good, bad = as_spec(good_doc, "good.yaml"), as_spec(bad_doc, "bad.yaml")
    changes = diff(good, bad)
    keys = [c.key for c in changes]
    assert len(keys) == len(set(keys)) and keys == sorted(keys)
    # all changes: good becomes bad (up to noise)
    assert values(apply_changes(good, changes)) == values(bad)
    # no changes: good stays good
    assert apply_changes(good, []).document == good.document
    assert values(apply_changes(good, [])) == values(good)
    # any subset: a valid Job that still loads and flattens
    subset = (
        data.draw(st.lists(st.sampled_from(changes), unique_by=lambda c: c.key)) if changes else []
    )
    probe = apply_changes(good, subset)
    assert probe.kind == "Job" and probe.format == "kubernetes"
    assert_valid_job(probe)
    reloaded = as_spec(probe.document, "probe.yaml")
    assert values(reloaded) == values(probe)
    # the subset's settings are now bad's, the others still good's
    now = values(probe)
    for c in subset:
        if c.change == REMOVED:
            assert c.key not in now
        elif c.key in now:
            assert now[c.key] == c.bad


pip_req = st.tuples(
    st.sampled_from(["numpy", "torch", "requests", "Pillow", "typing_extensions"]),
    st.sampled_from(["==1.0", "==2.0", ">=1.5", ""]),
)


@st.composite
def ray_jobs(draw: st.DrawFn) -> dict[str, Any]:
    reqs = draw(st.lists(pip_req, max_size=4, unique_by=lambda r: r[0]))
    env_vars = draw(
        st.dictionaries(st.sampled_from(ENV_NAMES), st.sampled_from(["1", "0", "x"]), max_size=3)
    )
    runtime_env: dict[str, Any] = {}
    if reqs:
        pip = [n + v for n, v in reqs]
        runtime_env["pip"] = {"packages": pip, "pip_check": False} if draw(st.booleans()) else pip
    if env_vars:
        runtime_env["env_vars"] = env_vars
    if draw(st.booleans()):
        runtime_env["working_dir"] = draw(st.sampled_from(["./src", "s3://b/src.zip"]))
    return {
        "entrypoint": draw(st.sampled_from(["python a.py", "python b.py"])),
        "runtime_env": runtime_env,
    }


@PROPERTY
@given(ray_jobs(), ray_jobs(), st.data())
def test_property_ray_apply(good_doc: dict, bad_doc: dict, data: st.DataObject) -> None:
    good = parse_spec(json.dumps(good_doc), "good.json")
    bad = parse_spec(json.dumps(bad_doc), "bad.json")
    changes = diff(good, bad)
    assert values(apply_changes(good, changes)) == values(bad)
    assert apply_changes(good, []).document == good.document
    subset = (
        data.draw(st.lists(st.sampled_from(changes), unique_by=lambda c: c.key)) if changes else []
    )
    probe = apply_changes(good, subset)
    reloaded = parse_spec(json.dumps(probe.document), "probe.json")
    assert reloaded.kind == "RayJobSpec"
    assert values(reloaded) == values(probe)


@PROPERTY
@given(ray_jobs(), ray_jobs(), st.data())
def test_property_rayjob_runtime_env_yaml(
    good_doc: dict, bad_doc: dict, data: st.DataObject
) -> None:
    template = yaml.safe_load((FIXTURES / "rayjob.yaml").read_text())

    def rayjob(job: dict[str, Any], name: str) -> Spec:
        doc = json.loads(json.dumps(template))
        doc["spec"]["entrypoint"] = job["entrypoint"]
        doc["spec"]["runtimeEnvYAML"] = yaml.safe_dump(job["runtime_env"])
        return parse_spec(yaml.safe_dump(doc), name)

    good, bad = rayjob(good_doc, "good.yaml"), rayjob(bad_doc, "bad.yaml")
    changes = diff(good, bad)
    assert values(apply_changes(good, changes)) == values(bad)
    subset = (
        data.draw(st.lists(st.sampled_from(changes), unique_by=lambda c: c.key)) if changes else []
    )
    probe = apply_changes(good, subset)
    reloaded = parse_spec(yaml.safe_dump(probe.document), "probe.yaml")
    assert reloaded.kind == "RayJob"
    assert values(reloaded) == values(probe)


@st.composite
def pytorch_jobs(draw: st.DrawFn) -> dict[str, Any]:
    roles = draw(st.lists(st.sampled_from(["Master", "Worker"]), min_size=1, unique=True))
    replica_specs = {
        role: {
            "replicas": draw(st.integers(1, 4)),
            "restartPolicy": "OnFailure",
            "template": {"spec": {"containers": draw(containers())}},
        }
        for role in roles
    }
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "PyTorchJob",
        "metadata": {"name": "pt", "uid": draw(st.uuids()).hex},
        "spec": {"pytorchReplicaSpecs": replica_specs},
    }


@PROPERTY
@given(pytorch_jobs(), pytorch_jobs(), st.data())
def test_property_pytorchjob_apply(good_doc: dict, bad_doc: dict, data: st.DataObject) -> None:
    good, bad = as_spec(good_doc, "good.yaml"), as_spec(bad_doc, "bad.yaml")
    changes = diff(good, bad)
    assert values(apply_changes(good, changes)) == values(bad)
    assert apply_changes(good, []).document == good.document
    probe = apply_changes(good, draw_subset(data, changes))
    # still a PyTorchJob with at least one replica type, each with a container
    reloaded = as_spec(probe.document, "probe.yaml")
    assert reloaded.kind == "PyTorchJob"
    assert values(reloaded) == values(probe)
    for replica in probe.document["spec"]["pytorchReplicaSpecs"].values():
        assert replica["template"]["spec"]["containers"]
