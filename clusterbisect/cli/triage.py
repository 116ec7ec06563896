"""``clusterbisect triage``: from many jobs to the suspects and the pair; ``--bisect``
hands the pair to ``run``, with the ranking as priors.

Exit codes: 0 suspects found (with ``--bisect``: a culprit found), 1 no significant
suspect, nothing to explain, no pair to bisect (with ``--bisect``: no culprit), 2 bad
input, 3 a cluster that cannot be read, 130 interrupted.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from clusterbisect.cli.common import (
    emit_json,
    json_option,
    progress,
    quiet_option,
    require_workload,
    session_config,
    session_options,
)
from clusterbisect.config import RUN_GROUPS, KubeConnection, TriageOptions, TriageSourceOptions
from clusterbisect.errors import EXIT_NO_CULPRIT, EXIT_OK
from clusterbisect.options import click_options, fields_of, from_params

# The status of a triage and its exit code (without --bisect).
EXIT_CODES = {"suspects_found": EXIT_OK}


class _WithWorkload(click.Command):
    """SOURCE... and, after ``--``, the probe workload of ``--bisect`` (the local
    backend's command), which click would otherwise take for more sources."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            at = args.index("--")
            ctx.meta["workload"] = tuple(args[at + 1 :])
            args = args[:at]
        return super().parse_args(ctx, args)


@click.command("triage", cls=_WithWorkload)
@click.argument("sources", nargs=-1, metavar="[SOURCE]...")
@click_options(TriageSourceOptions, TriageOptions)
@click.option(
    "--bisect",
    is_flag=True,
    help="Then bisect the pair with `run` (every option of run applies), trying the "
    "likeliest changes first. The local backend's workload follows `--`.",
)
@session_options(*RUN_GROUPS)
@json_option
@quiet_option
def triage_command(
    sources: tuple[str, ...], bisect: bool, as_json: bool, quiet: bool, **options: Any
) -> None:
    """Find the settings that go with a failure across many jobs, and the pair to bisect.

    SOURCE: files or folders of exported objects (kubectl get jobs,pods -o yaml|json;
    Kubeflow jobs, RayJobs; ray list jobs --detail --format json). Without SOURCE, the
    jobs of the cluster (-n NAMESPACE, -A, -l SELECTOR; as kubectl connects) or of a Ray
    cluster (--ray-address, RAY_ADDRESS). Secret values are redacted.

    \b
    Exit codes: 0 suspects found (--bisect: culprit found); 1 no significant suspect,
    nothing to explain or no pair (--bisect: no culprit); 2 bad input; 3 cluster error.
    """
    ctx = click.get_current_context()
    workload: tuple[str, ...] = ctx.meta.get("workload", ())
    request = _request(sources, options, ctx)
    if not bisect:
        from clusterbisect.triage import render_text, triage

        result = triage(request)
        document = result.to_dict()
        emit_json(document) if as_json else click.echo(render_text(result))
        sys.exit(EXIT_CODES.get(document["status"], EXIT_NO_CULPRIT))
    _triage_and_bisect(request, workload, options, as_json, quiet)


def _request(sources: tuple[str, ...], options: dict[str, Any], ctx: click.Context) -> Any:
    """The triage request: the option groups, and which clusters to read."""
    from clusterbisect.triage import TriageRequest

    return TriageRequest.from_options(
        sources,
        lambda group: from_params(group, options),
        kube_given=any(_given(ctx, f.param) for f in fields_of(KubeConnection)),
        ray_given=_given(ctx, "ray_address"),
    )


def _given(ctx: click.Context, param: str) -> bool:
    """Whether the option was on the command line (not a default or a variable)."""
    return ctx.get_parameter_source(param) == ParameterSource.COMMANDLINE


def _triage_and_bisect(
    request: Any, workload: tuple[str, ...], options: dict[str, Any], as_json: bool, quiet: bool
) -> None:
    """Triage into an output folder, then `run` on the pair with the result as priors."""
    from clusterbisect import workflow
    from clusterbisect.report import render_text as render_report
    from clusterbisect.triage import render_text, triage

    # Usage errors of the bisection come before the fleet is read.
    require_workload(options["backend"], workload, options["dry_run"])
    config, state_dir = session_config("good", "bad", workload, options)
    if not request.options.out:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        default = state_dir / "triage" if state_dir else Path(".clusterbisect") / f"triage-{stamp}"
        request.options.out = str(default)
    result = triage(request)
    document = result.to_dict()
    if result.pair is None or "good" not in result.files:
        why = result.pair_note or result.message
        document["bisection"] = None
        emit_json(document) if as_json else click.echo(render_text(result))
        click.echo(f"error: nothing to bisect: {why}", err=True)
        sys.exit(EXIT_NO_CULPRIT)
    if not as_json:
        click.echo(render_text(result))
    config = dataclasses.replace(
        config,
        good_source=result.files["good"],
        bad_source=result.files["bad"],
        search=dataclasses.replace(
            config.search, priors=config.search.priors or result.files["result"]
        ),
    )
    with workflow.new_session(config, state_dir) as bisection:
        if config.dry_run:
            run_result = workflow.dry_run(bisection)
        else:
            run_result = workflow.run_session(bisection, progress(quiet))
    if as_json:
        emit_json({**document, "bisection": run_result})
    elif config.dry_run:
        click.echo(
            f"Dry run: {len(run_result['plan'])} probes rendered in {run_result['state_dir']}"
        )
    else:
        click.echo(render_report(run_result))
    sys.exit(EXIT_OK if run_result["status"] in ("found", "dry_run") else EXIT_NO_CULPRIT)
