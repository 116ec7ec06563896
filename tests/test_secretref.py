"""A probe Job's secrets moved into its Secret: the Job holds none and runs as written."""

from __future__ import annotations

import copy
import re
from typing import Any

import kubernetes_validate
import yaml
from conftest import EXAMPLES

from clusterbisect.redact import REDACTED, Redactor
from clusterbisect.runners.base import Probe, RunnerContext
from clusterbisect.runners.kubernetes import KubernetesRunner, KubernetesSettings
from clusterbisect.runners.kubernetes.secretref import externalize
from clusterbisect.specs import load_spec

TOKEN = "tok-4f9a8b7c6d5e"
PASSWORD = "pw-81b2c3d4"
UNCHANGED = "unchanged-77e6f5a4"
ANNOTATION = "vault-s3cr3t-9e8d"


def job(**container: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "cb-s1-p001-abcd1234", "namespace": "ns1", "labels": {"a": "b"}},
        "spec": {
            "template": {
                "metadata": {"annotations": {"vault.example.com/password": ANNOTATION}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "trainer", "image": "busybox", **container}],
                },
            }
        },
    }


def expand(word: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion of command and args (``$$`` escapes a ``$``)."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), word)


def resolved(container: dict[str, Any], secret: dict[str, Any] | None) -> dict[str, Any]:
    """What the container gets: its env with secretKeyRefs read, argv expanded."""
    data = (secret or {}).get("stringData", {})
    ours = (secret or {}).get("metadata", {}).get("name")
    env = {}
    for entry in container.get("env") or []:
        ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
        if ref is None:
            env[entry["name"]] = entry["value"]
        else:  # the probe's Secret, or one of the cluster's
            env[entry["name"]] = data[ref["key"]] if ref["name"] == ours else "<elsewhere>"
    argv = [expand(w, env) for w in [*container.get("command", []), *container.get("args", [])]]
    return {"env": env, "argv": argv}


def test_secret_env_values_and_argv_words_move_to_the_secret_and_come_back_the_same() -> None:
    container = {
        "command": ["python", "train.py", "--password"],
        "args": [PASSWORD, f"--token={TOKEN}", "--key=$(API_KEY)", "--lr", "0.1"],
        "env": [
            {"name": "HF_TOKEN", "value": TOKEN},
            {"name": "DATABASE_URL", "value": f"postgres://app:{PASSWORD}@db/x"},
            {"name": "COPY_OF_IT", "value": UNCHANGED},
            {"name": "LR", "value": "0.1"},
            {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "k", "key": "v"}}},
        ],
    }
    original = job(**container)
    redactor = Redactor([("AWS_SECRET_ACCESS_KEY", UNCHANGED)])  # known from the other spec
    moved = externalize(original, redactor)
    assert original == job(**container)  # the input is not changed
    assert moved.secret is not None
    text = yaml.safe_dump(moved.job["spec"]["template"]["spec"])
    for value in (TOKEN, PASSWORD, UNCHANGED):
        assert value not in text
    trainer = moved.job["spec"]["template"]["spec"]["containers"][0]
    assert trainer["command"] == ["python", "train.py", "--password"]
    assert trainer["args"] == [
        "$(CLUSTERBISECT_SECRET_0)",
        "$(CLUSTERBISECT_SECRET_1)",
        "--key=$(API_KEY)",  # a reference to a variable is not a value
        "--lr",
        "0.1",
    ]
    # What the workload gets is exactly what it had (plus the variables it refers to).
    before = resolved(original["spec"]["template"]["spec"]["containers"][0], None)
    after = resolved(trainer, moved.secret)
    assert after["argv"] == before["argv"]
    assert before["argv"][3:5] == [PASSWORD, f"--token={TOKEN}"]
    assert {k: v for k, v in after["env"].items() if k in before["env"]} == before["env"]
    env = after["env"]
    assert env["HF_TOKEN"] == TOKEN and env["COPY_OF_IT"] == UNCHANGED and env["LR"] == "0.1"
    assert env["DATABASE_URL"] == f"postgres://app:{PASSWORD}@db/x"
    assert next(e for e in trainer["env"] if e["name"] == "LR") == {"name": "LR", "value": "0.1"}
    # Both are valid objects, and the Secret is named and labelled as its Job.
    for manifest in (moved.job, moved.secret):
        kubernetes_validate.validate(manifest, "1.33.0", strict=True)
    assert moved.secret["metadata"] == {
        "name": "cb-s1-p001-abcd1234",
        "labels": {"a": "b"},
        "namespace": "ns1",
    }


def test_what_no_manifest_can_refer_to_is_named() -> None:
    """An annotation's value has no reference form: it stays, and is named."""
    moved = externalize(job(), Redactor([("vault.example.com/password", ANNOTATION)]))
    assert moved.secret is None
    assert moved.unreferenced == ["spec.template.metadata.annotations.vault.example.com/password"]


def test_the_runner_shows_a_runnable_job_and_keeps_the_rest_private(tmp_path: Any) -> None:
    spec = load_spec(str(EXAMPLES / "training-upgrade" / "good.yaml"))
    spec = copy.deepcopy(spec)
    template = spec.document["spec"]["template"]
    template["spec"]["containers"][0]["env"].append({"name": "HF_TOKEN", "value": TOKEN})
    probe = Probe("p001", "s1", spec, [], tmp_path / "p001.log")
    runner = KubernetesRunner(
        RunnerContext(session_id="s1", good=spec, dry_run="client", redactor=Redactor()),
        KubernetesSettings(namespace="ns1"),
    )
    shown, private = runner.render(probe), runner.private(probe)
    assert private is not None and private.usage == (
        "kubectl apply -f {private} && kubectl create -f {rendered}"
    )
    assert TOKEN not in yaml.safe_dump(shown) and REDACTED not in yaml.safe_dump(shown)
    assert yaml.safe_load(private.text)["stringData"] == {"trainer.env.HF_TOKEN": TOKEN}
    # With a secret annotation, the shown Job hides it and the private file is the
    # complete set to apply instead.
    template.setdefault("metadata", {}).setdefault("annotations", {})["db/password"] = ANNOTATION
    runner.context.redactor.add([ANNOTATION])
    shown, private = runner.render(probe), runner.private(probe)
    assert ANNOTATION not in yaml.safe_dump(shown)
    assert private is not None and private.usage == "kubectl apply -f {private}"
    kinds = [m["kind"] for m in yaml.safe_load_all(private.text)]
    assert kinds == ["Secret", "Job"] and ANNOTATION in private.text
