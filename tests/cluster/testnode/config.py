"""The test node's configuration: the nodes it registers and the images it knows."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# The PATH of an image that sets none (Docker's default).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ConfigError(Exception):
    """The configuration file is wrong: the message names the field."""


@dataclass
class NodeSpec:
    """One Node to register: its name, labels, taints, capacity and kubelet port."""

    name: str
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)
    capacity: dict[str, str] = field(default_factory=dict)
    port: int = 0  # the kubelet API port (daemonEndpoints); 0 = any free port


@dataclass
class ImageSpec:
    """What the node knows of an image: a stand-in for its config and content.

    ``match`` is a glob on the image reference. ``entrypoint``/``cmd`` and ``env``
    play the image config; ``mounts`` maps a path in the container to a host directory
    (the image's content, read-only); ``commands`` puts executables on the PATH under
    other names (``python`` -> ``/usr/bin/python3``, as python images have).
    """

    match: str
    user: int | None = None
    workdir: str | None = None
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    mounts: dict[str, str] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)

    def matches(self, image: str) -> bool:
        return fnmatch.fnmatchcase(image, self.match)


@dataclass
class Config:
    """Everything the test node process needs."""

    api_server: str
    ca_file: Path
    pki_dir: Path
    state_dir: Path
    nodes: list[NodeSpec]
    images: list[ImageSpec] = field(default_factory=list)
    pull_fails: re.Pattern[str] | None = None  # images matching it never pull
    crashloop_backoff_s: float = 10.0
    image_backoff_s: float = 10.0
    lease_duration_s: int = 40
    cgroup_name: str = "clusterbisect-testnode"
    shm_size: str = "64m"

    def image(self, reference: str) -> ImageSpec:
        """The first image entry that matches ``reference`` (an empty image if none)."""
        for spec in self.images:
            if spec.matches(reference):
                return spec
        return ImageSpec(match="*")


def _str_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
    return {str(k): str(v) for k, v in value.items()}


def _str_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
    return [str(v) for v in value]


def load(path: Path, overrides: dict[str, Any]) -> Config:
    """Read the YAML file at ``path``; ``overrides`` (api_server, ca_file, ...) win."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{path}: {err}") from None
    raw.update({k: v for k, v in overrides.items() if v is not None})
    for key in ("api_server", "pki_dir", "state_dir"):
        if not raw.get(key):
            raise ConfigError(f"{path}: {key} is required")
    nodes = []
    for i, item in enumerate(raw.get("nodes") or []):
        where = f"{path}: nodes[{i}]"
        if not isinstance(item, dict) or not item.get("name"):
            raise ConfigError(f"{where}: expected a mapping with a name")
        nodes.append(
            NodeSpec(
                name=str(item["name"]),
                labels=_str_map(item.get("labels"), f"{where}.labels"),
                taints=[_str_map(t, f"{where}.taints") for t in item.get("taints") or []],
                capacity=_str_map(item.get("capacity"), f"{where}.capacity"),
                port=int(item.get("port") or 0),
            )
        )
    if not nodes:
        raise ConfigError(f"{path}: nodes: at least one node is required")
    images = []
    for i, item in enumerate(raw.get("images") or []):
        where = f"{path}: images[{i}]"
        if not isinstance(item, dict) or not item.get("match"):
            raise ConfigError(f"{where}: expected a mapping with a match glob")
        base = path.parent
        images.append(
            ImageSpec(
                match=str(item["match"]),
                user=None if item.get("user") is None else int(item["user"]),
                workdir=item.get("workdir"),
                entrypoint=_str_list(item.get("entrypoint"), f"{where}.entrypoint"),
                cmd=_str_list(item.get("cmd"), f"{where}.cmd"),
                env=_str_map(item.get("env"), f"{where}.env"),
                mounts={
                    k: str((base / v).resolve())
                    for k, v in _str_map(item.get("mounts"), f"{where}.mounts").items()
                },
                commands=_str_map(item.get("commands"), f"{where}.commands"),
            )
        )
    pull_fails = raw.get("pull_fails")
    try:
        pattern = re.compile(pull_fails) if pull_fails else None
    except re.error as err:
        raise ConfigError(f"{path}: pull_fails: not a regular expression: {err}") from None
    pki_dir = Path(raw["pki_dir"])
    return Config(
        api_server=str(raw["api_server"]),
        ca_file=pki_dir / "ca.crt",
        pki_dir=pki_dir,
        state_dir=Path(raw["state_dir"]),
        nodes=nodes,
        images=images,
        pull_fails=pattern,
        crashloop_backoff_s=float(raw.get("crashloop_backoff_s", 10.0)),
        image_backoff_s=float(raw.get("image_backoff_s", 10.0)),
        lease_duration_s=int(raw.get("lease_duration_s", 40)),
        cgroup_name=str(raw.get("cgroup_name", "clusterbisect-testnode")),
        shm_size=str(raw.get("shm_size", "64m")),
    )
