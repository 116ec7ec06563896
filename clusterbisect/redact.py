"""Secret redaction: one place that decides what is secret and hides it from output.

Everything people or models read (the diff, reports, rendered probes, logs shown as
excerpts) goes through these functions. Probes themselves always get the real values:
redaction is applied to copies made for display, never to what is launched.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

REDACTED = "<redacted>"

# Words that make a variable name look secret (matched against its word parts, so
# API_KEY and HF_TOKEN are secret while KEYBOARD_LAYOUT and TOKENIZERS_PARALLELISM
# are not).
SECRET_WORDS = frozenset(
    {
        "TOKEN",
        "TOKENS",
        "PASSWORD",
        "PASSWORDS",
        "PASSWD",
        "PASS",
        "PASSPHRASE",
        "SECRET",
        "SECRETS",
        "KEY",
        "KEYS",
        "APIKEY",
        "ACCESSKEY",
        "PRIVATEKEY",
        "CREDENTIAL",
        "CREDENTIALS",
        "CREDS",
        "PRIVATE",
        "AUTH",
        "AUTHORIZATION",
        "COOKIE",
        "SESSION",
        "SIGNATURE",
        "DSN",
        "PAT",
        "JWT",
    }
)
# Word endings for names written without separators (HFTOKEN, DBPASSWORD).
SECRET_SUFFIXES = ("TOKEN", "PASSWORD", "PASSWD", "SECRET", "APIKEY", "ACCESSKEY", "CREDENTIALS")
_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
# env valueFrom references: safe to show, they name a secret, they do not hold it.
_REFERENCE_KEYS = frozenset({"secretKeyRef", "configMapKeyRef", "fieldRef", "resourceFieldRef"})
# Free-form maps whose keys are names chosen by people (so a key can name a secret).
_FREE_FORM_PARENTS = ("annotations", "labels", "config", "metadata")


class SecretBearer(Protocol):
    """What redaction needs to know of a change (``diff.Change`` is one)."""

    @property
    def secret(self) -> bool: ...

    @property
    def env_name(self) -> str | None: ...

    @property
    def good(self) -> Any: ...

    @property
    def bad(self) -> Any: ...


def looks_secret(name: str | None) -> bool:
    """True when a variable or field name looks like it holds a secret."""
    if not name:
        return False
    words = [w.upper() for w in _WORD.findall(str(name))]
    if any(w in SECRET_WORDS for w in words):
        return True
    return any(w.endswith(SECRET_SUFFIXES) for w in words)


def setting_is_secret(env_name: str | None, path: tuple[Any, ...]) -> bool:
    """Whether a setting (an env variable, or a leaf at ``path``) holds a secret.

    Schema fields such as ``secretName`` name a secret; only env names and free-form
    map keys (annotations, runtime_env config, snapshot values) are checked.
    """
    if env_name is not None:
        return looks_secret(env_name)
    last = path[-1] if path else None
    if isinstance(last, str) and len(path) >= 2 and path[-2] in _FREE_FORM_PARENTS:
        return looks_secret(last)
    return False


def redact_value(value: Any) -> Any:
    """Hide a secret value; keep ``None`` so that added/removed still reads right.

    An env ``valueFrom`` reference (``secretKeyRef``...) is shown: it names where the
    secret lives, not what it is.
    """
    if value is None:
        return None
    if isinstance(value, dict) and value and set(value) <= _REFERENCE_KEYS:
        return value
    return REDACTED


def secret_env_names(changes: Iterable[SecretBearer]) -> set[str]:
    """The env variables among ``changes`` that were classified secret."""
    return {c.env_name for c in changes if c.secret and c.env_name}


def secret_values(changes: Iterable[SecretBearer]) -> list[str]:
    """Every string value of a secret change, longest first (for :func:`redact_text`)."""
    values: set[str] = set()
    for change in changes:
        if change.secret:
            values.update(v for v in (change.good, change.bad) if isinstance(v, str) and v)
    return sorted(values, key=len, reverse=True)


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """Replace every known secret value in ``text``."""
    for value in secrets:
        text = text.replace(value, REDACTED)
    return text


def redact_env(env: Mapping[str, str], secret_names: Iterable[str] = ()) -> dict[str, str]:
    """A copy of ``env`` for display, secret-looking variables replaced by the marker."""
    names = set(secret_names)
    return {k: (REDACTED if k in names or looks_secret(k) else v) for k, v in env.items()}


def redact_manifest(manifest: dict[str, Any], secret_names: Iterable[str] = ()) -> dict[str, Any]:
    """A copy of a workload manifest for display: secret env values replaced.

    The Job sent to the cluster keeps real values (the workload needs them); what is
    written to the state directory or printed must not.
    """
    names = set(secret_names)
    shown = copy.deepcopy(manifest)
    template = ((shown.get("spec") or {}).get("template") or {}).get("spec") or {}
    for group in ("initContainers", "containers"):
        for container in template.get(group) or []:
            for env in container.get("env") or []:
                name = env.get("name", "")
                if "value" in env and (name in names or looks_secret(name)):
                    env["value"] = REDACTED
    return shown
