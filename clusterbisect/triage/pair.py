"""The pair: a good and a bad job of the same workload, with the fewest differences,
whose differences include the culprit's candidates. Pure.

The bad job has every required token (the top suspect, and its partner when the two
interact); the good job has none of them. Both run the same workload and can be
compared by ``diff`` (same kind, pod templates laid out alike). Among those pairs,
the one whose settings differ under the fewest keys wins: the bisection that follows
then has the least to search.

Jobs with identical settings (values held by a single job aside) are one
configuration: distances are computed between configurations, the most common ones
first, at most ``max_configs`` on each side per workload.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from clusterbisect.triage.table import SettingsTable

MAX_CONFIGS = 300
# Pairs of configurations whose differing keys are counted (the closest by values).
_ROUGH = 200
# Pairs compared again with every value, single-job ones included.
_FINALISTS = 10


@dataclass(frozen=True)
class PairChoice:
    """Job indices of the good and the bad job, and how many keys differ."""

    good: int
    bad: int
    distance: int


def _has_all(table_masks: Sequence[int], j: int) -> bool:
    return all((m >> j) & 1 for m in table_masks)


def _has_none(table_masks: Sequence[int], j: int) -> bool:
    return not any((m >> j) & 1 for m in table_masks)


def choose_pair(
    table: SettingsTable,
    groups: Sequence[Hashable],
    good: Sequence[int],
    bad: Sequence[int],
    required: Sequence[int],
    *,
    max_configs: int = MAX_CONFIGS,
) -> PairChoice | None:
    """The closest (good, bad) pair within a group, or None when there is none.

    ``groups[j]`` says which jobs can be paired (the workload, kind and layout);
    ``good`` and ``bad`` are the candidate jobs; ``required`` the masks of the tokens
    the bad job must have and the good job must not.
    """
    key_ids: dict[str, int] = {}
    key_of = [key_ids.setdefault(t.key, len(key_ids)) for t in table.tokens]
    shared = [count >= 2 for count in table.counts()]
    bad_by_group: dict[Hashable, list[int]] = {}
    for j in bad:
        if _has_all(required, j):
            bad_by_group.setdefault(groups[j], []).append(j)
    good_by_group: dict[Hashable, list[int]] = {}
    for j in good:
        if groups[j] in bad_by_group and _has_none(required, j):
            good_by_group.setdefault(groups[j], []).append(j)
    best: PairChoice | None = None
    for group, bad_jobs in bad_by_group.items():
        good_jobs = good_by_group.get(group)
        if not good_jobs:
            continue
        bad_configs = _configs(table, bad_jobs, shared, max_configs)
        good_configs = _configs(table, good_jobs, shared, max_configs)
        # Values that differ (a modified key counts twice): a cheap, close proxy for the
        # keys that differ, which are counted for the closest pairs only.
        rough = sorted(
            (len(bad_config ^ good_config), good_job, bad_job, bad_config, good_config)
            for bad_config, bad_job in bad_configs
            for good_config, good_job in good_configs
        )[:_ROUGH]
        finalists = sorted(
            (len({key_of[t] for t in b ^ g}), good_job, bad_job)
            for _, good_job, bad_job, b, g in rough
        )
        for _, good_job, bad_job in finalists[:_FINALISTS]:
            full = set(table.job_tokens[good_job]) ^ set(table.job_tokens[bad_job])
            choice = PairChoice(good_job, bad_job, len({key_of[t] for t in full}))
            if best is None or (choice.distance, choice.good, choice.bad) < (
                best.distance,
                best.good,
                best.bad,
            ):
                best = choice
    return best


def _configs(
    table: SettingsTable, jobs: Sequence[int], shared: Sequence[bool], limit: int
) -> list[tuple[frozenset[int], int]]:
    """Distinct configurations of ``jobs`` (shared tokens only), the most common first,
    each with its first job."""
    first: dict[frozenset[int], int] = {}
    count: dict[frozenset[int], int] = {}
    for j in jobs:
        config = frozenset(t for t in table.job_tokens[j] if shared[t])
        first.setdefault(config, j)
        count[config] = count.get(config, 0) + 1
    ordered = sorted(first, key=lambda c: (-count[c], first[c]))
    return [(c, first[c]) for c in ordered[:limit]]
