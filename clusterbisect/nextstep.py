"""What to run next when a bisection ends ``inconclusive``: the reason, and the command.

An inconclusive result is only useful with a way forward. The command is the
session's own ``run``, rebuilt from its options (``options.cli_words``) on its stored
inputs, with what the evidence asks for changed:

* the evidence contradicted itself, or the flake-aware search could not settle: the
  flake-aware search from the start, with more baseline runs to learn the rates;
* a budget ran out: the same search with twice the budget.

Secret-looking words of the workload command are hidden (``redact.secret_argv``).
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import Any

from clusterbisect.config import SessionConfig, SessionOptions
from clusterbisect.options import cli_words
from clusterbisect.redact import secret_argv
from clusterbisect.search.base import INCONCLUSIVE, SearchResult

FLAKY_BASELINE_RUNS = 6


def next_step(
    config: SessionConfig, search: SearchResult, good: Path, bad: Path
) -> dict[str, Any] | None:
    """``{"why", "command"}`` for an inconclusive search, None for any other end."""
    if search.status != INCONCLUSIVE:
        return None
    limits, searching = config.limits, config.search
    if any(note.startswith("stopped early") for note in search.notes):
        limits = dataclasses.replace(
            limits,
            max_probes=limits.max_probes * 2 if limits.max_probes else None,
            max_time=limits.max_time * 2 if limits.max_time else None,
        )
        why = "the budget ran out before a culprit was isolated: run again with twice the budget"
    else:
        runs = max(FLAKY_BASELINE_RUNS, searching.baseline_runs * 2 if searching.flaky else 0)
        searching = dataclasses.replace(searching, flaky=True, baseline_runs=runs)
        why = (
            "the runs do not settle the culprit: let the flake-aware search learn how "
            f"often the failure shows, from {runs} runs of each baseline"
        )
    return {"why": why, "command": shlex.join(_run_words(config, limits, searching, good, bad))}


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
