"""``clusterbisect diff``: the changes between two specs."""

from __future__ import annotations

import click

from clusterbisect.cli.common import emit_json, json_option


@click.command("diff")
@click.argument("good", metavar="GOOD")
@click.argument("bad", metavar="BAD")
@json_option
@click.option(
    "--ignore",
    "ignore",
    multiple=True,
    metavar="GLOB",
    help="Leave out settings whose key matches GLOB (fnmatch; repeatable).",
)
@click.option("--container", metavar="NAME", help="Only this container's (and pod) settings.")
def diff_command(
    good: str, bad: str, as_json: bool, ignore: tuple[str, ...], container: str | None
) -> None:
    """List the settings that differ between a GOOD and a BAD job spec.

    Each spec is a Kubernetes object (kubectl get -o yaml works), a Ray job, an env
    dump or .env file, a pip freeze or a snapshot from probes/snapshot.py; the
    format is recognised from the content. Secret values are redacted.
    """
    from clusterbisect.diff import diff, render_table
    from clusterbisect.specs import load_specs

    good_spec, bad_spec = load_specs([good, bad])
    changes = diff(good_spec, bad_spec, ignore=ignore, container=container)
    if as_json:
        emit_json(
            {
                "changes": [c.to_dict() for c in changes],
                "good": good,
                "bad": bad,
                "count": len(changes),
                "kind": good_spec.kind,
                "format": good_spec.format,
            }
        )
    else:
        click.echo(render_table(changes, good, bad, kind=good_spec.kind), nl=False)
