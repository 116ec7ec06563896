"""``pip freeze`` output and requirements files as specs.

The document is ``{"pip": {package: requirement}}`` keyed by the canonical package
name (``packaging.utils.canonicalize_name``), in file order; the value is the
requirement as written (``numpy==1.26.4``). Option lines (``--index-url ...``) and
unparsable lines are keyed by the line itself.
"""

from __future__ import annotations

import re
from typing import Any

from clusterbisect.errors import InputError
from clusterbisect.specs.model import PIP, Spec

_SEPARATORS = re.compile(r"[-_.]+")


def canonicalize_name(name: str) -> str:
    """PEP 503 normalised name (as ``packaging.utils.canonicalize_name``, which is
    slower to import: ``diff`` start-up time matters)."""
    return _SEPARATORS.sub("-", name).lower()


def _parse_requirement(text: str) -> str | None:
    """The package name of a PEP 508 requirement, None when ``text`` is not one."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        return Requirement(text).name
    except InvalidRequirement:
        return None


_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(.*)$", re.DOTALL)
_OPTION = re.compile(r"^(?:-[a-zA-Z]\s*\S|--[a-z][a-z-]*)")
_EGG = re.compile(r"[#&]egg=([A-Za-z0-9][A-Za-z0-9._-]*)")


# ``name==1.2.3`` and friends, the bulk of any pip freeze: no need for the full parser.
_SIMPLE = re.compile(
    r"^([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(?:===|==|~=|!=|<=|>=|<|>)\s*"
    r"[A-Za-z0-9][A-Za-z0-9.*+!_-]*$"
)


def requirement_key(line: str) -> str:
    """The stable key of one requirement line: its canonical package name."""
    text = _strip_comment(line)
    simple = _SIMPLE.match(text)
    if simple:
        return canonicalize_name(simple.group(1))
    if text.startswith("-"):
        egg = _EGG.search(text)
        return canonicalize_name(egg.group(1)) if egg else text
    name = _parse_requirement(text)
    if name is not None:
        return canonicalize_name(name)
    egg = _EGG.search(text)
    return canonicalize_name(egg.group(1)) if egg else text


def is_requirement(line: str) -> bool:
    """True when ``line`` is a requirement or a pip option line."""
    text = _strip_comment(line)
    if not text:
        return False
    if _SIMPLE.match(text):
        return True
    if text.startswith("-"):
        return _OPTION.match(text) is not None
    return _parse_requirement(text) is not None


def looks_like_pip(lines: list[str]) -> bool:
    """Every line is a requirement (or option) and one at least pins or names a source."""
    if not all(is_requirement(ln) for ln in lines):
        return False
    return any(re.search(r"(==|>=|<=|~=|!=|<|>|@|^-)", _strip_comment(ln)) for ln in lines)


def _strip_comment(line: str) -> str:
    text = line.strip()
    if text.startswith("#"):
        return ""
    cut = text.find(" #")
    return text[:cut].rstrip() if cut >= 0 else text


def parse(text: str, source: str) -> Spec:
    """Parse a pip freeze / requirements file into a spec."""
    packages: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = _strip_comment(raw)
        if not line:
            continue
        key = requirement_key(line)
        line = _canonical_line(line, key)
        if key in packages and packages[key] != line:
            raise InputError(
                f"line {lineno}: package '{key}' is listed twice", source=source, field=key
            )
        packages[key] = line
    return Spec(format=PIP, kind="PipFreeze", source=source, document={"pip": packages})


def _canonical_line(line: str, key: str) -> str:
    """``Pillow==10.4`` -> ``pillow==10.4``: name spelling is not a change."""
    m = _NAME.match(line)
    if m and not line.startswith("-") and canonicalize_name(m.group(1)) == key:
        return key + m.group(2)
    return line


def render(spec: Spec) -> str:
    """The spec as a requirements file (one requirement per line)."""
    packages: dict[str, Any] = spec.document.get("pip") or {}
    return "".join(f"{line}\n" for line in packages.values())
