"""Canary secrets for the redaction suite (test_canary.py, test_canary_live.py).

Every place a secret can hide in a job gets its own canary value, all marked with
:data:`MARK`, so one search for the mark finds any of them: env values that change and
that do not, credentials inside a URL, container arguments (``--token=``,
``--password VALUE``), a pip ``--index-url``, a Ray runtime_env pip URL, a pod
annotation, and the workload's own argv. The workloads print every value they get
(as a careless job does) and check, by hash, that they got the real ones: a probe
that receives a hidden value exits :data:`NOT_DELIVERED`, which the bisection reads as
unresolved, so a found culprit also proves the delivery.

:func:`assert_no_canary` checks what people and models read; :func:`assert_state_dir`
checks every file of a state directory: a canary may only be in a file of mode 0600
that is one of the private files (inputs, raw probe logs, a probe's env file, Secret
or submission), in a directory of mode 0700.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat
import sys
from pathlib import Path
from typing import Any

import yaml

MARK = "cnry"
NOT_DELIVERED = 3


def canary(tag: str) -> str:
    return f"{MARK}{tag}7Qz"


GOOD_TOKEN = canary("GoodToken")
BAD_TOKEN = canary("RevokedToken")  # the culprit: a revoked token
AWS_KEY = canary("AwsUnchanged")
DB_PASSWORD = canary("DbPass")
PROXY_PASSWORD = canary("ProxyPass")
ARG_TOKEN = canary("ArgToken")
ARG_PASSWORD = canary("ArgPassword")
INDEX_TOKEN = canary("IndexToken")
RAY_PIP_TOKEN = canary("RayPipToken")
ANNOTATION = canary("Annotation")
CANARIES = (
    GOOD_TOKEN,
    BAD_TOKEN,
    AWS_KEY,
    DB_PASSWORD,
    PROXY_PASSWORD,
    ARG_TOKEN,
    ARG_PASSWORD,
    INDEX_TOKEN,
    RAY_PIP_TOKEN,
    ANNOTATION,
)

# Files that may hold a real value: their path inside the state dir (all mode 0600).
PRIVATE = re.compile(r"^(inputs/.*|logs/p\d+\.log|.*/p\d+\.(env|secret\.yaml|submission\.json))$")


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def env_values(token: str, db_host: str) -> dict[str, str]:
    """The variables of one side: the token changes, the rest holds still (but for the
    database host, so a changed setting keeps an unchanged credential)."""
    return {
        "HF_TOKEN": token,
        "AWS_SECRET_ACCESS_KEY": AWS_KEY,
        "DATABASE_URL": f"postgres://app:{DB_PASSWORD}@{db_host}:5432/train",
        "HTTPS_PROXY": f"http://proxy-user:{PROXY_PASSWORD}@proxy.corp:3128",
        "LR": "0.1" if db_host == "db1" else "0.2",
    }


WORKLOAD_ARGS = [f"--token={ARG_TOKEN}", "--password", ARG_PASSWORD]

# The workload: prints all it gets, checks it got the real values (by hash, so the
# script itself holds no canary), fails like a revoked token on the bad one.
WORKLOAD = """
import hashlib, os, sys
from urllib.parse import urlsplit
def h(v): return hashlib.sha256((v or "").encode()).hexdigest()
for name in sorted(os.environ):
    if name in WANTED or name == "VAULT_PASSWORD":
        print(name, "=", os.environ[name])
print("argv", sys.argv)
token = h(os.environ.get("HF_TOKEN"))
ok = all(h(os.environ.get(k)) == v for k, v in WANTED.items()) and token in TOKENS
ok = ok and [h(a) for a in sys.argv[-3:]] == ARGV
ok = ok and h(urlsplit(os.environ.get("DATABASE_URL", "")).password) == DB_PASSWORD
if "VAULT" in CHECK:
    ok = ok and h(os.environ.get("VAULT_PASSWORD")) == CHECK["VAULT"]
if not ok:
    print("the probe did not receive the real values"); sys.exit(NOT_DELIVERED)
print("received every real value")
if token == TOKENS[1]:
    print("401 Unauthorized: token", os.environ["HF_TOKEN"], "was revoked"); sys.exit(1)
print("training finished")
"""


def workload_source(vault: bool = False) -> str:
    """The workload with what it expects, as hashes."""
    wanted = {k: sha(v) for k, v in env_values("", "db1").items() if k not in ("HF_TOKEN", "LR")}
    wanted.pop("DATABASE_URL")  # its host changes: its password is checked on its own
    check = {"VAULT": sha(ANNOTATION)} if vault else {}
    argv = [sha(word) for word in WORKLOAD_ARGS]
    return (
        f"WANTED = {json.dumps(wanted)}\n"
        f"DB_PASSWORD = {json.dumps(sha(DB_PASSWORD))}\n"
        f"TOKENS = {json.dumps([sha(GOOD_TOKEN), sha(BAD_TOKEN)])}\n"
        f"ARGV = {json.dumps(argv)}\n"
        f"CHECK = {json.dumps(check)}\n"
        f"NOT_DELIVERED = {NOT_DELIVERED}\n" + WORKLOAD
    )


def write_env_pair(folder: Path) -> list[str]:
    """good.env/bad.env and work.py; the command to run (its argv holds two canaries)."""
    for name, token, host in (("good.env", GOOD_TOKEN, "db1"), ("bad.env", BAD_TOKEN, "db2")):
        lines = [f"{k}={v}" for k, v in env_values(token, host).items()]
        (folder / name).write_text("\n".join(lines) + "\n")
    (folder / "work.py").write_text(workload_source())
    return [sys.executable, str(folder / "work.py"), *WORKLOAD_ARGS]


def k8s_job(token: str, host: str, annotation: bool = True) -> dict[str, Any]:
    """A Job whose container holds every kind of secret, and runs the workload."""
    env = [{"name": k, "value": v} for k, v in env_values(token, host).items()]
    template: dict[str, Any] = {
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "trainer",
                    "image": "python:3.12",
                    "command": ["python", "-c", workload_source(vault=annotation)],
                    "args": WORKLOAD_ARGS,
                    "env": env,
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                }
            ],
        }
    }
    if annotation:
        template["metadata"] = {"annotations": {"vault.example.com/password": ANNOTATION}}
        env.append(
            {
                "name": "VAULT_PASSWORD",
                "valueFrom": {
                    "fieldRef": {"fieldPath": "metadata.annotations['vault.example.com/password']"}
                },
            }
        )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "train", "namespace": "clusterbisect"},
        "spec": {"backoffLimit": 0, "template": template},
    }


def write_k8s_pair(folder: Path, annotation: bool = True) -> tuple[Path, Path]:
    paths = []
    for name, token, host in (("good", GOOD_TOKEN, "db1"), ("bad", BAD_TOKEN, "db2")):
        path = folder / f"{name}-job.yaml"
        path.write_text(yaml.safe_dump(k8s_job(token, host, annotation), sort_keys=False))
        paths.append(path)
    return paths[0], paths[1]


def write_pip_pair(folder: Path) -> tuple[Path, Path]:
    """pip freezes whose index (with its token) moved to another host."""
    for name, host, numpy in (("good", "pypi", "1.26.4"), ("bad", "pypi-mirror", "2.0.1")):
        index = f"--index-url https://ci-user:{INDEX_TOKEN}@{host}.corp.example/simple\n"
        extra = f"--extra-index-url https://{INDEX_TOKEN}@wheels.corp.example/simple\n"
        (folder / f"{name}.txt").write_text(index + extra + f"numpy=={numpy}\nsix==1.16.0\n")
    return folder / "good.txt", folder / "bad.txt"


def ray_job(token: str, host: str, pip: bool) -> dict[str, Any]:
    runtime_env: dict[str, Any] = {"env_vars": env_values(token, host)}
    if pip:
        runtime_env["pip"] = [f"git+https://{RAY_PIP_TOKEN}@github.com/org/trainer-utils.git"]
    return {"entrypoint": "python work.py", "runtime_env": runtime_env}


def write_ray_pair(folder: Path, pip: bool = True) -> tuple[Path, Path]:
    paths = []
    for name, token, host in (("good", GOOD_TOKEN, "db1"), ("bad", BAD_TOKEN, "db2")):
        path = folder / f"{name}-ray.yaml"
        path.write_text(yaml.safe_dump(ray_job(token, host, pip), sort_keys=False))
        paths.append(path)
    if not (folder / "work.py").exists():
        (folder / "work.py").write_text(workload_source())
    return paths[0], paths[1]


# --- the checks ---------------------------------------------------------------------------


def assert_no_canary(*texts: str) -> None:
    """No canary in anything shown (stdout, stderr, a reply, a rendered file)."""
    for text in texts:
        at = text.find(MARK)
        assert at < 0, f"a canary leaked: ...{text[max(0, at - 200) : at + 60]}..."


def assert_state_dir(state: Path) -> list[str]:
    """The state dir is 0700 and a canary is only in its private 0600 files; those
    files (relative paths) are returned."""
    assert stat.S_IMODE(state.stat().st_mode) == 0o700, oct(state.stat().st_mode)
    private = []
    for path in sorted(state.rglob("*")):
        if not path.is_file():
            continue
        relative = str(path.relative_to(state))
        if MARK.encode() not in path.read_bytes():
            continue
        mode = stat.S_IMODE(path.stat().st_mode)
        assert PRIVATE.match(relative), f"a canary is in {relative}"
        assert mode == 0o600, f"{relative} holds a secret with mode {oct(mode)}"
        private.append(relative)
    return private
