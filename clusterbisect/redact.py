"""Secret redaction: one place that decides what is secret and hides it from output.

Everything people or models read (the diff, reports, rendered probes, logs shown as
excerpts) goes through these functions. Probes themselves always get the real values:
redaction is applied to copies made for display, never to what is launched.

A value is secret by its **name** (:func:`looks_secret`: ``DB_PASSWORD``, ``HF_TOKEN``,
an annotation ``vault.example.com/password``) or by its **shape** (:data:`SHAPES`:
credentials in a URL, ``--token=...`` arguments, PEM private keys, JWTs and the
prefixes of well-known tokens). A :class:`Redactor` is built from both specs of a
session: it knows every secret value they hold, changed or not, and scrubs them from
any text the tool shows (a workload that prints its token, an error message).

Why not detect-secrets: its line scanner reports a GitHub token as ``ghp`` (the prefix,
not the value) and flags plain words as high-entropy strings, so its findings cannot
drive a scrubber; the shapes below are few, tested one by one, and cheap to run on
megabytes of log.
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

# Secret shapes inside values and text. Each pattern's group "secret" is the part hidden.
SHAPES: tuple[re.Pattern[str], ...] = (
    # user:password@ and token@ in a URL (DATABASE_URL, HTTPS_PROXY, a pip index, a DSN).
    re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://(?:[^\s:/@]+:)?(?P<secret>[^\s/@]+)@"),
    # --token=VALUE, --password VALUE, -p... (an option whose name looks secret).
    re.compile(
        r"(?<![\w-])--?(?:[A-Za-z0-9]+[-_])*(?:token|password|passwd|pass|secret|api-?key|"
        r"apikey|credentials?|auth)(?:[-_][A-Za-z0-9]+)*(?:=|\s+)(?P<secret>[^\s\"'-][^\s\"']*)",
        re.IGNORECASE,
    ),
    # PEM private keys (the whole block).
    re.compile(
        r"(?P<secret>-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?-----END [A-Z0-9 ]*PRIVATE KEY-----)",
        re.DOTALL,
    ),
    # JSON Web Tokens.
    re.compile(r"(?P<secret>eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*)"),
    # Well-known token prefixes: AWS, GitHub, GitLab, Slack, OpenAI/Anthropic, Stripe,
    # Hugging Face, Google API, npm, PyPI.
    re.compile(
        r"(?<![A-Za-z0-9])(?P<secret>(?:AKIA|ASIA)[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}|"
        r"github_pat_[A-Za-z0-9_]{30,}|glpat-[A-Za-z0-9_-]{20,}|xox[abprs]-[A-Za-z0-9-]{10,}|"
        r"sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}|[sr]k_live_[A-Za-z0-9]{16,}|"
        r"hf_[A-Za-z0-9]{30,}|AIza[0-9A-Za-z_-]{35}|npm_[A-Za-z0-9]{36}|"
        r"pypi-[A-Za-z0-9_-]{50,})"
    ),
)


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


def secrets_in(text: str) -> list[str]:
    """The substrings of ``text`` that have a secret's shape (:data:`SHAPES`)."""
    found: list[str] = []
    for pattern in SHAPES:
        found.extend(m.group("secret") for m in pattern.finditer(text))
    return found


def scrub_shapes(text: str) -> str:
    """``text`` with every secret-shaped part replaced by the marker (URLs keep their
    user and host, options their name)."""
    for pattern in SHAPES:
        text = pattern.sub(_hide_secret_group, text)
    return text


def _hide_secret_group(match: re.Match[str]) -> str:
    start, end = match.span("secret")
    whole = match.group(0)
    return whole[: start - match.start()] + REDACTED + whole[end - match.start() :]


def _argv_secrets(argv: list[str]) -> list[str]:
    """The values that :func:`secret_argv` hides (those after a secret flag)."""
    hidden = secret_argv(argv)
    return [word for word, shown in zip(argv, hidden, strict=True) if shown == REDACTED]


def secret_argv(argv: list[str]) -> list[str]:
    """A copy of an argv for display: ``--password VALUE`` and ``--token=VALUE`` hidden."""
    shown: list[str] = []
    hide_next = False
    for word in argv:
        if hide_next:
            shown.append(REDACTED)
            hide_next = False
            continue
        flag, eq, _value = word.partition("=")
        if word.startswith("-") and looks_secret(flag.lstrip("-")):
            if eq:
                shown.append(f"{flag}={REDACTED}")
            else:
                shown.append(word)
                hide_next = True
            continue
        shown.append(scrub_shapes(word))
    return shown


class Redactor:
    """Hides every secret a session knows of, in any value or text shown.

    Built from the settings of both specs: ``(name, value)`` pairs, where ``name`` is
    the env name or the last key of the setting's path. A value is known secret when
    its name looks secret; a secret-shaped part of any value is known secret too. So a
    workload that prints its unchanged ``AWS_SECRET_ACCESS_KEY`` is scrubbed as well.
    """

    # Values shorter than this are not scrubbed from free text: "1" or "true" under a
    # secret-looking name would blank out unrelated text. They are still hidden as values.
    MIN_SCRUB = 4

    def __init__(self, settings: Iterable[tuple[str | None, Any]] = ()) -> None:
        known: set[str] = set()
        for name, value in settings:
            for text in _strings(value):
                if looks_secret(name):
                    known.add(text)
                known.update(secrets_in(text))
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                known.update(_argv_secrets(value))
        self.known = sorted((k for k in known if len(k) >= self.MIN_SCRUB), key=len, reverse=True)

    def text(self, text: str) -> str:
        """``text`` without any known secret value or secret-shaped part."""
        for value in self.known:
            if value in text:
                text = text.replace(value, REDACTED)
        return scrub_shapes(text)

    def value(self, value: Any) -> Any:
        """A copy of ``value`` (a string, or JSON-shaped data) with secrets hidden."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.value(v) for v in value]
        return value


def _strings(value: Any) -> Iterable[str]:
    """Every string inside ``value`` (a scalar, or nested lists and mappings)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for inner in value.values():
            yield from _strings(inner)
    elif isinstance(value, list | tuple):
        for inner in value:
            yield from _strings(inner)
