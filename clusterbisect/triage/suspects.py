"""Suspects: the setting values that go with the failure, most suspicious first. Pure.

For every token of the settings table (a setting value, or a setting's absence) the
jobs analysed split four ways: with it or without it, failed (with the signature
being explained) or not. Fisher's exact test (one-sided) scores how unlikely that
many failures among the jobs with it would be by chance. Only tokens with a higher
failure rate with them than without are suspects.

Tokens with the same jobs always change together: no fleet can tell them apart, so
they are one suspect, a **bundle** (only a bisection can split it). The bundle is
named by one of its tokens (an image before env, pip, ...; a present value before an
absence); ``bundle`` lists the others.

A suspect is ``significant`` when its p-value passes a Bonferroni correction for the
number of distinct job sets tested (alpha 0.05 by default): the claim is never
stronger than what that many tests allow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from clusterbisect.settings import CATEGORIES
from clusterbisect.triage.stats import fisher_score
from clusterbisect.triage.table import SettingsTable, Token

ALPHA = 0.05


@dataclass(frozen=True)
class Suspect:
    """A token (or a bundle of tokens with the same jobs) and how it goes with the failure."""

    token: int  # the token that names the suspect
    bundle: tuple[int, ...]  # the other tokens with exactly the same jobs
    mask: int
    failed: int  # failed jobs with it
    total: int  # jobs with it
    failed_without: int
    total_without: int
    score: float
    significant: bool = False
    explained_by: int | None = None  # a stronger suspect whose failures these are

    @property
    def failure_rate(self) -> float:
        return self.failed / self.total if self.total else 0.0

    @property
    def rate_without(self) -> float:
        return self.failed_without / self.total_without if self.total_without else 0.0

    @property
    def tokens(self) -> tuple[int, ...]:
        """Every token of the suspect, the naming one first."""
        return (self.token, *self.bundle)


def _naming_order(token: Token) -> tuple[bool, int, str]:
    rank = CATEGORIES.index(token.category) if token.category in CATEGORIES else len(CATEGORIES)
    return (not token.present, rank, token.key)


def threshold(tests: int, alpha: float = ALPHA) -> float:
    """The score a p-value must reach to pass Bonferroni over ``tests`` tests."""
    return math.log10(max(tests, 1) / alpha)


def rank_suspects(
    table: SettingsTable,
    failed_mask: int,
    population: int | None = None,
    *,
    min_jobs: int = 2,
    alpha: float = ALPHA,
) -> tuple[list[Suspect], int]:
    """Suspects most suspicious first, and how many job sets were tested.

    ``population``: the mask of the jobs analysed (default: every job of the table);
    ``failed_mask``: those of them that failed with the signature being explained,
    every other one counts as not failed. Tokens held by fewer than ``min_jobs`` of
    the jobs analysed, or by all of them, say nothing and are not tested.
    """
    everyone = table.all_jobs if population is None else population
    n_jobs = everyone.bit_count()
    failed_mask &= everyone
    n_failed = failed_mask.bit_count()
    groups: dict[int, list[int]] = {}
    for tid, mask in enumerate(table.masks):
        groups.setdefault(mask & everyone, []).append(tid)
    suspects: list[Suspect] = []
    tested = 0
    for mask, tids in groups.items():
        total = mask.bit_count()
        if total < min_jobs or total >= n_jobs:
            continue
        tested += 1
        failed = (mask & failed_mask).bit_count()
        failed_without = n_failed - failed
        total_without = n_jobs - total
        if failed * total_without <= failed_without * total:
            continue  # the failure rate is not higher with it
        score = fisher_score(failed, total - failed, failed_without, total_without - failed_without)
        ordered = sorted(tids, key=lambda t: _naming_order(table.tokens[t]))
        suspects.append(
            Suspect(
                ordered[0],
                tuple(ordered[1:]),
                mask,
                failed,
                total,
                failed_without,
                total_without,
                score,
            )
        )
    bar = threshold(tested, alpha)
    suspects = [replace(s, significant=s.score >= bar) for s in suspects]
    suspects.sort(key=lambda s: (-s.score, -s.failure_rate, -s.total, table.tokens[s.token].key))
    return suspects, tested


def explain_away(
    suspects: list[Suspect],
    failed_mask: int,
    population: int,
    partners: dict[int, int],
    tested: int,
    alpha: float = ALPHA,
) -> list[Suspect]:
    """Keep significant only the suspects that stand on their own.

    Settings rolled out at the same time as the culprit go with the failure too. So,
    from the top down, each significant suspect is tested again among the jobs that
    have none of the suspects kept so far: if it is no longer significant there, its
    failures are those of a stronger suspect (``explained_by``). The top suspect is
    kept, and so is the partner of a kept suspect in an interaction (``partners``:
    suspect index -> partner index), which fails only with it.
    """
    bar = threshold(tested, alpha)
    kept: list[int] = []
    out = list(suspects)
    for i, suspect in enumerate(suspects):
        if not suspect.significant:
            continue
        if not kept or partners.get(i) in kept:
            kept.append(i)
            continue
        rest = population
        for k in kept:
            rest &= ~suspects[k].mask
        mask, failed = suspect.mask & rest, failed_mask & rest
        total, n_jobs = mask.bit_count(), rest.bit_count()
        a, n_failed = (mask & failed).bit_count(), failed.bit_count()
        enriched = a * (n_jobs - total) > (n_failed - a) * total
        score = (
            fisher_score(a, total - a, n_failed - a, n_jobs - total - (n_failed - a))
            if enriched
            else 0.0
        )
        if score >= bar:
            kept.append(i)
        else:
            overlap = max(
                kept, key=lambda k: (suspects[k].mask & suspect.mask & failed_mask).bit_count()
            )
            out[i] = replace(suspect, significant=False, explained_by=overlap)
    return out
