"""``pip freeze`` output and requirements files as specs, read as pip reads them.

The document is ``{"pip": {key: requirement}}`` in file order. The key is stable and
never holds a secret:

- a requirement's canonical package name (``packaging.utils.canonicalize_name``),
  with its environment marker when it has one (``numpy; python_version < "3.12"``);
  the name comes from PEP 508 (``pkg @ URL`` too), a wheel or sdist file name in a
  URL or path, or an ``#egg=`` fragment;
- an option line keyed by the option, and for the repeatable ones by the host or path
  they name, without credentials: ``--index-url``, ``--extra-index-url pypi.corp``,
  ``--find-links ./wheels``, ``--trusted-host pypi.corp``, ``-r base.txt``.

Lines joined by a trailing backslash are one requirement; ``--hash`` options are not
part of it (the pin is); ``# comments`` are dropped. The value is the requirement as
written (name spelling normalised), credentials included: only what is shown is
redacted, what a probe installs is real.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from clusterbisect.errors import InputError
from clusterbisect.specs.model import PIP, Spec

_SEPARATORS = re.compile(r"[-_.]+")


def canonicalize_name(name: str) -> str:
    """PEP 503 normalised name (as ``packaging.utils.canonicalize_name``, which is
    slower to import: ``diff`` start-up time matters)."""
    return _SEPARATORS.sub("-", name).lower()


def _parse_requirement(text: str) -> tuple[str, str] | None:
    """``(name, marker)`` of a PEP 508 requirement, None when ``text`` is not one."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        requirement = Requirement(text)
    except InvalidRequirement:
        return None
    return requirement.name, str(requirement.marker) if requirement.marker else ""


_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(.*)$", re.DOTALL)
_OPTION = re.compile(r"^(?:-[a-zA-Z]\s*\S|--[a-z][a-z-]*)")
_EGG = re.compile(r"[#&]egg=([A-Za-z0-9][A-Za-z0-9._-]*)")
_HASH = re.compile(r"\s+--hash[=\s]\S+")
# A URL or a local path given as a requirement (pip accepts both).
_ARTIFACT = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|git\+|\.{0,2}/|~/)", re.IGNORECASE)
# Options whose value says where packages come from: keyed by host or path.
_SOURCE_OPTIONS = {
    "-i": "--index-url",
    "--index-url": "--index-url",
    "--extra-index-url": "--extra-index-url",
    "-f": "--find-links",
    "--find-links": "--find-links",
    "--trusted-host": "--trusted-host",
    "-r": "-r",
    "--requirement": "-r",
    "-c": "-c",
    "--constraint": "-c",
    "-e": "-e",
    "--editable": "-e",
}
# Options that can appear once only: the option alone is the key.
_SINGLE = frozenset({"--index-url"})

# ``name==1.2.3`` and friends, the bulk of any pip freeze: no need for the full parser.
_SIMPLE = re.compile(
    r"^([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?:===|==|~=|!=|<=|>=|<|>)\s*"
    r"[A-Za-z0-9][A-Za-z0-9.*+!_-]*$"
)


def without_credentials(location: str) -> str:
    """A URL's host and path without user, password or query; a path as it is."""
    if "://" not in location:
        return location
    parts = urlsplit(location)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}".rstrip("/")


def _host_or_path(location: str) -> str:
    if "://" not in location:
        return location
    parts = urlsplit(location)
    return parts.hostname or without_credentials(location)


def _artifact_name(location: str) -> str | None:
    """The package a URL or path installs, from its file name or ``#egg=``."""
    egg = _EGG.search(location)
    if egg:
        return canonicalize_name(egg.group(1))
    from packaging.utils import (
        InvalidSdistFilename,
        InvalidWheelFilename,
        parse_sdist_filename,
        parse_wheel_filename,
    )

    filename = urlsplit(location).path.rsplit("/", 1)[-1] if "://" in location else location
    filename = filename.rsplit("/", 1)[-1]
    try:
        if filename.endswith(".whl"):
            return canonicalize_name(parse_wheel_filename(filename)[0])
        if filename.endswith((".tar.gz", ".zip")):
            return canonicalize_name(parse_sdist_filename(filename)[0])
    except (InvalidWheelFilename, InvalidSdistFilename):
        return None
    return None


def _option_key(text: str) -> str:
    option, _, value = text.partition("=") if text.startswith("--") else ("", "", "")
    if not option or " " in option:
        option, _, value = text.partition(" ")
        if len(option) > 2 and option[0] == "-" and option[1] != "-":
            option, value = option[:2], option[2:] + (" " + value if value else "")
    value = value.strip()
    canonical = _SOURCE_OPTIONS.get(option)
    if canonical is None:
        return " ".join(without_credentials(word) for word in text.split())
    if canonical in _SINGLE:
        return canonical
    if canonical == "-e":
        name = _artifact_name(value)
        return name if name else f"-e {without_credentials(value)}"
    return f"{canonical} {_host_or_path(value)}"


def strip_hashes(text: str) -> str:
    """A requirement without its ``--hash`` options (the pin says what is installed)."""
    return _HASH.sub("", text).strip()


def requirement_key(line: str) -> str:
    """The stable key of one requirement or option line (see the module docstring)."""
    text = strip_hashes(_strip_comment(line))
    simple = _SIMPLE.match(text)
    if simple:
        return canonicalize_name(simple.group(1))
    if text.startswith("-"):
        return _option_key(text)
    parsed = _parse_requirement(text)
    if parsed is not None:
        name, marker = parsed
        return canonicalize_name(name) + (f"; {marker}" if marker else "")
    artifact = _artifact_name(text)
    return artifact if artifact else without_credentials(text)


def is_requirement(line: str) -> bool:
    """True when ``line`` is a requirement (or URL, path) or a pip option line."""
    text = strip_hashes(_strip_comment(line))
    if not text:
        return False
    if _SIMPLE.match(text):
        return True
    if text.startswith("-"):
        return _OPTION.match(text) is not None
    return _ARTIFACT.match(text) is not None or _parse_requirement(text) is not None


def looks_like_pip(lines: list[str]) -> bool:
    """Every line is a requirement (or option) and one at least pins or names a source."""
    joined = [line for _number, line in logical_lines("\n".join(lines))]
    if not joined or not all(is_requirement(ln) for ln in joined):
        return False
    return any(re.search(r"(==|>=|<=|~=|!=|<|>|@|^-|://|^\.{0,2}/)", ln) for ln in joined)


def _strip_comment(line: str) -> str:
    text = line.strip()
    if text.startswith("#"):
        return ""
    cut = text.find(" #")
    return text[:cut].rstrip() if cut >= 0 else text


def logical_lines(text: str) -> list[tuple[int, str]]:
    """``(first line number, text)`` of each requirement: continuations joined,
    comments and blank lines dropped."""
    out: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip()
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1])
            continue
        pending.append(line)
        joined = _strip_comment(" ".join(part.strip() for part in pending))
        pending = []
        if joined:
            out.append((start, joined))
    if pending:
        joined = _strip_comment(" ".join(part.strip() for part in pending))
        if joined:
            out.append((start, joined))
    return out


def parse(text: str, source: str) -> Spec:
    """Parse a pip freeze / requirements file into a spec."""
    packages: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, line in logical_lines(text):
        key = requirement_key(line)
        value = _canonical_line(strip_hashes(line), key)
        if key in packages and packages[key] != value:
            raise InputError(
                f"line {number}: '{key}' is listed twice (first at line {first_line[key]})",
                source=source,
                field=key,
            )
        packages[key] = value
        first_line[key] = number
    return Spec(format=PIP, kind="PipFreeze", source=source, document={"pip": packages})


def _canonical_line(line: str, key: str) -> str:
    """``Pillow==10.4`` -> ``pillow==10.4``: name spelling is not a change."""
    m = _NAME.match(line)
    name = key.split(";", 1)[0]
    if m and not line.startswith("-") and canonicalize_name(m.group(1)) == name:
        return name + m.group(2)
    return line


def render(spec: Spec) -> str:
    """The spec as a requirements file (one requirement per line)."""
    packages: dict[str, Any] = spec.document.get("pip") or {}
    return "".join(f"{line}\n" for line in packages.values())


# Options whose value may be a local path, which pip reads relative to the file.
_PATH_OPTIONS = frozenset(
    {"-f", "--find-links", "-r", "--requirement", "-c", "--constraint", "-e", "--editable"}
)


def install_lines(spec: Spec, base: str | None = None) -> list[str]:
    """The requirement lines that install ``spec`` (a probe: good plus changes), with
    local paths made absolute against ``base`` (default: the spec file's folder), so
    they install from anywhere: a probe's virtual environment, a Ray job's runtime_env,
    a pod."""
    import os.path

    folder = base if base is not None else os.path.dirname(os.path.abspath(spec.source))
    lines = []
    for line in (spec.document.get("pip") or {}).values():
        lines.append(_absolute(str(line), folder))
    return lines


def _absolute(line: str, folder: str) -> str:
    import os.path

    def local(value: str) -> str:
        if "://" in value or value.startswith(("git+", "~")) or os.path.isabs(value):
            return value
        return os.path.normpath(os.path.join(folder, value))

    option, _, value = line.partition("=") if line.startswith("--") else ("", "", "")
    if option not in _PATH_OPTIONS:
        option, _, value = line.partition(" ")
    if option in _PATH_OPTIONS and value.strip():
        return f"{option} {local(value.strip())}"
    if line.startswith(("./", "../")):
        return local(line)
    return line


def shown_lines(lines: list[str]) -> list[str]:
    """Install lines for people and models: credentials in URLs hidden (a probe still
    installs with the real ones)."""
    from clusterbisect.redact import scrub_shapes

    return [scrub_shapes(line) for line in lines]
