"""What to run next when a bisection ends ``inconclusive``: the reason, and the command.

An inconclusive result is only useful with a way forward. The command is the
session's own ``run``, rebuilt from its options (``options.cli_words``) on its stored
inputs, with what the evidence asks for changed:

* the evidence contradicted itself, or the flake-aware search could not settle: the
  flake-aware search from the start, with more baseline runs to learn the rates;
* a budget ran out: ``resume`` the session with a new budget (its probes are kept): the
  probes run plus the strategy's estimate of those to go, or twice the time.

Secret-looking words of the workload command are hidden (``redact.secret_argv``).
"""

from __future__ import annotations

import dataclasses
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusterbisect.config import SessionConfig, SessionOptions
from clusterbisect.options import cli_words
from clusterbisect.redact import secret_argv
from clusterbisect.search.base import INCONCLUSIVE, SearchResult

FLAKY_BASELINE_RUNS = 6
STOPPED_EARLY = "stopped early: "


@dataclass(frozen=True)
class Reached:
    """How far a session got: where it is, the probes it ran, the strategy's estimate of
    the probes to go (None when it has none)."""

    state_dir: Path
    probes_run: int
    to_go: int | None


def next_step(
    config: SessionConfig, search: SearchResult, good: Path, bad: Path, reached: Reached
) -> dict[str, Any] | None:
    """``{"why", "command"}`` for an inconclusive search, None for any other end."""
    if search.status != INCONCLUSIVE:
        return None
    limits, searching = config.limits, config.search
    stopped = [n[len(STOPPED_EARLY) :] for n in search.notes if n.startswith(STOPPED_EARLY)]
    if stopped:
        why = (
            f"{stopped[0]} before a culprit was isolated: resume the session with a new "
            "budget (the probes run so far are kept)"
        )
        return {"why": why, "command": shlex.join(resume_words(config, stopped[0], reached))}
    runs = max(FLAKY_BASELINE_RUNS, searching.baseline_runs * 2 if searching.flaky else 0)
    searching = dataclasses.replace(searching, flaky=True, baseline_runs=runs)
    why = (
        "the runs do not settle the culprit: let the flake-aware search learn how "
        f"often the failure shows, from {runs} runs of each baseline"
    )
    return {"why": why, "command": shlex.join(_run_words(config, limits, searching, good, bad))}


def resume_words(config: SessionConfig, why: str, reached: Reached) -> list[str]:
    """``clusterbisect resume`` with a budget past the one ``why`` says is spent: twice
    the time, or the probes run plus the estimate of those to go (``--max-probes``
    counts every probe of the session)."""
    words = ["clusterbisect", "resume", str(reached.state_dir)]
    if "time" in why and config.limits.max_time:
        return [*words, "--max-time", f"{config.limits.max_time * 2:g}"]
    to_go = reached.to_go or 10
    return [*words, "--max-probes", str(reached.probes_run + max(to_go, 1))]


def _run_words(
    config: SessionConfig, limits: Any, searching: Any, good: Path, bad: Path
) -> list[str]:
    words = ["clusterbisect", "run", str(good), str(bad)]
    words += cli_words(SessionOptions(backend=config.backend))  # unless the default
    for group in (config.scope, config.signature, limits, searching, config.backend_options):
        words += cli_words(group)
    if config.command:
        words += ["--", *secret_argv(list(config.command))]
    return words
