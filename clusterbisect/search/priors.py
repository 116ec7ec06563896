"""Priors over the changes: which ones a search tries first. Pure.

A strategy may be given one weight per change (by index), in [0, 1]: how strongly
outside evidence (a fleet triage's ranking, ``run --priors``) points at it; 0 means
no evidence either way. Weights only change the *order* in which a search looks at
the changes, never what it concludes: every culprit is still proven by probes and
confirmed both ways.

- :func:`ordered`: the changes heaviest first (equal weights by index), the order in
  which the bisection splits and the flake-aware search lays out its nested probes;
- :func:`top_tier`: the heaviest changes when they are at most half of them, the set
  the bisection's descent tries on its own first (a bundle, or an interacting pair,
  shares one weight, so it is tried whole);
- :func:`position_masses`: a prior probability per change for the flake-aware
  posterior, where a change without weight keeps a floor (the ranking can be wrong).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

# Prior mass of a change that no suspect names, relative to the top suspect's 1.0: the
# triage ranks the culprit first in most fleets, but not all (benchmarks/README.md).
FLOOR = 0.05


def normalized(weights: Sequence[float] | None) -> tuple[float, ...] | None:
    """The weights as a tuple, or None when none is positive (no prior at all)."""
    if not weights:
        return None
    clean = tuple(min(1.0, max(0.0, float(w))) for w in weights)
    return clean if any(w > 0.0 for w in clean) else None


def ordered(items: Iterable[int], weights: Sequence[float] | None) -> list[int]:
    """``items`` heaviest first, equal weights by index; by index without weights."""
    if weights is None:
        return sorted(items)
    return sorted(items, key=lambda i: (-weights[i], i))


def top_tier(items: Sequence[int], weights: Sequence[float] | None) -> list[int]:
    """The items of the highest positive weight (in ``items``' order), when they are at
    most half of ``items``; else [] (no weight, or a tier so large, such as a bundle
    that is most of the changes, that probing it alone would tell little: an even
    split of the ordered items starts with its members anyway)."""
    if weights is None or not items:
        return []
    top = max(weights[i] for i in items)
    tier = [i for i in items if weights[i] == top]
    return tier if top > 0.0 and 2 * len(tier) <= len(items) else []


def position_masses(order: Sequence[int], weights: Sequence[float] | None) -> list[float]:
    """A prior probability for each change of ``order`` (summing to 1): its weight plus
    :data:`FLOOR`, normalised; uniform without weights."""
    if not order:
        return []
    if weights is None:
        return [1.0 / len(order)] * len(order)
    raw = [weights[i] + FLOOR for i in order]
    total = sum(raw)
    return [r / total for r in raw]
