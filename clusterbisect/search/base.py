"""The contract between search strategies and the engine that runs probes.

A strategy never does I/O. It is a generator: it yields a batch of
:class:`ProbeRequest` and receives, for each, a :class:`ProbeAnswer`. When done it
returns a :class:`SearchResult`. The engine (or the step-by-step mode, or a
benchmark's simulated oracle) answers the requests from its cache or by running
probes. Because strategies are deterministic functions of the answers, replaying a
journal through a fresh strategy reaches the same point: that is how resume works.

Changes are identified by their index in the session's sorted change list.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from clusterbisect.outcome import Outcome

Subset = frozenset[int]


@dataclass(frozen=True)
class ProbeRequest:
    """Run the good spec with ``subset`` of the changes applied.

    ``runs`` is None for a deterministic request: the engine answers with the first
    pass or fail it sees, retrying an unresolved run once. A flake-aware strategy sets
    ``runs`` to the number of runs it wants in total for this subset; the engine
    answers with all of them.
    """

    subset: Subset
    runs: int | None = None
    purpose: str = "search"  # baseline-good, baseline-bad, search, confirm, ...


@dataclass(frozen=True)
class ProbeAnswer:
    outcome: Outcome  # the deterministic verdict (first pass/fail, else unresolved)
    runs: tuple[Outcome, ...]  # every run of this subset so far, in order

    @property
    def fails(self) -> int:
        return sum(1 for o in self.runs if o is Outcome.FAIL)

    @property
    def passes(self) -> int:
        return sum(1 for o in self.runs if o is Outcome.PASS)


@dataclass
class Culprit:
    """A smallest set of changes that reproduces the failure on the good spec."""

    changes: Subset
    confidence: float = 1.0
    confirmed: bool = False
    evidence: dict[str, object] = field(default_factory=dict)


# Search statuses (the contract in DESIGN.md).
FOUND = "found"
NO_DIFFERENCES = "no_differences"
NOT_REPRODUCIBLE = "not_reproducible"
BASELINE_FAILED = "baseline_failed"
INCONCLUSIVE = "inconclusive"


@dataclass
class SearchResult:
    status: str
    culprits: list[Culprit] = field(default_factory=list)
    candidates: list[Subset] = field(default_factory=list)  # narrowest known, when cut short
    notes: list[str] = field(default_factory=list)
    estimates: dict[str, float] = field(default_factory=dict)  # e.g. p and q when flaky


Search = Generator[list[ProbeRequest], list[ProbeAnswer], SearchResult]


class Strategy(Protocol):
    """Chooses the next batch of probes from the outcomes so far."""

    @property
    def name(self) -> str:
        """A short name for reports (``bisection``, ``flaky``)."""
        ...

    def search(self, n: int) -> Search:
        """Search ``n`` changes (indices 0..n-1), yielding batches of requests."""
        ...

    def candidates(self) -> list[Subset]:
        """The narrowest candidate sets known right now (for a result cut short)."""
        ...

    def remaining_estimate(self) -> int | None:
        """Estimated probes still to go, for progress output; None if unknown."""
        ...

    def candidates_left(self) -> int | None:
        """How many changes may still be the culprit, for progress output; None if unknown."""
        ...

    def last_turn(self) -> str | None:
        """Why the search last widened its candidates again (a guess that did not
        confirm, another culprit to find, a hand-over), for progress output; None
        while it has only narrowed."""
        ...


# --- answering requests from runs (shared by the engine and the simulated oracle) ---

# A deterministic request is answered by its first pass or fail; an unresolved run is
# retried this many times before the strategy is told "unresolved".
UNRESOLVED_RETRIES = 1


def answer_from(request: ProbeRequest, outcomes: Sequence[Outcome]) -> ProbeAnswer | None:
    """The answer ``outcomes`` (the runs of the request's subset so far) give, if any.

    The answer holds exactly the runs that decided it: the first ``runs`` of them, or
    the runs up to the first pass or fail. Later runs of the same subset (asked for by
    a later request) are not shown, so replaying a journal gives every request the
    answer it had when it was first answered, and a resumed search retraces its steps.
    """
    runs = tuple(outcomes)
    if request.runs is not None:
        if len(runs) < request.runs:
            return None
        runs = runs[: request.runs]
        return ProbeAnswer(summary(runs), runs)
    for index, outcome in enumerate(runs):
        if outcome is not Outcome.UNRESOLVED:
            return ProbeAnswer(outcome, runs[: index + 1])
    if len(runs) > UNRESOLVED_RETRIES:
        return ProbeAnswer(Outcome.UNRESOLVED, runs[: UNRESOLVED_RETRIES + 1])
    return None


def runs_needed(request: ProbeRequest, outcomes: Sequence[Outcome]) -> int:
    """How many more runs the request needs before it can be answered."""
    if answer_from(request, outcomes) is not None:
        return 0
    return 1 if request.runs is None else request.runs - len(outcomes)


def runs_to_start(
    pending: Sequence[ProbeRequest], outcomes_of: Callable[[Subset], Sequence[Outcome]]
) -> list[ProbeRequest]:
    """One entry per run to start now; a subset asked for twice is run once."""
    wanted: list[ProbeRequest] = []
    seen: set[Subset] = set()
    for request in pending:
        if request.subset not in seen:
            seen.add(request.subset)
            wanted.extend([request] * runs_needed(request, outcomes_of(request.subset)))
    return wanted


def summary(outcomes: Sequence[Outcome]) -> Outcome:
    """Repeated runs in one word: fail if any run failed, else pass if any passed."""
    if Outcome.FAIL in outcomes:
        return Outcome.FAIL
    if Outcome.PASS in outcomes:
        return Outcome.PASS
    return Outcome.UNRESOLVED
