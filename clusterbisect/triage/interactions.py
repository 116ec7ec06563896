"""Interactions: two suspects that fail only together. Pure.

For two suspects A and B, the jobs with both are compared with the jobs with only A
and with only B. If the jobs with both fail significantly more often than either
group with one of them (Fisher's exact test, Bonferroni over the pairs tested), the
pair is an interaction: a bisection must apply both to reproduce the failure.

A single culprit A paired with anything is not an interaction: the jobs with A alone
fail as often as those with both. Nor is a pair whose jobs with one of them alone fail
more than half as often as those with both: significant or not, that is not "only
together".
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from clusterbisect.triage.stats import fisher_score
from clusterbisect.triage.suspects import ALPHA, Suspect, threshold

# "Fails only together": with one of the two alone, at most half as often as with both
# (a pair that only adds a little to a culprit's rate is no interaction).
ALONE_AT_MOST = 0.5


@dataclass(frozen=True)
class Group:
    """Failed jobs and total jobs in one group of a pair check."""

    failed: int
    total: int

    @property
    def rate(self) -> float:
        return self.failed / self.total if self.total else 0.0


@dataclass(frozen=True)
class Interaction:
    """Two suspects (indices into the ranked list) and the four groups of jobs."""

    first: int
    second: int
    both: Group
    first_only: Group
    second_only: Group
    neither: Group
    score: float  # the weaker of the two comparisons, as -log10(p)
    significant: bool


def _group(mask: int, failed_mask: int) -> Group:
    return Group((mask & failed_mask).bit_count(), mask.bit_count())


def _score(both: Group, alone: Group) -> float:
    return fisher_score(
        both.failed, both.total - both.failed, alone.failed, alone.total - alone.failed
    )


def find_interactions(
    suspects: Sequence[Suspect],
    failed_mask: int,
    all_jobs: int,
    *,
    top: int = 5,
    alpha: float = ALPHA,
) -> list[Interaction]:
    """Check every pair of the ``top`` suspects; significant interactions first."""
    pairs = list(itertools.combinations(range(min(top, len(suspects))), 2))
    bar = threshold(2 * len(pairs), alpha)
    found = []
    for i, j in pairs:
        a, b = suspects[i].mask, suspects[j].mask
        both = _group(a & b, failed_mask)
        first_only = _group(a & ~b, failed_mask)
        second_only = _group(b & ~a, failed_mask)
        neither = _group(all_jobs & ~(a | b), failed_mask)
        score = min(_score(both, first_only), _score(both, second_only))
        only_together = max(first_only.rate, second_only.rate) <= both.rate * ALONE_AT_MOST
        significant = score >= bar and only_together
        found.append(Interaction(i, j, both, first_only, second_only, neither, score, significant))
    found.sort(key=lambda x: (not x.significant, -x.score, x.first, x.second))
    return found


def partners(interactions: Sequence[Interaction]) -> dict[int, int]:
    """Each suspect's partner: significant interactions, strongest first, each suspect
    in one at most (a suspect that goes with a true pair looks like a weaker pair)."""
    matched: dict[int, int] = {}
    for x in interactions:
        if x.significant and x.first not in matched and x.second not in matched:
            matched[x.first], matched[x.second] = x.second, x.first
    return matched
