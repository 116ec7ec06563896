"""Every setting value of every job, and the jobs that have it. Pure.

Each job's spec is flattened by ``settings.flatten``, the way ``diff`` flattens it, so a
value is named by the key ``diff`` would give. A *token* is one (key, value) pair; a
key that some jobs have and others do not also gets an *absent* token (value None,
``present`` False), since removing a setting can be the culprit too.

The jobs that have a token are a bit mask (a Python int, bit j for job j): counting,
intersecting and comparing sets of thousands of jobs is then done in C, and two
tokens that always go together have equal masks.
"""

from __future__ import annotations

import json
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from clusterbisect.config import ScopeOptions
from clusterbisect.diff import ignore_matcher
from clusterbisect.errors import InputError
from clusterbisect.redact import setting_is_secret
from clusterbisect.settings import flatten
from clusterbisect.specs.model import Spec


@dataclass(frozen=True)
class Token:
    """One setting value: ``key`` = ``value`` (or ``key`` absent, ``present`` False)."""

    key: str
    value: Any
    present: bool
    category: str
    secret: bool


@dataclass
class SettingsTable:
    """Tokens, their job masks, and each job's tokens (present ones)."""

    jobs: int = 0
    tokens: list[Token] = field(default_factory=list)
    masks: list[int] = field(default_factory=list)
    job_tokens: list[array[int]] = field(default_factory=list)

    @property
    def all_jobs(self) -> int:
        """The mask of every job."""
        return (1 << self.jobs) - 1

    def counts(self) -> list[int]:
        """How many jobs have each token."""
        return [m.bit_count() for m in self.masks]


def canonical(value: Any) -> str:
    """A hashable form of a value that tells 1 from "1" and sorts mapping keys."""
    return json.dumps(value, sort_keys=True, default=str)


def tabulate(specs: Sequence[Spec], scope: ScopeOptions | None = None) -> SettingsTable:
    """The settings table of ``specs`` (job j is ``specs[j]``); ``scope`` leaves keys
    out as ``diff`` does (``--ignore`` globs, and with ``--container`` the other
    containers' settings). ``InputError`` when no job has that container."""
    scope = scope or ScopeOptions()
    matcher = ignore_matcher(scope.ignore)
    container = scope.container
    containers: set[str] = set()
    table = SettingsTable(jobs=len(specs))
    ids: dict[tuple[Any, ...], int] = {}
    members: list[array[int]] = []
    secret_keys: dict[str, bool] = {}
    for j, spec in enumerate(specs):
        mine = array("i")
        for key, setting in flatten(spec).items():
            if matcher is not None and matcher.match(key):
                continue
            if container is not None and setting.container is not None:
                containers.add(setting.container)
                if setting.container != container:
                    continue
            value = setting.value
            # A string is its own identity; other values by their JSON form, in a tuple
            # of another length so that "1" and 1 (and 1 and True) stay apart.
            ident = (key, value) if type(value) is str else (key, canonical(value), None)
            tid = ids.get(ident)
            if tid is None:
                secret = secret_keys.get(key)
                if secret is None:
                    secret = secret_keys[key] = setting_is_secret(setting.env_name, setting.path)
                tid = ids[ident] = len(table.tokens)
                table.tokens.append(Token(key, setting.value, True, setting.category, secret))
                members.append(array("i"))
            members[tid].append(j)
            mine.append(tid)
        table.job_tokens.append(mine)
    if container is not None and container not in containers:
        listing = ", ".join(sorted(containers)) or "none"
        raise InputError(
            f"no job has a container named '{container}' (containers: {listing})",
            field="--container",
        )
    table.masks = [_mask(m, table.jobs) for m in members]
    _add_absent(table, secret_keys)
    return table


def _mask(jobs: array[int], n: int) -> int:
    if len(jobs) == 1:
        return 1 << jobs[0]
    bits = bytearray((n + 7) // 8)
    for j in jobs:
        bits[j >> 3] |= 1 << (j & 7)
    return int.from_bytes(bits, "little")


def _add_absent(table: SettingsTable, secret_keys: dict[str, bool]) -> None:
    """An absent token for each key that some jobs have and others do not."""
    present: dict[str, int] = {}
    category: dict[str, str] = {}
    for token, mask in zip(table.tokens, table.masks, strict=True):
        present[token.key] = present.get(token.key, 0) | mask
        category.setdefault(token.key, token.category)
    everyone = table.all_jobs
    for key, mask in present.items():
        if mask != everyone:
            table.tokens.append(Token(key, None, False, category[key], secret_keys[key]))
            table.masks.append(everyone & ~mask)


def secret_texts(table: SettingsTable, min_length: int = 4) -> list[str]:
    """Every string value of a secret setting, longest first (to scrub from texts)."""
    values = {
        t.value
        for t in table.tokens
        if t.secret and isinstance(t.value, str) and len(t.value) >= min_length
    }
    return sorted(values, key=len, reverse=True)
