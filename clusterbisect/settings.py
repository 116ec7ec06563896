"""Flatten a spec into keyed settings, and apply changes back onto a spec.

INTERFACE (implementation in progress, see issue 2). Keys are stable and readable:
``containers[trainer].env.NCCL_DEBUG``, ``containers[trainer].image``,
``runtime_env.pip.numpy``, ``env.OMP_NUM_THREADS``. Lists of named things are matched
by their key field, never by position.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clusterbisect.specs.model import Spec

# A path into Spec.document: a str is a mapping key; a ("name", "trainer") tuple is
# the element of a list whose key field ("name") equals "trainer".
PathSegment = str | tuple[str, Any]

# Setting categories, used to group the diff table and to decide what a backend can
# apply: env, image, pip, resources, scheduling, command, metadata, runtime, system, other.
ENV = "env"
IMAGE = "image"
PIP = "pip"
RESOURCES = "resources"
SCHEDULING = "scheduling"
COMMAND = "command"
METADATA = "metadata"
RUNTIME = "runtime"
SYSTEM = "system"
OTHER = "other"


@dataclass(frozen=True)
class Setting:
    """One leaf of a spec."""

    key: str
    path: tuple[PathSegment, ...]
    value: Any
    category: str
    container: str | None = None  # the container this setting belongs to, if any
    env_name: str | None = None  # for env settings: the variable's name
