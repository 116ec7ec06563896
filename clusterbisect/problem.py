"""The bisection problem of a session: its specs, the changes, and which are searched.

Pure data. The changes are computed once per session (``workflow``); the backend's
runner says which of them it cannot apply; the rest is what the search works on, and
the strategies' indices refer to :attr:`Problem.testable`.
"""

from __future__ import annotations

from dataclasses import dataclass

from clusterbisect.diff import Change
from clusterbisect.errors import InputError
from clusterbisect.search.base import Subset
from clusterbisect.specs.model import Spec


@dataclass
class Problem:
    """The specs and the changes to search."""

    good: Spec
    bad: Spec
    changes: list[Change]  # every change, sorted by key
    testable: list[Change]  # the ones searched; strategy indices refer to this list
    untestable: dict[str, str]  # key -> why this backend cannot apply it

    @classmethod
    def split(
        cls,
        good: Spec,
        bad: Spec,
        changes: list[Change],
        untestable: dict[str, str],
        backend: str,
        instead: str = "choose another --backend",
    ) -> Problem:
        """The problem with the changes ``backend`` cannot apply left out.

        If it can apply none, that is bad input (searching nothing would read as
        "no differences"); ``instead`` says what to do (the backends that can).
        """
        testable = [c for c in changes if c.key not in untestable]
        if changes and not testable:
            key, why = next(iter(untestable.items()))
            raise InputError(
                f"none of the {len(changes)} changes can be applied on the {backend} "
                f"backend (e.g. {key}: {why}); {instead}",
                source=good.source,
            )
        return cls(good, bad, changes, testable, untestable)

    def subset_keys(self, subset: Subset) -> list[str]:
        return sorted(self.testable[i].key for i in subset)

    def subset_changes(self, subset: Subset) -> list[Change]:
        return [self.testable[i] for i in sorted(subset)]

    @property
    def env_names(self) -> tuple[str, ...]:
        """The environment variables any change touches (a probe unsets those its spec
        does not set)."""
        return tuple(sorted({c.env_name for c in self.changes if c.env_name}))

    def untestable_list(self) -> list[dict[str, str]]:
        """The untestable changes as the JSON documents show them."""
        return [{"key": k, "reason": r} for k, r in sorted(self.untestable.items())]
