"""``clusterbisect exec``: run a step-mode probe here, with its real environment.

An agent driving a bisection step by step must be able to run a probe whose settings
hold secrets without reading them. ``exec`` runs a command (default: the session's
workload) as a process on this machine with the probe's environment, secrets real,
exactly as ``run`` would on the local backend; its output goes to the probe's log
(mode 0600) and what the session's failure signature makes of it is journaled, as for
the runner's own probes. Only the outcome and the scrubbed observation are shown.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from clusterbisect import backends
from clusterbisect.errors import InputError
from clusterbisect.runners.base import RunnerContext
from clusterbisect.stepmode import Position, next_view, pending_index, recorded_view, with_position
from clusterbisect.workflow import Bisection, runner_context


def exec_probe(
    bisection: Bisection, probe: str | None = None, command: list[str] | None = None
) -> dict[str, Any]:
    """Run a pending probe (default: the first) as a process on this machine, with its
    real environment, and journal what the session's failure signature makes of it;
    then show the next probe.

    ``command`` is the argv to run (default: the session's workload). The probe's
    environment is the one ``run`` would give it on this machine: this process's,
    without the variables the changes touch, plus the probe's spec's (secrets real).
    Nothing of it is shown; its output is kept in the probe's log (mode 0600).
    """

    def _exec(position: Position) -> dict[str, Any]:
        if position.done:
            raise InputError(
                "the bisection is complete; nothing is pending (see `clusterbisect status`)",
                source=str(position.session.state_dir),
            )
        index = pending_index(position, probe)
        request, number = position.pending[index], position.pending_numbers()[index]
        session, engine = position.session, position.engine
        made = engine.make_probe(request, number)
        argv = list(command or made.command or [])
        if not argv:
            raise InputError(
                "give the command to run after `--` (the session has no workload)",
                field="command",
            )
        made = dataclasses.replace(made, command=argv)
        runner = backends.exec_runner(_exec_context(position), session.config.backend_options)
        try:
            [run] = runner.run([made])
        finally:
            runner.close()
        log = str(made.log_path.relative_to(session.state_dir)) if made.log_path.exists() else None
        entry = engine.record_manual(
            request.subset,
            engine.signature.classify(run),
            request.purpose,
            log=log,
            run=run,
            number=number,
            source="exec",
        )
        return recorded_view(session, entry, "signature")

    with bisection.session.locked("exec"):
        recorded = with_position(bisection, _exec)
        return {**recorded, "next": next_view(bisection)}


def _exec_context(position: Position) -> RunnerContext:
    """The session's runner context (its failure signature, its redactor...), for one
    process on this machine with files of its own."""
    session = position.session
    return dataclasses.replace(
        runner_context(position.bisection),
        parallel=1,
        dry_run=None,
        private_dir=session.private_dir("exec"),
    )
