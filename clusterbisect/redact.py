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

Three ways to use it:

- a change or a setting shown on its own: :func:`shown_setting` (no context needed:
  shapes, ``--password VALUE`` in an argv, env entries by name), which
  ``diff.Change.to_dict`` applies;
- a session's :class:`Redactor` (:meth:`Redactor.of_specs`), which the session, the
  engine, the report and the runners use on what they write and show;
- the process-wide :func:`scrub`, which every output boundary applies (the CLI's
  stdout and stderr, error messages, structlog's :func:`scrub_event`, ``call`` and MCP
  replies): it knows every secret of every session this process opened
  (:func:`register`), so an error raised anywhere is scrubbed too.

The report names the secrets a culprit involves by name only, with a short keyed
fingerprint (:meth:`Redactor.involvement`) so that two values can be told apart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any

REDACTED = "<redacted>"

# Words that make a variable name look secret (matched against its word parts, so
# API_KEY and HF_TOKEN are secret while KEYBOARD_LAYOUT and TOKENIZERS_PARALLELISM
# are not). Not here, for the settings they would hide: TOKENS (MAX_TOKENS), SESSION
# (RAY_SESSION_DIR), SIGNATURE (S3's SIGNATURE_VERSION), PRIVATE (PRIVATE_REGISTRY);
# their secret names say so by another word (AWS_SESSION_TOKEN, PRIVATE_KEY).
SECRET_WORDS = frozenset(
    {
        "TOKEN",
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
        "AUTH",
        "AUTHORIZATION",
        "COOKIE",
        "DSN",
        "PAT",
        "JWT",
    }
)
# A last word that makes a secret-sounding name a setting about the secret, not the
# secret itself: AUTH_MODE, TOKEN_TTL, KEY_SIZE, PASSWORD_FILE (a path), SECRET_NAME.
NOT_SECRET_LAST_WORDS = frozenset(
    {
        "MODE",
        "TYPE",
        "METHOD",
        "ENABLE",
        "ENABLED",
        "DISABLE",
        "DISABLED",
        "TIMEOUT",
        "TTL",
        "EXPIRY",
        "LENGTH",
        "LEN",
        "SIZE",
        "BITS",
        "COUNT",
        "LIMIT",
        "VERSION",
        "ALGORITHM",
        "FILE",
        "PATH",
        "DIR",
        "NAME",
        "HOST",
        "PORT",
        "REGION",
        "PROVIDER",
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
    # Tried from the start of a run of scheme characters only: from every letter of a
    # long value (200 KiB of them, or a 1 MB line) the search was quadratic.
    re.compile(
        r"(?<![A-Za-z0-9+.-])[0-9+.-]*[A-Za-z][A-Za-z0-9+.-]*://"
        r"(?:[^\s:/@]+:)?(?P<secret>[^\s/@]+)@"
    ),
    # --token=VALUE, --password VALUE, -p... (an option whose name looks secret).
    re.compile(
        r"(?<![\w-])--?(?:[A-Za-z0-9]+[-_])*(?:token|password|passwd|pass|secret|api-?key|"
        r"apikey|credentials?|auth)(?:[-_][A-Za-z0-9]+)*(?:=|\s+)(?!\$\()(?P<secret>[^\s\"'-][^\s\"']*)",
        re.IGNORECASE,
    ),
    # PEM private keys (the whole block).
    re.compile(
        # (a block never spans another BEGIN: so headers without an END stay linear)
        r"(?P<secret>-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?:(?!-----BEGIN ).)*?"
        r"-----END [A-Z0-9 ]*PRIVATE KEY-----)",
        re.DOTALL,
    ),
    # JSON Web Tokens.
    re.compile(
        r"(?<![A-Za-z0-9_-])(?P<secret>eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*)"
    ),
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


def looks_secret(name: str | None) -> bool:
    """True when a variable or field name looks like it holds a secret."""
    if not name:
        return False
    words = [w.upper() for w in _WORD.findall(str(name))]
    if words and words[-1] in NOT_SECRET_LAST_WORDS:
        return False
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


def redact_text(text: str, secrets: Iterable[str]) -> str:
    """Replace every known secret value in ``text``."""
    for value in secrets:
        text = text.replace(value, REDACTED)
    return text


def redact_env(env: Mapping[str, str], secret_names: Iterable[str] = ()) -> dict[str, str]:
    """A copy of ``env`` for display, secret-looking variables replaced by the marker."""
    names = set(secret_names)
    return {k: (REDACTED if k in names or looks_secret(k) else v) for k, v in env.items()}


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
    """The values that :func:`secret_argv` hides: a word after a secret flag, the
    value of ``--token=VALUE``, a secret-shaped part of a word."""
    shown = secret_argv(argv)
    found: list[str] = []
    for i in argv_secret_positions(argv):
        word, seen = argv[i], shown[i]
        flag = seen[: -len(REDACTED)]
        if seen == REDACTED:
            found.append(word)
        elif seen.endswith("=" + REDACTED) and word.startswith(flag):
            found.append(word[len(flag) :])
        else:
            found.extend(secrets_in(word))
    return found


def argv_secret_positions(argv: Sequence[str]) -> list[int]:
    """The positions of ``argv`` that :func:`secret_argv` hides whole (the value after
    ``--password``) or in part (``--token=VALUE``, a URL with credentials)."""
    shown = secret_argv(list(argv))
    return [i for i, (word, seen) in enumerate(zip(argv, shown, strict=True)) if word != seen]


def secret_argv(argv: list[str]) -> list[str]:
    """A copy of an argv for display: ``--password VALUE`` and ``--token=VALUE`` hidden."""
    shown: list[str] = []
    hide_next = False
    for word in argv:
        if hide_next:
            hide_next = False
            if not word.startswith("$("):  # a reference to a variable, not a value
                shown.append(REDACTED)
                continue
        flag, eq, value = word.partition("=")
        if word.startswith("-") and looks_secret(flag.lstrip("-")):
            if eq and value and not value.startswith("$("):
                shown.append(f"{flag}={REDACTED}")
            else:
                shown.append(word)
                hide_next = not eq
            continue
        shown.append(scrub_shapes(word))
    return shown


def shown_setting(value: Any, parent: Any = None) -> Any:
    """A setting's value for display, without any context: secret shapes hidden in
    strings, ``--password VALUE`` in an argv, and env entries (``{"name", "value"}``)
    and free-form map entries (annotations, env_vars...) whose name looks secret."""
    if isinstance(value, str):
        return scrub_shapes(value)
    if isinstance(value, list):
        if value and all(isinstance(v, str) for v in value):
            return secret_argv(value)
        return [shown_setting(v, parent) for v in value]
    if isinstance(value, dict):
        if value and set(value) <= _REFERENCE_KEYS:
            return value
        if _env_entry_is_secret(value):
            return {k: (redact_value(v) if k == "value" else v) for k, v in value.items()}
        free_form = parent in _FREE_FORM_PARENTS or parent in ("env", "env_vars")
        return {
            k: (
                redact_value(v)
                if free_form and isinstance(k, str) and looks_secret(k)
                else shown_setting(v, k)
            )
            for k, v in value.items()
        }
    return value


def _env_entry_is_secret(value: dict[Any, Any]) -> bool:
    return "value" in value and isinstance(value.get("name"), str) and looks_secret(value["name"])


class Redactor:
    """Hides every secret a session knows of, in any value or text shown.

    Built from the settings of both specs: ``(name, value)`` pairs, where ``name`` is
    the env name or the last key of the setting's path. A value is known secret when
    its name looks secret; a secret-shaped part of any value is known secret too. So a
    workload that prints its unchanged ``AWS_SECRET_ACCESS_KEY`` is scrubbed as well.

    ``key`` keys the fingerprints (:meth:`fingerprint`); a session derives it from its
    private inputs, so the same value gets the same fingerprint in every report of the
    session and nobody without the inputs can test a guess against it.
    """

    # Values shorter than this are not scrubbed from free text: "1" or "true" under a
    # secret-looking name would blank out unrelated text. They are still hidden as values.
    MIN_SCRUB = 4

    def __init__(
        self, settings: Iterable[tuple[str | None, Any]] = (), key: bytes | None = None
    ) -> None:
        self.key = key if key is not None else os.urandom(32)
        self.known: list[str] = []
        found: set[str] = set()
        for name, value in settings:
            found.update(_secrets_of_setting(name, value))
        self.add(found)

    @classmethod
    def of_specs(
        cls, specs: Iterable[Any], extra: Iterable[Any] = (), key: bytes | None = None
    ) -> Redactor:
        """The redactor of a session: every secret in ``specs`` (their settings, by name
        and by shape) and in ``extra`` (the workload argv, the options: by shape)."""
        from clusterbisect.settings import flatten

        pairs: list[tuple[str | None, Any]] = []
        for spec in specs:
            for setting in flatten(spec).values():
                secret = setting_is_secret(setting.env_name, setting.path)
                name = setting.env_name or (str(setting.path[-1]) if secret else None)
                pairs.append((name if secret else None, setting.value))
        pairs.extend((None, value) for value in extra)
        return cls(pairs, key)

    def add(self, values: Iterable[str]) -> None:
        """Know these values as secret too (those long enough to scrub from text)."""
        merged = set(self.known) | {v for v in values if len(v) >= self.MIN_SCRUB}
        self.known = sorted(merged, key=len, reverse=True)

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

    def setting(self, value: Any) -> Any:
        """A setting's value for display: :func:`shown_setting`, then :meth:`value`."""
        return self.value(shown_setting(value))

    def env(self, env: Mapping[str, str]) -> dict[str, str]:
        """Environment variables for display: by name, then every known secret."""
        return {k: self.text(v) for k, v in redact_env(env).items()}

    def hides(self, value: Any) -> bool:
        """Whether ``value`` holds a secret this redactor would hide."""
        return self.setting(value) != value

    # --- fingerprints -------------------------------------------------------------------

    def fingerprint(self, value: str) -> str:
        """A short keyed hash of ``value``: equal values, equal fingerprints."""
        return hmac.new(self.key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:8]

    def secret_parts(self, value: Any, whole: bool) -> list[str]:
        """The secret parts of a setting's value: all of it when ``whole`` (its name
        looks secret), else each known or secret-shaped string inside it."""
        if value is None:
            return []
        if whole:
            text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
            return [text]
        parts: set[str] = set()
        for text in _strings(value):
            parts.update(k for k in self.known if k in text)
            parts.update(secrets_in(text))
        return sorted(parts)

    def involvement(self, whole: bool, good: Any, bad: Any) -> dict[str, Any] | None:
        """How a change involves secrets, without their values: whether the secret
        changed, and the fingerprint of each side's (``None`` where it holds none)."""
        sides = [self.secret_parts(v, whole) for v in (good, bad)]
        if not any(sides):
            return None
        good_fp, bad_fp = (self.fingerprint("\0".join(p)) if p else None for p in sides)
        return {"changed": sides[0] != sides[1], "good": good_fp, "bad": bad_fp}


def _secrets_of_setting(name: str | None, value: Any, parent: Any = None) -> Iterator[str]:
    """The secret strings of one setting: all of them under a secret name, the
    secret-shaped parts, the values after secret flags in an argv, and nested env
    entries and free-form map entries whose names look secret. A reference
    (``secretKeyRef``...) names a secret and holds none."""
    if isinstance(value, dict) and value and set(value) <= _REFERENCE_KEYS:
        return
    secret_name = looks_secret(name)
    for text in _strings(value):
        if secret_name:
            yield text
        yield from secrets_in(text)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        yield from _argv_secrets(value)
    elif isinstance(value, list):
        for inner in value:
            yield from _secrets_of_setting(None, inner, parent)
    elif isinstance(value, dict):
        if _env_entry_is_secret(value):
            yield from _strings(value["value"])
        free_form = parent in _FREE_FORM_PARENTS or parent in ("env", "env_vars")
        for k, inner in value.items():
            named = k if free_form and isinstance(k, str) else None
            if isinstance(inner, dict | list) or looks_secret(named):
                yield from _secrets_of_setting(named, inner, k)


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


# --- the process-wide scrubber of every output ---------------------------------------------

_SEEN = Redactor()
_SEEN_LOCK = threading.Lock()


def register(redactor: Redactor) -> Redactor:
    """Make :func:`scrub` hide every secret ``redactor`` knows (a session's, when it is
    opened), for the rest of the process; returns ``redactor``."""
    with _SEEN_LOCK:
        _SEEN.add(redactor.known)
    return redactor


def scrub(value: Any) -> Any:
    """``value`` (text or JSON-shaped data) without a secret of any session this
    process opened, nor anything secret-shaped: what every output boundary applies."""
    return _SEEN.value(value)


def scrub_event(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> dict[str, Any]:
    """A structlog processor: every field of a log event scrubbed (:func:`scrub`)."""
    return {k: scrub(v if isinstance(v, _PLAIN) else str(v)) for k, v in event.items()}


_PLAIN = (str, int, float, bool, type(None), dict, list, tuple)
