"""Changes between two specs: the list the bisection searches.

``diff`` flattens both specs into settings and compares them key by key (linear in
the number of settings). An element (container, volume, worker group, replica spec)
present on one side only is one change carrying the whole element, so any subset of
changes applies cleanly. Secret-looking settings are marked ``secret``: they still
count as changes but their values never leave ``Change`` unredacted; the secret parts
of other values (a URL's password) are hidden too (``Change.to_dict``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from clusterbisect.errors import InputError
from clusterbisect.redact import redact_value, setting_is_secret, shown_setting
from clusterbisect.settings import (
    OTHER,
    Element,
    PathSegment,
    Setting,
    flatten_elements,
)
from clusterbisect.specs import kubernetes as k8s
from clusterbisect.specs.kubernetes import resolve
from clusterbisect.specs.model import KUBERNETES, Spec

# Named lists that may not become empty (a pod needs a container).
REQUIRED_NONEMPTY = frozenset({"containers", "replicatedJobs"})
MODIFIED = "modified"
ADDED = "added"
REMOVED = "removed"


@dataclass(frozen=True)
class Change:
    """A setting whose value differs between the good and the bad spec."""

    key: str
    change: str  # modified | added | removed
    good: Any  # None when added
    bad: Any  # None when removed
    category: str
    path: tuple[PathSegment, ...] = ()
    secret: bool = False
    container: str | None = None
    env_name: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The public, redacted form: {"key", "change", "good", "bad", "category"}.

        A secret setting's values are hidden whole; any other value has its secret
        parts hidden (credentials in a URL, ``--token=...``, a PEM key...).
        """
        return {
            "key": self.key,
            "change": self.change,
            "good": self.shown(self.good),
            "bad": self.shown(self.bad),
            "category": self.category,
        }

    def shown(self, value: Any) -> Any:
        """One of this change's values (``good`` or ``bad``) for display."""
        return redact_value(value) if self.secret else shown_setting(value)


def check_comparable(good: Spec, bad: Spec) -> None:
    """Raise ``InputError`` naming both files when the specs cannot be compared."""
    where = f"{good.source} ({good.kind}) and {bad.source} ({bad.kind})"
    if good.format != bad.format:
        raise InputError(
            f"cannot compare {where}: different formats ({good.format} vs {bad.format})"
        )
    if good.format == KUBERNETES:
        if good.kind != bad.kind:
            raise InputError(f"cannot compare {where}: different kinds")
        if k8s.layout(good) != k8s.layout(bad):
            raise InputError(f"cannot compare {where}: the pod templates are laid out differently")


def ignore_regex(glob: str) -> str:
    """The regular expression of one ``--ignore`` pattern.

    ``*`` matches any characters (dots and brackets included) and ``?`` one character;
    everything else is literal. Keys name list elements in brackets
    (``containers[trainer].env.X``), so a bracket is never a character class here, as
    it would be in fnmatch: ``containers[trainer].env.*`` means what it says.
    """
    return "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob)


def ignore_matcher(ignore: Iterable[str]) -> re.Pattern[str] | None:
    """One regex for ``--ignore`` globs on keys (None: nothing is ignored); triage
    leaves settings out with the same rule."""
    globs = [g for g in ignore if g]
    if not globs:
        return None
    return re.compile("(?:" + "|".join(ignore_regex(g) for g in globs) + r")\Z", re.DOTALL)


def unmatched_ignores(ignore: Iterable[str], keys: Iterable[str]) -> list[str]:
    """The ``--ignore`` patterns that match none of ``keys``, in the order given."""
    globs = [g for g in dict.fromkeys(ignore) if g]
    if not globs:
        return []
    compiled = {g: re.compile(ignore_regex(g) + r"\Z", re.DOTALL) for g in globs}
    left = dict(compiled)
    for key in keys:
        for glob in [g for g, pattern in left.items() if pattern.match(key)]:
            del left[glob]
        if not left:
            break
    return list(left)


@dataclass
class Comparison:
    """What :func:`compare` found: the changes kept, and the warnings about the scope
    (an ``--ignore`` pattern that matches no setting: a typo the user should see)."""

    changes: list[Change]
    warnings: list[str] = field(default_factory=list)


def _containers(flat_settings: Iterable[Setting]) -> set[str]:
    return {s.container for s in flat_settings if s.container is not None}


def diff(
    good: Spec,
    bad: Spec,
    *,
    ignore: Iterable[str] = (),
    container: str | None = None,
) -> list[Change]:
    """The changes that turn ``good`` into ``bad``, sorted by key.

    ``ignore``: patterns on keys to leave out (:func:`ignore_regex`). ``container``:
    keep only that container's settings and the pod-level ones. Raises ``InputError``
    when the specs cannot be compared or ``container`` names no container of either spec.
    """
    return compare(good, bad, ignore=ignore, container=container).changes


def compare(
    good: Spec,
    bad: Spec,
    *,
    ignore: Iterable[str] = (),
    container: str | None = None,
) -> Comparison:
    """:func:`diff`, with a warning for each ``ignore`` pattern that matches no setting
    of either spec (nor any change)."""
    ignore = list(ignore)
    check_comparable(good, bad)
    g = flatten_elements(good)
    b = flatten_elements(bad)
    if container is not None:
        known = _containers(g.settings.values()) | _containers(b.settings.values())
        if container not in known:
            listing = ", ".join(sorted(known)) or "none"
            raise InputError(
                f"no container named '{container}' in {good.source} or {bad.source} "
                f"(containers: {listing})"
            )
    changes: list[Change] = []
    # Settings inside an element that exists on one side only collapse into it.
    collapsed: dict[tuple[Any, ...], tuple[str, Element, list[Setting]]] = {}
    for key, gs in g.settings.items():
        bs = b.settings.get(key)
        if bs is None:
            element = _new_element(gs.path, g.elements, b.elements)
            if element is not None:
                collapsed.setdefault(element.path, (REMOVED, element, []))[2].append(gs)
                continue
            changes.append(_change(gs, REMOVED, gs.value, None))
        elif bs.value != gs.value or type(bs.value) is not type(gs.value):
            changes.append(_change(gs, MODIFIED, gs.value, bs.value))
    for key, bs in b.settings.items():
        if key in g.settings:
            continue
        element = _new_element(bs.path, b.elements, g.elements)
        if element is not None:
            collapsed.setdefault(element.path, (ADDED, element, []))[2].append(bs)
            continue
        changes.append(_change(bs, ADDED, None, bs.value))
    _merge_required_lists(collapsed, good, bad, changes)
    for kind, element, inner in collapsed.values():
        doc = good.document if kind == REMOVED else bad.document
        value = resolve(doc, element.path)
        changes.append(
            Change(
                key=element.key,
                change=kind,
                good=value if kind == REMOVED else None,
                bad=value if kind == ADDED else None,
                category=element.category,
                path=element.path,
                secret=any(setting_is_secret(s.env_name, s.path) for s in inner),
                container=element.container,
            )
        )
    matcher = ignore_matcher(ignore)
    kept = [
        c
        for c in changes
        if (matcher is None or not matcher.match(c.key))
        and (container is None or c.container is None or c.container == container)
    ]
    kept.sort(key=lambda c: c.key)
    keys = [*(c.key for c in changes), *g.settings, *b.settings]
    warnings = [
        f"ignore pattern {glob!r} matches no setting of {good.source} or {bad.source} "
        f"(keys look like {_example_key(changes, glob)}; brackets are literal, `*` and `?` "
        "are the only wildcards)"
        for glob in unmatched_ignores(ignore, keys)
    ]
    return Comparison(kept, warnings)


def _example_key(changes: list[Change], glob: str) -> str:
    """A key to show next to a pattern that matched nothing: one sharing its longest
    literal start, else the first change's."""
    if not changes:
        return "containers[NAME].env.VAR"
    stem = re.split(r"[*?]", glob, maxsplit=1)[0]
    for size in range(len(stem), 0, -1):
        near = next((c.key for c in changes if c.key.startswith(stem[:size])), None)
        if near:
            return near
    return changes[0].key


def _merge_required_lists(
    collapsed: dict[tuple[Any, ...], tuple[str, Element, list[Setting]]],
    good: Spec,
    bad: Spec,
    changes: list[Change],
) -> None:
    """Replace every container (or replica type) being swapped out by one change.

    A pod needs at least one container: when all of good's containers are removed,
    applying the removals without the additions would leave none. So the removals
    and additions in that list become a single ``modified`` change of the list. The
    same holds for JobSet's replicatedJobs and a Kubeflow job's ``*ReplicaSpecs``.
    """
    by_list: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
    for path, (kind, _element, _inner) in collapsed.items():
        if len(path) >= 2 and kind == REMOVED and _required(path[-2]):
            by_list.setdefault(path[:-1], []).append(path)
    for list_path, removed in by_list.items():
        good_list = resolve(good.document, list_path)
        bad_list = resolve(bad.document, list_path)
        if not isinstance(good_list, list | dict) or len(removed) < len(good_list):
            continue
        if not bad_list:
            continue
        members = [p for p in collapsed if p[:-1] == list_path]
        inner = [s for p in members for s in collapsed[p][2]]
        element_key = collapsed[removed[0]][1].key
        if isinstance(good_list, dict):  # Kubeflow replica specs: keyed by their path
            key = ".".join(str(seg) for seg in list_path)
        else:
            key = element_key[: element_key.rfind("[")]
        for p in members:
            del collapsed[p]
        changes.append(
            Change(
                key=key,
                change=MODIFIED,
                good=good_list,
                bad=bad_list,
                category=OTHER,
                path=list_path,
                secret=any(setting_is_secret(s.env_name, s.path) for s in inner),
            )
        )


def _required(container_field: Any) -> bool:
    return container_field in REQUIRED_NONEMPTY or (
        isinstance(container_field, str) and container_field.endswith("ReplicaSpecs")
    )


def _new_element(
    path: tuple[Any, ...],
    mine: dict[tuple[Any, ...], Element],
    theirs: dict[tuple[Any, ...], Element],
) -> Element | None:
    """The outermost element around ``path`` that the other side does not have."""
    for i in range(1, len(path) + 1):
        prefix = path[:i]
        element = mine.get(prefix)
        if element is not None and prefix not in theirs:
            return element
    return None


def _change(
    setting: Setting,
    kind: str,
    good: Any,
    bad: Any,
    path: tuple[Any, ...] | None = None,
) -> Change:
    return Change(
        key=setting.key,
        change=kind,
        good=good,
        bad=bad,
        category=setting.category,
        path=path if path is not None else setting.path,
        secret=setting_is_secret(setting.env_name, setting.path),
        container=setting.container,
        env_name=setting.env_name,
    )


def _show(value: Any, width: int = 60) -> str:
    if value is None:
        return "(absent)"
    if isinstance(value, str) and (not value or value != value.strip()):
        return json.dumps(value)  # make empty and space-padded strings visible
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    text = text.replace("\n", "\\n")
    return text if len(text) <= width else text[: width - 3] + "..."


_MARKS = {MODIFIED: "~", ADDED: "+", REMOVED: "-"}


def render_table(changes: list[Change], good: str, bad: str, *, kind: str = "") -> str:
    """A readable table of ``changes`` grouped by category (values redacted)."""
    if not changes:
        return f"no differences between {good} and {bad}\n"
    from clusterbisect.settings import CATEGORIES

    noun = "change" if len(changes) == 1 else "changes"
    about = f" ({kind})" if kind else ""
    lines = [f"{len(changes)} {noun} between {good} and {bad}{about}", ""]
    by_category: dict[str, list[Change]] = {}
    for change in changes:
        by_category.setdefault(change.category, []).append(change)
    order = [c for c in CATEGORIES if c in by_category] + sorted(
        c for c in by_category if c not in CATEGORIES
    )
    width = min(60, max(len(c.key) for c in changes))
    for category in order:
        group = by_category[category]
        lines.append(f"{category} ({len(group)})")
        for change in group:
            shown = change.to_dict()
            lines.append(
                f"  {_MARKS.get(change.change, '?')} {change.key:<{width}}  "
                f"{_show(shown['good'])} -> {_show(shown['bad'])}"
            )
        lines.append("")
    lines.append("~ modified  + added  - removed")
    return "\n".join(lines) + "\n"


def diff_document(
    good: str,
    bad: str,
    kind: str,
    fmt: str,
    changes: list[Change],
    warnings: list[str] | None = None,
) -> dict[str, Any]:
    """What ``diff --json`` prints (and the ``diff`` tool returns) for two spec files."""
    return {
        "changes": [c.to_dict() for c in changes],
        "good": good,
        "bad": bad,
        "count": len(changes),
        "kind": kind,
        "format": fmt,
        "warnings": list(warnings or []),
    }
