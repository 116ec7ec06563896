"""``clusterbisect cleanup``: stop and delete probes left on a cluster (or a local Ray)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from clusterbisect import backends
from clusterbisect.cli.common import echo, emit_json, json_option
from clusterbisect.errors import InputError
from clusterbisect.options import click_options, from_params

_CLEANABLE = backends.with_cleanup()


@click.command("cleanup")
@click.option("--session", "session_id", help="Only this session's leftovers.")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, exists=True),
    help="Only this session's leftovers, reached as it was run (a local Ray a killed "
    "run left included).",
)
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Every session's leftovers, without asking.",
)
@click.option(
    "--backend",
    type=click.Choice([b.name for b in _CLEANABLE]),
    help=f"Whose leftovers to delete (default: the session's, else {backends.CLEANUP_DEFAULT}).",
)
@click_options(*dict.fromkeys(b.cleanup_options for b in _CLEANABLE if b.cleanup_options))
@json_option
def cleanup_command(
    session_id: str | None,
    state_dir: str | None,
    everything: bool,
    backend: str | None,
    as_json: bool,
    **options: Any,
) -> None:
    """Stop and delete the probes clusterbisect left behind: Kubernetes Jobs, pods and
    ConfigMaps (found by label), Ray jobs (found by their metadata).

    Without --session or --state-dir, the cluster may hold other people's sessions:
    what would be deleted is listed and confirmed first (--all deletes without asking).
    """
    from clusterbisect import workflow

    where = Path(state_dir) if state_dir else None
    chosen = workflow.cleanup_backend(backend, where)
    assert chosen.cleanup_options is not None
    given = from_params(chosen.cleanup_options, options)
    one_session = bool(session_id or where)
    if one_session and everything:
        raise InputError("give --session (or --state-dir) or --all, not both", field="--all")
    if not one_session and not everything:
        plan = workflow.cleanup(chosen.name, None, given, dry_run=True)
        if any(plan["found"].values()) and not _confirmed(plan, as_json):
            raise InputError(
                f"{plan['summary']}; pass --session ID to delete one session's, or --all "
                "to delete every session's",
                field="--session",
            )
    report = workflow.cleanup(chosen.name, session_id, given, where)
    if as_json:
        emit_json(report)
    else:
        echo(report["summary"])


def _confirmed(plan: dict[str, Any], as_json: bool) -> bool:
    """Ask at a terminal; never when a program reads the output."""
    if as_json or not sys.stdin.isatty():
        return False
    click.echo(plan["summary"] + ".", err=True)
    return click.confirm("Delete them all?", default=False, err=True)
