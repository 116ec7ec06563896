"""``clusterbisect diff``: the changes between two specs."""

from __future__ import annotations

from typing import Any

import click

from clusterbisect.cli.common import echo, emit_json, json_option, warn
from clusterbisect.config import ScopeOptions
from clusterbisect.options import click_options, from_params


@click.command("diff")
@click.argument("good", metavar="GOOD")
@click.argument("bad", metavar="BAD")
@json_option
@click_options(ScopeOptions)
def diff_command(good: str, bad: str, as_json: bool, **options: Any) -> None:
    """List the settings that differ between a GOOD and a BAD job spec.

    Each spec is a Kubernetes object (kubectl get -o yaml works), a Ray job, an env
    dump or .env file, a pip freeze or a snapshot from probes/snapshot.py; the
    format is recognised from the content. Secret values are redacted.
    """
    from clusterbisect.diff import compare, diff_document, render_table
    from clusterbisect.redact import Redactor, register
    from clusterbisect.specs import load_specs

    scope = from_params(ScopeOptions, options)
    good_spec, bad_spec = load_specs([good, bad])
    register(Redactor.of_specs([good_spec, bad_spec]))
    found = compare(good_spec, bad_spec, ignore=scope.ignore, container=scope.container)
    warn(found.warnings)
    if as_json:
        emit_json(
            diff_document(
                good, bad, good_spec.kind, good_spec.format, found.changes, found.warnings
            )
        )
    else:
        echo(render_table(found.changes, good, bad, kind=good_spec.kind), nl=False)
