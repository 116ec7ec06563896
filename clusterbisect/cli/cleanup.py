"""``clusterbisect cleanup``: stop and delete probes left on a cluster (or a local Ray)."""

from __future__ import annotations

from typing import Any

import click

from clusterbisect import backends
from clusterbisect.cli.common import emit_json, json_option
from clusterbisect.options import click_options, from_params

_CLEANABLE = backends.with_cleanup()


@click.command("cleanup")
@click.option("--session", "session_id", help="Only this session's leftovers (default: all).")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, exists=True),
    help="Only this session's leftovers, reached as it was run (a local Ray a killed "
    "run left included).",
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
    backend: str | None,
    as_json: bool,
    **options: Any,
) -> None:
    """Stop and delete the probes clusterbisect left behind: Kubernetes Jobs, pods and
    ConfigMaps (found by label), Ray jobs (found by their metadata)."""
    from pathlib import Path

    from clusterbisect import workflow

    where = Path(state_dir) if state_dir else None
    chosen = workflow.cleanup_backend(backend, where)
    assert chosen.cleanup_options is not None
    given = from_params(chosen.cleanup_options, options)
    report = workflow.cleanup(chosen.name, session_id, given, where)
    if as_json:
        emit_json(report)
    elif "summary" in report:
        click.echo(report["summary"])
    else:
        deleted = report["deleted"]
        click.echo(
            f"Namespace {report['namespace']}: deleted {len(deleted['jobs'])} job(s), "
            f"{len(deleted['pods'])} orphaned pod(s), {len(deleted['configmaps'])} "
            f"configmap(s) matching {report['selector']}."
        )
