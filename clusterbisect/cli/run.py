"""``run``, ``resume`` and ``report``: whole bisections and their reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from clusterbisect.cli.common import (
    echo,
    emit_json,
    exit_for,
    json_option,
    progress,
    quiet_option,
    require_workload,
    session_config,
    session_options,
    show_result,
    warn,
)
from clusterbisect.config import BUDGET, RUN_GROUPS, LimitOptions
from clusterbisect.options import click_options, from_params


@click.command(context_settings={"ignore_unknown_options": False})
@click.argument("good")
@click.argument("bad")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@session_options(*RUN_GROUPS)
@json_option
@quiet_option
def run(
    good: str, bad: str, command: tuple[str, ...], as_json: bool, quiet: bool, **options: Any
) -> None:
    """Bisect the changes between GOOD and BAD by running probes.

    The probe workload follows `--`: clusterbisect run good.yaml bad.yaml -- python train.py
    """
    from clusterbisect import workflow

    require_workload(options["backend"], command, options["dry_run"])
    config, state_dir = session_config(good, bad, command, options)
    with workflow.new_session(config, state_dir) as bisection:
        warn(bisection.warnings)
        if not config.dry_run:
            exit_for(workflow.run_session(bisection, progress(quiet), show_result(as_json)))
            return
        plan = workflow.dry_run(bisection)
    if as_json:
        emit_json(plan)
    else:
        _print_plan(plan)


@click.command()
@click.argument("state_dir", type=click.Path(file_okay=False))
@click_options(LimitOptions, only=BUDGET)
@json_option
@quiet_option
def resume(state_dir: str, as_json: bool, quiet: bool, **options: Any) -> None:
    """Continue an interrupted session without re-running finished probes.

    What the interrupted run left behind (probe jobs still on a cluster, a local Ray)
    is stopped and deleted first. --max-probes and --max-time give a session its
    budget stopped a new one (kept for later resumes): --max-probes counts every probe
    of the session.
    """
    from clusterbisect import workflow

    bisection = workflow.Bisection.open(Path(state_dir))
    budget = from_params(LimitOptions, options)
    warn(bisection.warnings)
    exit_for(workflow.resume_session(bisection, progress(quiet), show_result(as_json), budget))


@click.command()
@click.argument("state_dir", type=click.Path(file_okay=False))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "markdown", "json"]),
    default="text",
    show_default=True,
)
def report(state_dir: str, fmt: str) -> None:
    """Render a finished session's report again."""
    from clusterbisect import report as reporting
    from clusterbisect.errors import InputError
    from clusterbisect.session import Session

    result = Session.open(Path(state_dir)).read_result()
    if result is None:
        raise InputError(
            "has no result yet; finish it with `clusterbisect resume`", source=state_dir
        )
    if fmt == "json":
        emit_json(result)
    elif fmt == "markdown":
        echo(reporting.render_markdown(result), nl=False)
    else:
        echo(reporting.render_text(result))


def _print_plan(plan: dict[str, Any]) -> None:
    from clusterbisect.report import fidelity_lines

    echo(
        f"Dry run on the {plan['backend']} backend: {plan['changes_searched']} of "
        f"{plan['changes_total']} changes searchable; nothing was launched."
    )
    for probe in plan["plan"]:
        echo(
            f"  {probe['id']} {probe['purpose']:<14} {len(probe['subset']):>4} changes"
            f"  -> {probe['manifest']}"
        )
    for item in plan["untestable"]:
        echo(f"  untestable: {item['key']}: {item['reason']}")
    for line in fidelity_lines(plan.get("fidelity") or {}):
        echo(f"  {line}")
    echo(f"State: {plan['state_dir']}")
