"""``clusterbisect cleanup``: delete probe objects left on a cluster."""

from __future__ import annotations

import sys
from typing import Any

import click

from clusterbisect import backends
from clusterbisect.cli.common import emit_json, json_option
from clusterbisect.errors import InputError
from clusterbisect.options import click_options, from_params

_CLEANABLE = backends.with_cleanup()


@click.command("cleanup")
@click.option("--session", "session_id", help="Only this session's objects.")
@click.option(
    "--all",
    "everything",
    is_flag=True,
    help="Every session's objects in the namespace, without asking.",
)
@click.option(
    "--backend",
    type=click.Choice([b.name for b in _CLEANABLE]),
    default=_CLEANABLE[0].name,
    show_default=True,
    help="Whose leftovers to delete.",
)
@click_options(*{b.cleanup_options for b in _CLEANABLE if b.cleanup_options})
@json_option
def cleanup_command(
    session_id: str | None, everything: bool, backend: str, as_json: bool, **options: Any
) -> None:
    """Delete probe Jobs, pods and ConfigMaps left behind (found by label).

    Without --session, the namespace may hold other people's sessions: what would be
    deleted is listed and confirmed first (--all deletes without asking).
    """
    chosen = backends.get(backend)
    assert chosen.cleanup_options is not None
    connection = from_params(chosen.cleanup_options, options)
    if session_id and everything:
        raise InputError("give --session or --all, not both", field="--all")
    if not session_id and not everything:
        plan = backends.cleanup(backend, None, connection, dry_run=True)
        found = plan["found"]
        if not any(found.values()):
            everything = True  # nothing to delete: say so below
        elif not _confirmed(plan, as_json):
            raise InputError(
                f"{_summary(plan)}; pass --session ID to delete one session's, or --all "
                "to delete every session's",
                field="--session",
            )
    report = backends.cleanup(backend, session_id, connection)
    if as_json:
        emit_json(report)
        return
    deleted = report["deleted"]
    click.echo(
        f"Namespace {report['namespace']}: deleted {len(deleted['jobs'])} job(s), "
        f"{len(deleted['pods'])} orphaned pod(s), {len(deleted['configmaps'])} configmap(s) "
        f"matching {report['selector']}."
    )


def _summary(plan: dict[str, Any]) -> str:
    found = plan["found"]
    sessions = plan["sessions"]
    return (
        f"namespace {plan['namespace']} holds {len(found['jobs'])} probe job(s), "
        f"{len(found['pods'])} orphaned pod(s) and {len(found['configmaps'])} configmap(s) "
        f"of {len(sessions)} session(s): {', '.join(sessions[:10])}"
        + (" ..." if len(sessions) > 10 else "")
    )


def _confirmed(plan: dict[str, Any], as_json: bool) -> bool:
    """Ask at a terminal; never when a program reads the output."""
    if as_json or not sys.stdin.isatty():
        return False
    click.echo(_summary(plan) + ".", err=True)
    return click.confirm("Delete them all?", default=False, err=True)
