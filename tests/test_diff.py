"""The structural diff: exactly the settings that changed, secrets redacted."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from conftest import FIXTURES

from clusterbisect.diff import compare, diff, ignore_regex, render_table
from clusterbisect.errors import InputError
from clusterbisect.redact import REDACTED, looks_secret
from clusterbisect.settings import apply_changes, flatten
from clusterbisect.specs import load_spec, parse_spec
from clusterbisect.specs.model import Spec


def load(name: str) -> Spec:
    return load_spec(str(FIXTURES / name))


def edited(name: str, edit: Any) -> Spec:
    doc = yaml.safe_load((FIXTURES / name).read_text())
    edit(doc)
    return parse_spec(yaml.safe_dump(doc), f"edited-{name}")


def test_training_job_v1_v2_lists_exactly_what_changed() -> None:
    changes = diff(load("job_v1.yaml"), load("job_v2.yaml"))
    assert [(c.key, c.change) for c in changes] == [
        ("containers[trainer].env.HF_TOKEN", "modified"),
        ("containers[trainer].env.NCCL_IB_DISABLE", "removed"),
        ("containers[trainer].env.NCCL_P2P_LEVEL", "added"),
        ("containers[trainer].env.PYTORCH_CUDA_ALLOC_CONF", "modified"),
        ("containers[trainer].image", "modified"),
        ("containers[trainer].resources.limits.memory", "modified"),
        ("volumes[dshm].emptyDir.sizeLimit", "modified"),
    ]
    by_key = {c.key: c for c in changes}
    image = by_key["containers[trainer].image"]
    assert (image.good, image.bad, image.category) == (
        "registry.example.com/ml/llm-train:2026.11.1",
        "registry.example.com/ml/llm-train:2026.11.2",
        "image",
    )
    added = by_key["containers[trainer].env.NCCL_P2P_LEVEL"].to_dict()
    assert added == {
        "key": "containers[trainer].env.NCCL_P2P_LEVEL",
        "change": "added",
        "good": None,
        "bad": "NVL",
        "category": "env",
    }
    assert by_key["containers[trainer].env.NCCL_IB_DISABLE"].to_dict()["bad"] is None


def test_secret_values_are_redacted_but_still_changes() -> None:
    changes = diff(load("job_v1.yaml"), load("job_v2.yaml"))
    token = next(c for c in changes if c.key.endswith("HF_TOKEN"))
    assert token.secret
    # the raw values stay on the Change (probes need them) ...
    assert (token.good, token.bad) == ("hf_oldtokenvalue000", "hf_newtokenvalue111")
    # ... but never reach any output
    public = json.dumps([c.to_dict() for c in changes])
    table = render_table(changes, "a", "b")
    for text in (public, table):
        assert "hf_oldtokenvalue000" not in text and "hf_newtokenvalue111" not in text
    assert token.to_dict()["good"] == REDACTED


def test_secret_key_ref_is_compared_by_reference() -> None:
    def rename_secret(doc: dict) -> None:
        env = doc["spec"]["template"]["spec"]["containers"][0]["env"]
        ref = next(e for e in env if e["name"] == "WANDB_API_KEY")
        ref["valueFrom"]["secretKeyRef"]["name"] = "wandb-v2"

    changes = diff(load("job_v1.yaml"), edited("job_v1.yaml", rename_secret))
    assert [c.key for c in changes] == ["containers[trainer].env.WANDB_API_KEY"]
    shown = changes[0].to_dict()
    # a reference names where the secret lives; it is shown, it holds no secret
    assert shown["bad"] == {"secretKeyRef": {"key": "api-key", "name": "wandb-v2"}}


def test_literal_value_replacing_a_reference_is_redacted() -> None:
    def inline(doc: dict) -> None:
        env = doc["spec"]["template"]["spec"]["containers"][0]["env"]
        ref = next(e for e in env if e["name"] == "WANDB_API_KEY")
        ref.pop("valueFrom")
        ref["value"] = "plaintext-key-123"

    change = diff(load("job_v1.yaml"), edited("job_v1.yaml", inline))[0]
    assert change.to_dict()["bad"] == REDACTED
    assert change.to_dict()["good"] == {"secretKeyRef": {"key": "api-key", "name": "wandb"}}


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("API_KEY", True),
        ("WANDB_API_KEY", True),
        ("AWS_SECRET_ACCESS_KEY", True),
        ("HF_TOKEN", True),
        ("GITHUB_TOKEN", True),
        ("HFTOKEN", True),
        ("DB_PASSWORD", True),
        ("PGPASSWORD", True),
        ("MYSQL_ROOT_PASSWD", True),
        ("GOOGLE_APPLICATION_CREDENTIALS", True),
        ("SSH_PRIVATE_KEY", True),
        ("BASIC_AUTH", True),
        ("apiKey", True),
        ("clientSecret", True),
        ("KEYBOARD_LAYOUT", False),
        ("TOKENIZERS_PARALLELISM", False),
        ("MONKEY_PATCH", False),
        ("NCCL_DEBUG", False),
        ("OMP_NUM_THREADS", False),
        ("PATH", False),
        ("PWD", False),
        ("AUTHOR", False),
        ("", False),
    ],
)
def test_looks_secret(name: str, secret: bool) -> None:
    assert looks_secret(name) is secret


def test_identical_specs_have_no_changes() -> None:
    for name in ("job_v1.yaml", "rayjob.yaml", "app.env", "snapshot_good.json", "jobset.yaml"):
        assert diff(load(name), load(name)) == []


def test_ignore_globs() -> None:
    good, bad = load("job_v1.yaml"), load("job_v2.yaml")
    changes = diff(good, bad, ignore=["*.env.*", "volumes[*"])
    assert [c.key for c in changes] == [
        "containers[trainer].image",
        "containers[trainer].resources.limits.memory",
    ]
    assert len(diff(good, bad, ignore=["*"])) == 0
    assert len(diff(good, bad, ignore=["nothing-matches"])) == 7


def test_ignore_takes_brackets_literally() -> None:
    """The tool's own keys work as patterns: `[trainer]` is not a character class."""
    good, bad = load("job_v1.yaml"), load("job_v2.yaml")
    everything = diff(good, bad)
    env = [c.key for c in everything if c.key.startswith("containers[trainer].env.")]
    assert env, "the fixture changes env vars of the trainer container"
    kept = diff(good, bad, ignore=["containers[trainer].env.*"])
    assert [c.key for c in kept] == [c.key for c in everything if c.key not in env]
    # `?` is one character; nothing else is special.
    assert diff(good, bad, ignore=["containers[traine?].env.*"]) == kept
    assert diff(good, bad, ignore=["containers[t].env.*"]) == everything
    assert ignore_regex("a[b].c*?") == r"a\[b\]\.c.*."


def test_an_ignore_pattern_that_matches_nothing_is_a_warning() -> None:
    good, bad = load("job_v1.yaml"), load("job_v2.yaml")
    found = compare(
        good,
        bad,
        ignore=["containers[trainr].env.*", "*.env.*", "metadata.labels.*", "*.env.*"],
    )
    assert len(found.warnings) == 1, found.warnings
    (warning,) = found.warnings
    assert "'containers[trainr].env.*' matches no setting" in warning
    assert "job_v1.yaml" in warning and "containers[trainer]" in warning
    # metadata.labels.* matches settings that do not differ: not a mistake, no warning.
    assert compare(good, bad, ignore=["metadata.labels.*"]).warnings == []


def test_container_restriction_keeps_pod_level_settings() -> None:
    def change_both(doc: dict) -> None:
        pod = doc["spec"]["template"]["spec"]
        pod["containers"][0]["image"] = "registry.example.com/ml/serve:3.3.0"
        pod["containers"][1]["image"] = "registry.example.com/ops/exporter:1.0"
        pod["nodeSelector"] = {"pool": "gpu"}

    good, bad = load("deployment.yaml"), edited("deployment.yaml", change_both)
    assert [c.key for c in diff(good, bad)] == [
        "containers[metrics].image",
        "containers[server].image",
        "nodeSelector.pool",
    ]
    assert [c.key for c in diff(good, bad, container="metrics")] == [
        "containers[metrics].image",
        "nodeSelector.pool",
    ]
    with pytest.raises(InputError, match=r"no container named 'nope'.*metrics, server"):
        diff(good, bad, container="nope")


def test_element_on_one_side_is_one_change() -> None:
    def add_group(doc: dict) -> None:
        cluster = doc["spec"]["rayClusterSpec"]
        group = json.loads(json.dumps(cluster["workerGroupSpecs"][0]))
        group["groupName"] = "gpu-workers"
        group["template"]["spec"]["containers"][0]["env"] = [{"name": "HF_TOKEN", "value": "x"}]
        cluster["workerGroupSpecs"].append(group)

    good, bad = load("rayjob.yaml"), edited("rayjob.yaml", add_group)
    changes = diff(good, bad)
    assert [(c.key, c.change) for c in changes] == [("workers[gpu-workers]", "added")]
    assert changes[0].bad["groupName"] == "gpu-workers"
    assert changes[0].secret  # it holds a secret-looking variable
    assert changes[0].to_dict()["bad"] == REDACTED
    assert flatten(apply_changes(good, changes)).keys() == flatten(bad).keys()
    # and the other way round
    back = diff(bad, good)
    assert [(c.key, c.change) for c in back] == [("workers[gpu-workers]", "removed")]


def test_kubeflow_replica_added() -> None:
    def drop_master(doc: dict) -> None:
        del doc["spec"]["pytorchReplicaSpecs"]["Master"]

    good, bad = edited("pytorchjob.yaml", drop_master), load("pytorchjob.yaml")
    changes = diff(good, bad)
    assert [(c.key, c.change) for c in changes] == [("replicas[Master]", "added")]
    applied = apply_changes(good, changes)
    assert {k: s.value for k, s in flatten(applied).items()} == {
        k: s.value for k, s in flatten(bad).items()
    }


def test_replacing_every_container_is_one_change() -> None:
    def rename(doc: dict) -> None:
        doc["spec"]["template"]["spec"]["containers"][0]["name"] = "main"

    good, bad = load("job_v1.yaml"), edited("job_v1.yaml", rename)
    changes = diff(good, bad)
    assert [(c.key, c.change) for c in changes] == [("containers", "modified")]
    assert changes[0].secret  # the containers hold HF_TOKEN
    assert apply_changes(good, changes).document == bad.document


def test_jobset_and_pytorchjob_keys_in_diff() -> None:
    def bump(doc: dict) -> None:
        worker = doc["spec"]["pytorchReplicaSpecs"]["Worker"]
        worker["replicas"] = 7
        worker["template"]["spec"]["containers"][0]["env"][0]["value"] = "INFO"

    changes = diff(load("pytorchjob.yaml"), edited("pytorchjob.yaml", bump))
    assert [c.key for c in changes] == [
        "replicas[Worker].containers[pytorch].env.NCCL_DEBUG",
        "spec.pytorchReplicaSpecs.Worker.replicas",
    ]
    assert changes[0].container == "pytorch"


def test_ray_runtime_env_pip_diff_per_package() -> None:
    changes = diff(load("ray_job.yaml"), load("ray_job_details.json"))
    assert [(c.key, c.change) for c in changes] == [
        ("runtime_env.env_vars.HF_TOKEN", "added"),
        ("runtime_env.pip.numpy", "modified"),
        ("runtime_env.pip.pip_check", "added"),
        ("runtime_env.pip.torch", "modified"),
    ]
    numpy = changes[1]
    assert (numpy.good, numpy.bad, numpy.category) == ("numpy==1.26.4", "numpy==2.0.1", "pip")
    assert changes[0].to_dict()["bad"] == REDACTED


def test_snapshot_diff() -> None:
    changes = diff(load("snapshot_good.json"), load("snapshot_bad.json"))
    assert [c.key for c in changes] == [
        "env.CUDA_VERSION",
        "env.HF_TOKEN",
        "gpu.cuda_version",
        "gpu.driver_version",
        "os.release",
        "packages.numpy",
        "packages.torch",
        "shm.size_bytes",
    ]
    assert next(c for c in changes if c.key == "env.HF_TOKEN").secret


def test_pip_freeze_diff() -> None:
    changes = diff(load("requirements_v1.txt"), load("requirements_v2.txt"))
    assert [(c.key, c.good, c.bad) for c in changes] == [
        ("pip.numpy", "numpy==1.26.4", "numpy==2.0.1"),
        ("pip.triton", None, "triton==3.0.0"),
    ]


@pytest.mark.parametrize(
    ("good", "bad", "reason"),
    [
        ("job_v1.yaml", "deployment.yaml", "different kinds"),
        ("job_v1.yaml", "app.env", "different formats"),
        ("requirements_v1.txt", "snapshot_good.json", "different formats"),
        ("pod.yaml", "job_v1.yaml", "different kinds"),
    ],
)
def test_incomparable_specs_name_both_files(good: str, bad: str, reason: str) -> None:
    with pytest.raises(InputError) as err:
        diff(load(good), load(bad))
    message = str(err.value)
    assert str(FIXTURES / good) in message and str(FIXTURES / bad) in message
    assert reason in message


def test_render_table_groups_by_category() -> None:
    changes = diff(load("job_v1.yaml"), load("job_v2.yaml"))
    table = render_table(changes, "v1.yaml", "v2.yaml", kind="Job")
    lines = table.splitlines()
    assert lines[0] == "7 changes between v1.yaml and v2.yaml (Job)"
    headers = [ln for ln in lines if ln and not ln.startswith(" ") and "(" in ln][1:]
    assert headers == ["image (1)", "env (4)", "resources (1)", "system (1)"]
    assert any("+ containers[trainer].env.NCCL_P2P_LEVEL" in ln for ln in lines)
    assert render_table([], "a", "b") == "no differences between a and b\n"


def test_swapping_every_replica_type_is_one_change() -> None:
    def master_only(doc: dict) -> None:
        del doc["spec"]["pytorchReplicaSpecs"]["Worker"]

    def worker_only(doc: dict) -> None:
        del doc["spec"]["pytorchReplicaSpecs"]["Master"]

    good, bad = edited("pytorchjob.yaml", master_only), edited("pytorchjob.yaml", worker_only)
    changes = diff(good, bad)
    assert [(c.key, c.change) for c in changes] == [("spec.pytorchReplicaSpecs", "modified")]
    assert list(apply_changes(good, changes).document["spec"]["pytorchReplicaSpecs"]) == ["Worker"]
