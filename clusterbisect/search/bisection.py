"""Deterministic culprit search: K-ary bisection with interaction and unresolved handling.

The strategy combines three published ideas:

* an optimistic descent, like ``git bisect``: split the failing set into K+1 parts,
  probe K of them, and when none fails assume the culprit is in the untested part.
  One culprit among n changes costs ceil(log_(K+1) n) rounds;
* the careful search of Go's ``x/tools/cmd/bisect`` when the descent's guess does not
  confirm: probe every part, and when no part fails alone, the culprit needs settings
  from several parts, so find the part of it in A with all of B forced on, then the
  part in B with that forced on (an AND-set);
* Zeller's dd for unresolved outcomes: a part whose probe is unresolved is split
  finer instead of being read as pass or fail.

Every culprit is confirmed both ways (good + culprit fails, bad - culprits passes);
when bad without the culprits still fails, the search goes on to the next culprit.

With **priors** (a weight per change, ``search/priors.py``) the changes are ordered
heaviest first, so every split puts the likeliest in the probed parts, and each
descent first probes the heaviest tier on its own (the top suspect; a bundle or an
interacting pair whole). When the priors are right, that one probe is also the
confirmation's good + culprit, and one culprit costs the two baselines, that probe
and bad - culprit. When they are wrong, it costs one probe more than without them.
If a descent's guess does not confirm, the careful search starts from the narrowest
set seen failing rather than from all the changes. Without priors the search is
exactly as measured in benchmarks/README.md.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Iterable, Sequence

from clusterbisect.outcome import Outcome
from clusterbisect.search import priors
from clusterbisect.search.base import (
    BASELINE_FAILED,
    FOUND,
    INCONCLUSIVE,
    NO_DIFFERENCES,
    NOT_REPRODUCIBLE,
    Culprit,
    ProbeAnswer,
    ProbeRequest,
    Search,
    SearchResult,
    Subset,
)

# Sub-searches yield batches like a strategy and return their finding: a descent may
# give up (None), a careful search always names a set.
Descent = Generator[list[ProbeRequest], list[ProbeAnswer], Subset | None]
Careful = Generator[list[ProbeRequest], list[ProbeAnswer], Subset]


def split(items: Sequence[int], parts: int) -> list[list[int]]:
    """Split ``items`` into ``parts`` contiguous chunks, sizes differing by at most one."""
    parts = max(1, min(parts, len(items)))
    size, extra = divmod(len(items), parts)
    chunks, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        chunks.append(list(items[start:end]))
        start = end
    return chunks


class BisectionStrategy:
    """Find every minimal culprit set with as few probes (or rounds) as possible.

    ``parallel`` is K, the number of probes run at once: each round splits the
    candidates into K+1 parts. ``weights`` (one per change, in [0, 1]) are priors:
    the likeliest changes are tried first.
    """

    name = "bisection"

    # Probes that confirm a culprit: good + culprit, and bad - culprits.
    CONFIRM_PROBES = 2

    def __init__(self, parallel: int = 1, weights: Sequence[float] | None = None) -> None:
        self.k = max(1, parallel)
        self.weights = priors.normalized(weights)
        self._narrowest: Subset = frozenset()
        self._forced: Subset = frozenset()
        self._n = 0  # the changes searched
        self._baselines_left = 0  # baselines not yet answered
        self._turn: str | None = None  # why the candidates last grew again
        self._seen_failing: Subset | None = None  # the narrowest part seen failing

    # --- the Strategy protocol --------------------------------------------------

    def candidates(self) -> list[Subset]:
        """The narrowest set known to hold the culprit being searched (with what is forced)."""
        if not self._narrowest:
            return []
        return [self._narrowest | self._forced]

    def candidates_left(self) -> int | None:
        """The size of the narrowest set known to hold the culprit."""
        return len(self._narrowest) or None

    def last_turn(self) -> str | None:
        return self._turn

    def remaining_estimate(self) -> int | None:
        """Probes still to go for the culprit being searched: the baselines not yet
        run, the descent over the narrowest set known (all changes before it starts),
        and the confirmation."""
        size = len(self._narrowest) or self._n
        if size == 0:
            return None
        return self._baselines_left + self.probes_for(size)

    def probes_for(self, size: int) -> int:
        """Probes to isolate and confirm one culprit among ``size`` changes: a descent of
        ceil(log_(K+1) size) rounds of K probes, then the confirmation."""
        rounds = math.ceil(math.log(size, self.k + 1)) if size > 1 else 0
        return rounds * self.k + self.CONFIRM_PROBES

    def search(self, n: int) -> Search:
        if n == 0:
            return SearchResult(NO_DIFFERENCES)
        everything = frozenset(range(n))
        self._n, self._narrowest, self._baselines_left, self._turn = n, frozenset(), 2, None
        good, bad = yield [
            ProbeRequest(frozenset(), purpose="baseline-good"),
            ProbeRequest(everything, purpose="baseline-bad"),
        ]
        self._baselines_left = 0
        if good.outcome is not Outcome.PASS:
            return SearchResult(
                BASELINE_FAILED,
                notes=[f"the good spec without any change did not pass ({good.outcome.value})"],
            )
        if bad.outcome is not Outcome.FAIL:
            return SearchResult(
                NOT_REPRODUCIBLE,
                notes=[
                    "the good spec with all changes applied did not show the failure "
                    f"signature ({bad.outcome.value})"
                ],
            )
        return (yield from self._find_all(everything))

    # --- the search ---------------------------------------------------------------

    def _find_all(self, everything: Subset) -> Search:
        found: list[Culprit] = []
        notes: list[str] = []
        remaining = everything  # known to fail
        while True:
            guess = yield from self._descend(self._ordered(remaining))
            verdict = None
            if guess is not None:
                candidate = guess
                verdict = yield from self._confirm(candidate, found, everything)
            if verdict is None or verdict[0].outcome is not Outcome.FAIL:
                # The descent's guess did not hold: an interaction, or an unresolved
                # probe on the way. Search carefully; cached probes cost nothing.
                start = remaining
                if self.weights is not None and self._seen_failing:
                    start = self._seen_failing  # a part failed: the culprit is inside it
                self._turn = (
                    "the descent's guess did not fail on its own (an interaction, or an "
                    f"unresolved probe): searching all {len(start)} candidates part by part"
                    if guess is not None
                    else "an unresolved probe stopped the descent: searching all "
                    f"{len(start)} candidates part by part"
                )
                candidate = yield from self._careful(self._ordered(start), frozenset())
                verdict = yield from self._confirm(candidate, found, everything)
                if verdict[0].outcome is not Outcome.FAIL:
                    notes.append(
                        "the narrowest candidate did not reproduce the failure on its own "
                        f"({verdict[0].outcome.value})"
                    )
                    return SearchResult(
                        INCONCLUSIVE, culprits=found, candidates=[candidate, remaining], notes=notes
                    )
            _, rest_answer = verdict
            rest = everything.difference(*(c.changes for c in found), candidate)
            confirmed = rest_answer.outcome is not Outcome.UNRESOLVED
            found.append(
                Culprit(
                    changes=candidate,
                    confidence=1.0 if confirmed else 0.9,
                    confirmed=confirmed,
                    evidence={"good_plus_culprit": candidate, "bad_minus_culprits": rest},
                )
            )
            if rest_answer.outcome is Outcome.PASS:
                return SearchResult(FOUND, culprits=found, notes=notes)
            if rest_answer.outcome is Outcome.UNRESOLVED:
                notes.append(
                    "the bad spec without the culprits was unresolved: other culprits may exist"
                )
                return SearchResult(FOUND, culprits=found, notes=notes)
            remaining = rest  # still fails without the culprits found: search again
            self._turn = (
                f"culprit {len(found)} found, but the bad spec still fails without it: "
                f"searching the other {len(rest)} changes for another culprit"
            )

    def _confirm(
        self, candidate: Subset, found: list[Culprit], everything: Subset
    ) -> Generator[list[ProbeRequest], list[ProbeAnswer], tuple[ProbeAnswer, ProbeAnswer]]:
        rest = everything.difference(*(c.changes for c in found), candidate)
        culprit_answer, rest_answer = yield [
            ProbeRequest(candidate, purpose="confirm-good-plus-culprit"),
            ProbeRequest(rest, purpose="confirm-bad-minus-culprits"),
        ]
        return culprit_answer, rest_answer

    def _ordered(self, items: Iterable[int]) -> list[int]:
        return priors.ordered(items, self.weights)

    def _tier(self, current: list[int], first: bool) -> list[int]:
        """The heaviest tier of the priors, which a descent's first split probes alone."""
        return priors.top_tier(current, self.weights) if first else []

    def _split(self, current: list[int], tier: list[int]) -> list[list[int]]:
        """K+1 parts of ``current``, the ``tier`` (if any) the first of them."""
        if not tier:
            return split(current, self.k + 1)
        rest = [i for i in current if i not in set(tier)]
        return [tier, *split(rest, self.k)]

    def _descend(self, targets: list[int]) -> Descent:
        """Optimistic K-ary descent; None when an unresolved probe stops it, or when
        the priors' top tier fails and is small enough to probe each of its changes in
        one round (the careful search then tells one culprit from an interacting pair
        without a guess that might not confirm)."""
        self._forced = frozenset()
        self._seen_failing = None
        current = targets
        tier = self._tier(current, True)
        while len(current) > 1:
            self._narrowest = frozenset(current)
            parts = self._split(current, tier)
            answers = yield [ProbeRequest(frozenset(p)) for p in parts[:-1]]
            failing = [
                p for p, a in zip(parts[:-1], answers, strict=True) if a.outcome is Outcome.FAIL
            ]
            if failing:
                current = failing[0]
                self._seen_failing = frozenset(current)
                if current is tier and 1 < len(tier) <= self.k + 1:
                    return None
            elif any(a.outcome is Outcome.UNRESOLVED for a in answers):
                return None
            else:
                current = parts[-1]  # unverified until confirmation
            tier = []
        self._narrowest = frozenset(current)
        return frozenset(current)

    def _careful(self, targets: list[int], forced: Subset) -> Careful:
        """A smallest subset S of ``targets`` such that ``forced | S`` fails.

        Assumes ``forced | targets`` fails. Probes every part; splits unresolved parts
        finer; when no part fails alone, searches for the AND-set across halves.
        """
        self._narrowest, self._forced = frozenset(targets), forced
        if len(targets) == 1:
            return frozenset(targets)
        parts = split(targets, self.k + 1) if self.k > 1 else split(targets, 2)
        while True:
            answers = yield [ProbeRequest(forced | frozenset(p)) for p in parts]
            for part, answer in zip(parts, answers, strict=False):
                if answer.outcome is Outcome.FAIL:
                    return (yield from self._careful(part, forced))
            unresolved = [
                i
                for i, (p, a) in enumerate(zip(parts, answers, strict=False))
                if a.outcome is Outcome.UNRESOLVED and len(p) > 1
            ]
            if not unresolved:
                break
            refined: list[list[int]] = []
            for i, part in enumerate(parts):
                refined.extend(split(part, 2) if i in unresolved else [part])
            parts = refined
        # No part fails alone: the culprit spans parts. With more than two parts, a
        # half may still fail alone (the parts it joins interact), so ask first.
        middle = len(parts) // 2
        first = [i for p in parts[:middle] for i in p]
        second = [i for p in parts[middle:] for i in p]
        halves = yield [ProbeRequest(forced | frozenset(h)) for h in (first, second)]
        for half, answer in zip((first, second), halves, strict=False):
            if answer.outcome is Outcome.FAIL:
                return (yield from self._careful(half, forced))
        in_first = yield from self._careful(first, forced | frozenset(second))
        (alone,) = yield [ProbeRequest(forced | in_first)]
        if alone.outcome is Outcome.FAIL:
            return in_first
        self._turn = (
            f"the culprit needs changes from both halves (an interaction): its part in one "
            f"half is known, now finding its part among the other {len(second)}"
        )
        in_second = yield from self._careful(second, forced | in_first)
        return in_first | in_second
