"""``clusterbisect cleanup``: delete probe objects left on a cluster."""

from __future__ import annotations

from typing import Any

import click

from clusterbisect import backends
from clusterbisect.cli.common import echo, emit_json, json_option
from clusterbisect.options import click_options, from_params

_CLEANABLE = backends.with_cleanup()


@click.command("cleanup")
@click.option("--session", "session_id", help="Only this session's objects (default: all).")
@click.option(
    "--backend",
    type=click.Choice([b.name for b in _CLEANABLE]),
    default=_CLEANABLE[0].name,
    show_default=True,
    help="Whose leftovers to delete.",
)
@click_options(*{b.cleanup_options for b in _CLEANABLE if b.cleanup_options})
@json_option
def cleanup_command(session_id: str | None, backend: str, as_json: bool, **options: Any) -> None:
    """Delete probe Jobs, pods and ConfigMaps left behind (found by label)."""
    chosen = backends.get(backend)
    assert chosen.cleanup_options is not None
    report = backends.cleanup(backend, session_id, from_params(chosen.cleanup_options, options))
    if as_json:
        emit_json(report)
        return
    deleted = report["deleted"]
    echo(
        f"Namespace {report['namespace']}: deleted {len(deleted['jobs'])} job(s), "
        f"{len(deleted['pods'])} orphaned pod(s), {len(deleted['configmaps'])} configmap(s) "
        f"matching {report['selector']}."
    )
