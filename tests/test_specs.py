"""Spec loading: every format, recognised from content, with noise stripped."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import FIXTURES, ROOT
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterbisect.errors import InputError
from clusterbisect.settings import flatten
from clusterbisect.specs import load_spec, parse_spec
from clusterbisect.specs.kubernetes import pod_templates, resolve


def fixture(name: str) -> str:
    return str(FIXTURES / name)


def all_strings(node: object) -> str:
    return json.dumps(node, sort_keys=True, default=str)


# --- Kubernetes ------------------------------------------------------------------------


def test_kubectl_job_noise_is_stripped() -> None:
    spec = load_spec(fixture("job_v1.yaml"))
    assert (spec.format, spec.kind, spec.api_version) == ("kubernetes", "Job", "batch/v1")
    assert spec.extra == {"name": "llm-train-20261126", "namespace": "training"}
    text = all_strings(spec.document)
    for noise in (
        "6f1c2b9e",  # uid, controller-uid labels and selector
        "managedFields",
        "resourceVersion",
        "creationTimestamp",
        "last-applied-configuration",
        "job-tracking",
        "llm-train-20261126",  # job-name labels, name
        "generation",
        "succeeded",
        "completionTime",
    ):
        assert noise not in text, noise
    assert "status" not in spec.document
    assert "selector" not in spec.document["spec"]
    assert spec.document["spec"]["template"]["metadata"] == {"labels": {"app": "llm-train"}}
    assert spec.document["metadata"] == {"labels": {"app": "llm-train", "team": "ml-platform"}}


def test_kubectl_pod_drops_api_access_volume_node_and_owner() -> None:
    spec = load_spec(fixture("pod.yaml"))
    assert spec.kind == "Pod"
    pod = spec.document["spec"]
    assert "nodeName" not in pod
    assert [v["name"] for v in pod["volumes"]] == ["dshm"]
    mounts = pod["containers"][0]["volumeMounts"]
    assert [m["mountPath"] for m in mounts] == ["/dev/shm"]
    meta = spec.document["metadata"]
    assert meta == {"labels": {"app": "llm-train"}}
    assert spec.extra["generateName"] == "llm-train-20261126-"
    keys = set(flatten(spec))
    assert "containers[trainer].image" in keys
    assert not any("kube-api-access" in k for k in keys)


def test_two_runs_of_the_same_pod_have_no_settings_apart() -> None:
    text = Path(fixture("pod.yaml")).read_text()
    other = (
        text.replace("x7k2p", "p9q4r")
        .replace("kube-api-access-5xq8d", "kube-api-access-zz91a")
        .replace("gke-gpu-pool-a100-3f2b9c1d-k8s1", "gke-gpu-pool-a100-3f2b9c1d-m2n3")
        .replace("91d0e4c7", "11111111")
        .replace("10.44.3.17", "10.44.9.2")
    )
    assert other != text
    a = {k: s.value for k, s in flatten(parse_spec(text, "a.yaml")).items()}
    b = {k: s.value for k, s in flatten(parse_spec(other, "b.yaml")).items()}
    assert a == b


@pytest.mark.parametrize(
    ("name", "kind", "roles", "prefixes"),
    [
        ("job_v1.yaml", "Job", [""], [""]),
        ("pod.yaml", "Pod", [""], [""]),
        ("cronjob.yaml", "CronJob", [""], [""]),
        ("deployment.yaml", "Deployment", [""], [""]),
        (
            "pytorchjob.yaml",
            "PyTorchJob",
            ["Master", "Worker"],
            ["replicas[Master].", "replicas[Worker]."],
        ),
        ("rayjob.yaml", "RayJob", ["head", "cpu-workers"], ["head.", "workers[cpu-workers]."]),
        ("jobset.yaml", "JobSet", ["driver", "workers"], ["jobs[driver].", "jobs[workers]."]),
        ("list.yaml", "Job", [""], [""]),
    ],
)
def test_pod_templates(name: str, kind: str, roles: list[str], prefixes: list[str]) -> None:
    spec = load_spec(fixture(name))
    assert spec.kind == kind
    refs = pod_templates(spec)
    assert [r.role for r in refs] == roles
    assert [r.key_prefix for r in refs] == prefixes
    for ref in refs:
        template = resolve(spec.document, ref.path)
        assert isinstance(template["spec"]["containers"], list)


def test_cronjob_keys() -> None:
    settings = flatten(load_spec(fixture("cronjob.yaml")))
    assert settings["containers[eval].image"].value == "registry.example.com/ml/eval:1.4.0"
    assert settings["spec.schedule"].value == "0 2 * * *"
    assert settings["spec.jobTemplate.spec.backoffLimit"].value == 1
    assert settings["template.labels.app"].category == "metadata"


def test_deployment_named_ports_and_containers() -> None:
    settings = flatten(load_spec(fixture("deployment.yaml")))
    assert settings["containers[server].ports[8080].name"].value == "http"
    assert settings["containers[metrics].ports[9100].protocol"].value == "TCP"
    assert settings["spec.replicas"].value == 2
    assert "metadata.annotations.deployment.kubernetes.io/revision" not in settings


def test_pytorchjob_replica_keys() -> None:
    settings = flatten(load_spec(fixture("pytorchjob.yaml")))
    assert settings["replicas[Worker].containers[pytorch].env.NCCL_DEBUG"].value == "WARN"
    assert settings["replicas[Master].containers[pytorch].env.NCCL_DEBUG"].container == "pytorch"
    assert settings["spec.pytorchReplicaSpecs.Worker.replicas"].value == 3
    assert (
        settings["replicas[Master].template.annotations.sidecar.istio.io/inject"].value == "false"
    )


def test_rayjob_runtime_env_yaml_becomes_settings() -> None:
    spec = load_spec(fixture("rayjob.yaml"))
    settings = flatten(spec)
    assert settings["runtime_env.pip.requests"].value == "requests==2.31.0"
    assert settings["runtime_env.pip.gymnasium"].value == "gymnasium[atari]>=0.29"
    assert settings["runtime_env.env_vars.RAY_DEDUP_LOGS"].env_name == "RAY_DEDUP_LOGS"
    assert settings["head.containers[ray-head].image"].value == "rayproject/ray:2.60.0-py311"
    assert settings["workers[cpu-workers].containers[ray-worker].resources.limits.cpu"].value == "4"
    assert settings["spec.rayClusterSpec.workerGroupSpecs[cpu-workers].replicas"].value == 2
    # The document keeps the string form, so it can be applied to a cluster as is.
    assert isinstance(spec.document["spec"]["runtimeEnvYAML"], str)


def test_rayjob_with_invalid_runtime_env_yaml(tmp_path: Path) -> None:
    doc = yaml.safe_load(Path(fixture("rayjob.yaml")).read_text())
    doc["spec"]["runtimeEnvYAML"] = "pip: [unclosed"
    path = tmp_path / "rayjob.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError, match=r"spec\.runtimeEnvYAML: invalid YAML"):
        load_spec(str(path))


def test_jobset_keys() -> None:
    settings = flatten(load_spec(fixture("jobset.yaml")))
    assert settings["jobs[workers].containers[worker].env.XLA_FLAGS"].value.startswith("--xla")
    assert settings["jobs[driver].restartPolicy"].value == "Never"
    assert settings["spec.replicatedJobs[workers].replicas"].value == 4
    assert settings["spec.replicatedJobs[workers].template.spec.parallelism"].value == 2


def test_list_picks_the_one_workload() -> None:
    spec = load_spec(fixture("list.yaml"))
    assert spec.kind == "Job"
    assert spec.extra["name"] == "smoke"
    assert "template.labels.job-name" not in flatten(spec)


def _workload(kind: str, api: str, spec_body: dict, name: str = "w") -> dict:
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name}, "spec": spec_body}


POD_TEMPLATE = {
    "metadata": {"labels": {"app": "x"}},
    "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]},
}


@pytest.mark.parametrize(
    ("kind", "api", "body", "key"),
    [
        ("StatefulSet", "apps/v1", {"serviceName": "s", "template": POD_TEMPLATE}, ""),
        ("DaemonSet", "apps/v1", {"template": POD_TEMPLATE}, ""),
        ("ReplicaSet", "apps/v1", {"replicas": 1, "template": POD_TEMPLATE}, ""),
        (
            "TFJob",
            "kubeflow.org/v1",
            {"tfReplicaSpecs": {"Chief": {"template": POD_TEMPLATE}}},
            "replicas[Chief].",
        ),
        (
            "MPIJob",
            "kubeflow.org/v2beta1",
            {
                "mpiReplicaSpecs": {
                    "Worker": {"template": POD_TEMPLATE},
                    "Launcher": {"template": POD_TEMPLATE},
                }
            },
            "replicas[Launcher].",
        ),
        (
            "RayCluster",
            "ray.io/v1",
            {"headGroupSpec": {"template": POD_TEMPLATE}, "workerGroupSpecs": []},
            "head.",
        ),
        ("Widget", "example.com/v1", {"runner": {"template": POD_TEMPLATE}}, ""),
    ],
)
def test_more_kinds_as_json(tmp_path: Path, kind: str, api: str, body: dict, key: str) -> None:
    path = tmp_path / "spec.json"  # JSON, with a name that says nothing
    path.write_text(json.dumps(_workload(kind, api, body)))
    spec = load_spec(str(path))
    assert spec.kind == kind
    assert pod_templates(spec)[0].key_prefix == key  # the primary template first
    assert flatten(spec)[f"{key}containers[main].image"].value == "busybox:1.36"


def test_multi_document_file_with_one_workload(tmp_path: Path) -> None:
    path = tmp_path / "all.yaml"
    path.write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n---\n"
        + Path(fixture("cronjob.yaml")).read_text()
        + "---\n"
    )
    assert load_spec(str(path)).kind == "CronJob"


def test_several_workloads_need_a_selector(tmp_path: Path) -> None:
    one = _workload("Job", "batch/v1", {"template": POD_TEMPLATE}, name="a")
    two = _workload("Deployment", "apps/v1", {"template": POD_TEMPLATE}, name="b")
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump_all([one, two]))
    with pytest.raises(InputError, match=r"2 workload objects .*FILE#NAME") as err:
        load_spec(str(path))
    assert str(path) in str(err.value)
    assert load_spec(f"{path}#b").kind == "Deployment"
    assert load_spec(f"{path}#Job/a").kind == "Job"
    with pytest.raises(InputError, match="no object matches"):
        load_spec(f"{path}#c")


def test_format_is_recognised_from_content_not_name(tmp_path: Path) -> None:
    for source, fmt in [
        ("job_v1.yaml", "kubernetes"),
        ("ray_job.yaml", "ray_job"),
        ("ray_job_details.json", "ray_job"),
        ("env_dump.txt", "env"),
        ("app.env", "env"),
        ("requirements_v1.txt", "pip"),
        ("snapshot_good.json", "snapshot"),
    ]:
        target = tmp_path / f"misleading-{source}.yaml.txt.json"
        shutil.copy(fixture(source), target)
        assert load_spec(str(target)).format == fmt, source


# --- Ray, env, pip, snapshot -------------------------------------------------------------


def test_ray_job_details_noise_is_stripped() -> None:
    spec = load_spec(fixture("ray_job_details.json"))
    assert spec.kind == "RayJobSpec"
    for noise in ("job_id", "submission_id", "status", "start_time", "driver_info", "message"):
        assert noise not in spec.document
    settings = flatten(spec)
    assert settings["runtime_env.pip.torch"].value == "torch==2.5.0"
    assert settings["entrypoint"].category == "command"


def test_env_dump_and_dotenv() -> None:
    dump = flatten(load_spec(fixture("env_dump.txt")))
    assert "env.HOSTNAME" not in dump and "env._" not in dump and "env.SHLVL" not in dump
    assert dump["env.TRAIN_CONFIG"].value == '{\n  "lr": 0.0003,\n  "warmup": 100\n}'
    dotenv = flatten(load_spec(fixture("app.env")))
    assert dotenv["env.NCCL_DEBUG"].value == "WARN"  # export prefix
    assert dotenv["env.DATABASE_PASSWORD"].value == "s3cr3t value"  # quotes
    assert dotenv["env.GREETING"].value == "hello # not a comment"
    assert dotenv["env.MULTI"].value == "line one\nline two"
    assert dotenv["env.OMP_NUM_THREADS"].env_name == "OMP_NUM_THREADS"


def test_pip_freeze_keys_by_canonical_name() -> None:
    settings = flatten(load_spec(fixture("requirements_v1.txt")))
    assert settings["pip.pillow"].value == "pillow==10.4.0"
    assert settings["pip.typing-extensions"].value == "typing-extensions==4.12.2"
    assert all(s.category == "pip" for s in settings.values())


def test_pip_with_options_and_urls(tmp_path: Path) -> None:
    path = tmp_path / "reqs"
    path.write_text(
        "--index-url https://pypi.org/simple\n"
        "torch @ https://download.pytorch.org/whl/torch-2.4.1.whl\n"
        "-e git+https://github.com/org/lib.git@main#egg=my_lib\n"
        "requests>=2.31 ; python_version >= '3.9'  # http\n"
    )
    settings = flatten(load_spec(str(path)))
    assert set(settings) == {
        "pip.--index-url",
        "pip.torch",
        "pip.my-lib",
        'pip.requests; python_version >= "3.9"',
    }


def test_pip_reads_files_as_pip_does(tmp_path: Path) -> None:
    path = tmp_path / "requirements.txt"
    path.write_text(
        "--index-url https://user:s3cret@pypi.corp.example/simple\n"
        "--extra-index-url https://tok@extra.example/simple/\n"
        "numpy==1.26.4 \\\n"
        "    --hash=sha256:aaaa \\\n"
        "    --hash=sha256:bbbb\n"
        'torch==2.4.1; python_version < "3.12"\n'
        'torch==2.5.0; python_version >= "3.12"\n'
        "https://files.example/other_pkg-2.0.tar.gz\n"
        "./dist/thing-0.3-py3-none-any.whl\n"
        "-e ./editable_dir\n"
    )
    pins = load_spec(str(path)).document["pip"]
    assert pins == {
        "--index-url": "--index-url https://user:s3cret@pypi.corp.example/simple",
        "--extra-index-url extra.example": "--extra-index-url https://tok@extra.example/simple/",
        "numpy": "numpy==1.26.4",
        'torch; python_version < "3.12"': 'torch==2.4.1; python_version < "3.12"',
        'torch; python_version >= "3.12"': 'torch==2.5.0; python_version >= "3.12"',
        "other-pkg": "https://files.example/other_pkg-2.0.tar.gz",
        "thing": "./dist/thing-0.3-py3-none-any.whl",
        "-e ./editable_dir": "-e ./editable_dir",
    }
    # No key holds a credential: keys are shown even in error messages.
    assert not any("s3cret" in key or "tok@" in key for key in pins)


def test_pip_package_listed_twice_names_both_lines(tmp_path: Path) -> None:
    path = tmp_path / "requirements.txt"
    path.write_text("numpy==1.0\nscipy==1.0\nNumPy==2.0\n")
    with pytest.raises(InputError, match=r"line 3: 'numpy' is listed twice \(first at line 1\)"):
        load_spec(str(path))


def test_dotenv_is_read_as_python_dotenv_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "app.env"
    path.write_text(
        "# settings\n"
        "export A=1\n"
        "B = two words # a comment\n"
        'C="quoted # not a comment"\n'
        "D='single ${HOME}'\n"
        'E="multi\nline"\n'
        'F="escaped\\nnewline"\n'
        "G=${HOME}\n"
    )
    env = load_spec(str(path)).document["env"]
    assert env == {
        "A": "1",
        "B": "two words",
        "C": "quoted # not a comment",
        "D": "single ${HOME}",
        "E": "multi\nline",
        "F": "escaped\nnewline",
        "G": "${HOME}",  # never expanded from this machine's environment
    }


def test_env_dump_is_taken_literally(tmp_path: Path) -> None:
    path = tmp_path / "env_dump.txt"
    path.write_text("A=x #not-a-comment\nB=line one\nline two\nC=a=b\n")
    env = load_spec(str(path)).document["env"]
    assert env == {"A": "x #not-a-comment", "B": "line one\nline two", "C": "a=b"}


@pytest.mark.parametrize("name", ["dump.txt", "app.env"])
def test_env_name_assigned_twice_names_both_lines(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("A=1\nB=2\nA=3\n")
    with pytest.raises(InputError, match=r"line 3: A is assigned twice \(first at line 1\)"):
        load_spec(str(path))


@pytest.mark.parametrize("name", ["dump.txt", "app.env"])
def test_duplicate_after_blank_lines_names_its_own_line(tmp_path: Path, name: str) -> None:
    # python-dotenv starts a binding at the blank lines before it: the line named is
    # the name's own, in the plain reading and in python-dotenv's.
    for text, line in (("A=1\n\n\nA=2\n", 4), ('A="1"\n\n \n\nA=2\n', 5)):
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(InputError, match=rf"line {line}: A is assigned twice \(first at"):
            load_spec(str(path))


# Lines as a generated .env has them, and lines python-dotenv reads in its own way.
DOTENV_LINE = st.one_of(
    st.from_regex(r"[A-Z_][A-Z0-9_]{0,6}=[a-z0-9#=$:/.,{}-]{0,8}", fullmatch=True),
    st.sampled_from(["", " ", "# c", "A = 1", "B='x y'", 'C="q\\nr"', "export D=1", "E=1 # c"]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(DOTENV_LINE, max_size=12), st.booleans())
def test_plain_dotenv_is_read_as_python_dotenv_reads_it(lines: list[str], newline: bool) -> None:
    from dotenv import dotenv_values

    from clusterbisect.specs.envfile import parse_env_text

    text = "\n".join(lines) + ("\n" if newline else "")
    try:
        ours = parse_env_text(text, "app.env")
    except InputError as err:
        assert "assigned twice" in str(err)
        return
    theirs = dotenv_values(stream=io.StringIO(text), interpolate=False)
    assert ours == {k: v for k, v in theirs.items() if v is not None}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "kind: Job\nmetadata:\n  name: x\n  name: y\n",
            r"line 4.*duplicate key 'name' \(first at line 3\)",
        ),
        ('{"kind": "Job",\n "kind": "Pod"}', r"line 2.*duplicate key 'kind' \(first at line 1\)"),
        ('{"kind": "Job", "x": NaN}', "NaN is not a JSON number"),
        ("[" * 1000 + "]" * 1000, "nested more than 100 levels deep"),
        ("a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 300)), "nest"),
    ],
)
def test_malformed_documents_are_one_line_errors(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(InputError, match=message):
        load_spec(str(path))


def test_snapshot_noise_and_keys() -> None:
    spec = load_spec(fixture("snapshot_good.json"))
    settings = flatten(spec)
    assert "env.HOSTNAME" not in settings
    assert not any(k.startswith(("captured_at", "hostname")) for k in settings)
    assert settings["python.version"].value == "3.11.9"
    assert settings["packages.typing-extensions"].category == "pip"
    assert settings["gpu.driver_version"].category == "system"
    assert settings["shm.size_bytes"].value == 17179869184
    assert spec.extra["hostname"] == "llm-train-20261126-x7k2p"


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "file is empty"),
        (b"   \n\n", "file is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
        (bytes(range(128, 256)), "binary"),
        (b"kind: Job\nspec: [unclosed\n", "invalid YAML: line 3, column 1"),
        (b'{"kind": "Job", ', "invalid JSON at line"),
        (b"apiVersion: v1\nkind: Service\nmetadata: {name: s}\n", "kind 'Service' has no pod"),
        (b"apiVersion: x/v1\nkind: Gadget\nspec: {size: 3}\n", "unknown kind 'Gadget'"),
        (b"apiVersion: batch/v1\nkind: Job\nspec: {backoffLimit: 0}\n", "has no pod template"),
        (b"apiVersion: v1\nmetadata: {name: x}\n", "missing field 'kind'"),
        (b"just some words here\n", "unrecognised content"),
        (b"foo: 1\nbar: 2\n", "unknown format"),
        (b"- a\n- b\n", "unrecognised content"),
        (b"- kind: Job\n- 3\n", "unrecognised content"),
        (b'entrypoint: ["not", "a", "string"]\n', "entrypoint: expected a command string"),
        (b"entrypoint: x\nruntime_env:\n  pip: {packages: 3}\n", "runtime_env.pip"),
    ],
)
def test_bad_input_names_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "input.yaml"
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        load_spec(str(path))
    text = str(err.value)
    assert text.startswith(f"{path}: "), text
    assert message in text
    assert "\n" not in text


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.yaml: file not found"):
        load_spec(str(tmp_path / "nope.yaml"))
    with pytest.raises(InputError, match="is a directory"):
        load_spec(str(tmp_path))


def test_yaml_aliases_load_unshared(tmp_path: Path) -> None:
    path = tmp_path / "anchors.yaml"
    path.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n"
        "  - name: a\n    image: i\n    resources: &res {limits: {memory: 1Gi}}\n"
        "  - name: b\n    image: i\n    resources: *res\n"
    )
    spec = load_spec(str(path))
    a, b = spec.document["spec"]["containers"]
    assert a["resources"] == b["resources"]
    assert a["resources"] is not b["resources"]


def test_alias_bomb_is_refused(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match="too large"):
        load_spec(str(path))


def test_load_specs_in_parallel_matches_sequential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import clusterbisect.specs as specs

    monkeypatch.setattr(specs, "PARALLEL_BYTES", 0)  # fork even for small files
    sources = [fixture("job_v1.yaml"), fixture("rayjob.yaml")]
    parallel = specs.load_specs(sources)
    assert [s.document for s in parallel] == [load_spec(s).document for s in sources]
    assert [s.source for s in parallel] == sources
    broken = tmp_path / "broken.yaml"
    broken.write_bytes(b"\x00\x01binary")
    with pytest.raises(InputError, match=r"broken\.yaml: binary"):
        specs.load_specs([fixture("job_v1.yaml"), str(broken)])  # error from the child
    with pytest.raises(InputError, match=r"broken\.yaml: binary"):
        specs.load_specs([str(broken), str(tmp_path / "missing.yaml")])  # first one first


def test_snapshot_probe_output_loads_and_diffs(tmp_path: Path) -> None:
    """probes/snapshot.py run for real twice; the diff shows what differs."""
    import os
    import subprocess
    import sys

    from clusterbisect.diff import diff

    probe = ROOT / "probes" / "snapshot.py"
    outputs = []
    for value in ("1", "2"):
        out = tmp_path / f"snap{value}.json"
        env = {**os.environ, "CB_SNAPSHOT_TEST": value}
        subprocess.run([sys.executable, str(probe), "--output", str(out)], env=env, check=True)
        outputs.append(out)
    raw = json.loads(outputs[0].read_text())
    assert raw["clusterbisect_snapshot"] == 1
    assert raw["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert raw["cpu"]["count"] == os.cpu_count()
    assert "pyyaml" in {k.lower() for k in raw["packages"]}
    assert raw["shm"]["present"] is Path("/dev/shm").exists()
    assert isinstance(raw["ulimits"]["nofile"], list)
    assert "present" in raw["gpu"]
    good, bad = load_spec(str(outputs[0])), load_spec(str(outputs[1]))
    assert good.format == "snapshot"
    assert [(c.key, c.good, c.bad) for c in diff(good, bad)] == [("env.CB_SNAPSHOT_TEST", "1", "2")]
