"""Priors: how likely each change is to be the culprit, from a triage result.

``run --priors FILE`` reads a triage result, the ``--json`` document, and lets the
search try the likeliest changes first (``search/priors.py``). A weight is in
[0, 1]: the suspect's score over the top suspect's score. Every key of a bundle gets
its bundle's weight (no fleet can tell them apart), and the two suspects of a
significant interaction (they fail only together) both get the heavier one's, so the
search tries them together. A key that is no suspect weighs 0.

Keys are ``diff``'s keys. A change that adds or removes a whole element (a container,
a volume) is keyed by the element (``containers[sidecar]``) while the suspects name
its settings (``containers[sidecar].image``): such a change weighs as much as its
heaviest setting.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusterbisect.errors import InputError


@dataclass(frozen=True)
class Priors:
    """Weights by key (1.0 for the top suspect)."""

    weights: Mapping[str, float] = field(default_factory=dict)

    def weight(self, key: str) -> float:
        """The weight of a change key (an element's: that of its heaviest setting)."""
        exact = self.weights.get(key)
        if exact is not None:
            return exact
        inner = [w for k, w in self.weights.items() if k.startswith((f"{key}.", f"{key}["))]
        return max(inner, default=0.0)

    def order(self, keys: Iterable[str]) -> list[str]:
        """``keys`` by weight, heaviest first; equal weights keep their order."""
        listed = list(keys)
        return sorted(listed, key=lambda k: -self.weight(k))

    def rank(self, key: str) -> int | None:
        """1 for the heaviest suspect keys, 2 for the next weight, ...; None if no suspect."""
        mine = self.weight(key)
        if mine <= 0:
            return None
        return 1 + len({w for w in self.weights.values() if w > mine})

    def to_dict(self) -> dict[str, float]:
        return dict(sorted(self.weights.items(), key=lambda kv: (-kv[1], kv[0])))


def priors_from_result(document: Mapping[str, Any], source: str = "triage result") -> Priors:
    """The priors of a triage ``--json`` document. Raises ``InputError`` when it is not one."""
    suspects = document.get("suspects") if isinstance(document, Mapping) else None
    if not isinstance(suspects, list):
        raise InputError(
            "expected a triage result (clusterbisect triage --json) with a 'suspects' list",
            source=source,
            field="suspects",
        )
    scores: list[tuple[list[str], float]] = []
    for i, suspect in enumerate(suspects):
        if not isinstance(suspect, Mapping) or not isinstance(suspect.get("key"), str):
            raise InputError(
                "expected a suspect with a 'key'", source=source, field=f"suspects[{i}]"
            )
        score = suspect.get("score")
        if not isinstance(score, int | float) or score < 0:
            raise InputError(
                "expected a non-negative number", source=source, field=f"suspects[{i}].score"
            )
        bundle = suspect.get("bundle") or []
        if not isinstance(bundle, list) or not all(isinstance(k, str) for k in bundle):
            raise InputError(
                "expected a list of keys", source=source, field=f"suspects[{i}].bundle"
            )
        scores.append(([suspect["key"], *bundle], float(score)))
    top = max((score for _, score in scores), default=0.0)
    weights: dict[str, float] = {}
    for keys, score in scores:
        weight = score / top if top > 0 else 0.0
        for key in keys:
            weights[key] = max(weights.get(key, 0.0), weight)
    for keys in _interacting(document, source):
        heavier = max(weights.get(k, 0.0) for k in keys)
        for key in keys:
            weights[key] = heavier
    return Priors(weights)


def _interacting(document: Mapping[str, Any], source: str) -> list[list[str]]:
    """The key pairs of the significant interactions (an older result may have none)."""
    found = document.get("interactions") or []
    if not isinstance(found, list):
        raise InputError("expected a list", source=source, field="interactions")
    pairs = []
    for i, item in enumerate(found):
        keys = item.get("keys") if isinstance(item, Mapping) else None
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise InputError(
                "expected an interaction with 'keys'", source=source, field=f"interactions[{i}]"
            )
        if item.get("significant"):
            pairs.append(list(keys))
    return pairs


def load_priors(path: str) -> Priors:
    """Read a triage result file (``triage --json > FILE``) as priors (the edge)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("file not found", source=path) from None
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read file ({err})", source=path) from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(
            f"invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}", source=path
        ) from None
    return priors_from_result(document, path)
