"""Baseline culprit searches on the same Strategy protocol, for side-by-side benchmarks.

* :class:`OneAtATime`: the incident's own method, one change per probe.
* :class:`PlainBisection`: textbook K-ary bisection that trusts every outcome, with no
  confirmation and no flake handling (git bisect's descent).
* :class:`Ddmin`: Zeller's ddmin (2002), each test repeated a fixed number of times
  and read as a failure if any run failed.
* :func:`run_picire`: the real ``picire`` package's ddmin (an optional extra), driven
  against the simulated oracle through its own API. It does not fit the generator
  protocol (it calls the test itself), so it has its own driver with the engine's cache
  rule: an identical probe is never run twice.

All strategies are pure generators like :mod:`clusterbisect.search`; none does I/O.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

from clusterbisect.outcome import Outcome
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
from clusterbisect.search.bisection import split
from clusterbisect.search.oracle import SimOracle, SimStats

Tests = Generator[list[ProbeRequest], list[ProbeAnswer], list[Outcome]]


def _request(subset: Subset, repeats: int, purpose: str = "search") -> ProbeRequest:
    return ProbeRequest(subset, runs=repeats if repeats > 1 else None, purpose=purpose)


Status = Generator[list[ProbeRequest], list[ProbeAnswer], str | None]


def _baselines(n: int, repeats: int) -> Status:
    """Run both baselines; the failing status, or None when they are as expected."""
    good, bad = yield [
        _request(frozenset(), repeats, "baseline-good"),
        _request(frozenset(range(n)), repeats, "baseline-bad"),
    ]
    if good.outcome is not Outcome.PASS:
        return BASELINE_FAILED
    if bad.outcome is not Outcome.FAIL:
        return NOT_REPRODUCIBLE
    return None


class OneAtATime:
    """Probe every change alone; every change whose probe fails is a culprit."""

    name = "one-at-a-time"

    def __init__(self, parallel: int = 1, repeats: int = 1) -> None:
        self.k = max(1, parallel)
        self.repeats = max(1, repeats)
        self._left = 0

    def candidates(self) -> list[Subset]:
        return []

    def remaining_estimate(self) -> int | None:
        return self._left

    def search(self, n: int) -> Search:
        if n == 0:
            return SearchResult(NO_DIFFERENCES)
        status = yield from _baselines(n, self.repeats)
        if status:
            return SearchResult(status)
        found: list[Culprit] = []
        for start in range(0, n, self.k):
            chunk = range(start, min(n, start + self.k))
            self._left = n - start
            answers = yield [_request(frozenset({i}), self.repeats) for i in chunk]
            found += [
                Culprit(frozenset({i}))
                for i, a in zip(chunk, answers, strict=False)
                if a.outcome is Outcome.FAIL
            ]
        if not found:
            return SearchResult(INCONCLUSIVE, notes=["no change fails alone"])
        return SearchResult(FOUND, culprits=found)


class PlainBisection:
    """K-ary bisection that believes every outcome: split into K+1 parts, probe K of
    them, descend into the first that fails, else into the untested part."""

    name = "plain-bisection"

    def __init__(self, parallel: int = 1) -> None:
        self.k = max(1, parallel)
        self._current: list[int] = []

    def candidates(self) -> list[Subset]:
        return [frozenset(self._current)] if self._current else []

    def remaining_estimate(self) -> int | None:
        return None

    def search(self, n: int) -> Search:
        if n == 0:
            return SearchResult(NO_DIFFERENCES)
        status = yield from _baselines(n, 1)
        if status:
            return SearchResult(status)
        self._current = list(range(n))
        while len(self._current) > 1:
            parts = split(self._current, self.k + 1)
            answers = yield [ProbeRequest(frozenset(p)) for p in parts[:-1]]
            failing = [
                p for p, a in zip(parts[:-1], answers, strict=True) if a.outcome is Outcome.FAIL
            ]
            self._current = failing[0] if failing else parts[-1]
        return SearchResult(FOUND, culprits=[Culprit(frozenset(self._current))])


class Ddmin:
    """Zeller's ddmin with ``repeats`` runs per test (a failure if any run fails).

    Tests of one step are asked ``parallel`` at a time; the first failing one wins,
    as in the serial algorithm.
    """

    name = "ddmin"

    def __init__(self, parallel: int = 1, repeats: int = 3) -> None:
        self.k = max(1, parallel)
        self.repeats = max(1, repeats)
        self._config: list[int] = []

    def candidates(self) -> list[Subset]:
        return [frozenset(self._config)] if self._config else []

    def remaining_estimate(self) -> int | None:
        return None

    def _first_failing(
        self, configs: list[list[int]]
    ) -> Generator[list[ProbeRequest], list[ProbeAnswer], list[int] | None]:
        for start in range(0, len(configs), self.k):
            chunk = configs[start : start + self.k]
            answers = yield [_request(frozenset(c), self.repeats) for c in chunk]
            for config, answer in zip(chunk, answers, strict=False):
                if answer.outcome is Outcome.FAIL:
                    return config
        return None

    def search(self, n: int) -> Search:
        if n == 0:
            return SearchResult(NO_DIFFERENCES)
        status = yield from _baselines(n, self.repeats)
        if status:
            return SearchResult(status)
        config, granularity = list(range(n)), 2
        self._config = config
        while len(config) >= 2:
            subsets = split(config, granularity)
            found = yield from self._first_failing(subsets)
            if found is not None:
                config, granularity = found, 2
                self._config = config
                continue
            if granularity > 2:
                complements = [[c for c in config if c not in ss] for ss in map(set, subsets)]
                found = yield from self._first_failing(complements)
                if found is not None:
                    config, granularity = found, max(granularity - 1, 2)
                    self._config = config
                    continue
            if granularity >= len(config):
                break
            granularity = min(len(config), 2 * granularity)
        return SearchResult(FOUND, culprits=[Culprit(frozenset(config))])


@dataclass
class PicireRun:
    """The outcome of one picire reduction (same fields the benchmark reads)."""

    stats: SimStats
    error: str | None = None


def picire_available() -> bool:
    try:
        import picire  # noqa: F401
    except ImportError:
        return False
    return True


def run_picire(n: int, oracle: SimOracle, repeats: int = 1) -> PicireRun:
    """Reduce ``range(n)`` with picire's serial ddmin (``picire.DD``) against ``oracle``.

    Baselines first, as for every strategy. Each distinct configuration is tested once
    (``repeats`` runs, a failure if any fails) and cached, like the engine does. picire
    asserts that each iteration's configuration still fails; a flaky oracle can break
    that assertion, which is reported as an error (a wrong answer), not hidden.
    """
    import picire

    cache: dict[Subset, bool] = {}
    probes = 0

    def fails(subset: Subset) -> bool:
        nonlocal probes
        if subset not in cache:
            outcomes = [oracle.run(subset) for _ in range(repeats)]
            probes += repeats
            cache[subset] = Outcome.FAIL in outcomes
        return cache[subset]

    def test(config: list[int], _config_id: object) -> object:
        return picire.Outcome.FAIL if fails(frozenset(config)) else picire.Outcome.PASS

    def stats(result: SearchResult) -> SimStats:
        return SimStats(probes=probes, rounds=probes, result=result)

    if fails(frozenset()):
        return PicireRun(stats(SearchResult(BASELINE_FAILED)))
    if not fails(frozenset(range(n))):
        return PicireRun(stats(SearchResult(NOT_REPRODUCIBLE)))
    try:
        reduced = picire.DD(test)(list(range(n)))
    except AssertionError as exc:  # picire's own consistency check under flakiness
        return PicireRun(stats(SearchResult(INCONCLUSIVE, notes=["picire assertion"])), str(exc))
    return PicireRun(stats(SearchResult(FOUND, culprits=[Culprit(frozenset(reduced))])))
