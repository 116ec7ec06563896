"""``run``, ``resume`` and ``report``: whole bisections and their reports."""

from __future__ import annotations

from typing import Any

import click

from clusterbisect.cli.common import (
    backend_options,
    clean_env_option,
    emit_json,
    finish,
    json_option,
    kube_options,
    new_state_dir_option,
    parallel_option,
    progress,
    ray_address_option,
    signature_options,
)


@click.command(context_settings={"ignore_unknown_options": False})
@click.argument("good")
@click.argument("bad")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option(
    "--backend",
    type=click.Choice(["local", "ray", "kubernetes"]),
    default="local",
    show_default=True,
)
@signature_options
@parallel_option
@new_state_dir_option
@click.option(
    "--dry-run",
    type=click.Choice(["client", "server"]),
    is_flag=False,
    flag_value="client",
    default=None,
    help="Render the probes without launching them (server: check them with the API).",
)
@clean_env_option
@click.option("--max-probes", type=click.IntRange(1), help="Stop after this many probes.")
@click.option("--max-time", type=float, metavar="SECONDS", help="Stop after this long.")
@click.option("--flaky", is_flag=True, help="Use the flake-aware strategy.")
@click.option(
    "--confidence",
    type=click.FloatRange(0.5, 0.99999),
    default=0.99,
    show_default=True,
    help="Flaky: stop when the best candidate is this likely.",
)
@click.option(
    "--baseline-runs",
    type=click.IntRange(1, 100),
    default=1,
    show_default=True,
    help="Run each baseline N times; if they disagree, switch to the flaky strategy.",
)
@click.option(
    "--repro-rate",
    type=click.FloatRange(0.01, 1.0),
    metavar="P",
    help="Flaky: how often the bad spec fails, if known (else learned).",
)
@click.option(
    "--background-rate",
    type=click.FloatRange(0.0, 0.99),
    metavar="Q",
    help="Flaky: how often the good spec fails, if known (else learned).",
)
@ray_address_option
@click.option("--entrypoint-num-cpus", type=float, help="Ray: CPUs per probe job.")
@click.option("--entrypoint-num-gpus", type=float, help="Ray: GPUs per probe job.")
@click.option("--entrypoint-memory", type=int, help="Ray: memory (bytes) per probe job.")
@kube_options
@click.option("--command", "k8s_command", help="Kubernetes: replace the container command.")
@click.option("--args", "k8s_args", help="Kubernetes: replace the container args.")
@click.option("--probe", "probe_name", help="Kubernetes: run probes/NAME.py from a ConfigMap.")
@json_option
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
def run(
    good: str,
    bad: str,
    command: tuple[str, ...],
    backend: str,
    fail_on: str | None,
    fail_exit_code: int | None,
    fail_reason: str | None,
    timeout: float | None,
    hang_is_failure: bool,
    ignore: tuple[str, ...],
    container: str | None,
    parallel: int,
    state_dir: str | None,
    dry_run: str | None,
    clean_env: bool,
    max_probes: int | None,
    max_time: float | None,
    flaky: bool,
    confidence: float,
    baseline_runs: int,
    repro_rate: float | None,
    background_rate: float | None,
    ray_address: str | None,
    entrypoint_num_cpus: float | None,
    entrypoint_num_gpus: float | None,
    entrypoint_memory: int | None,
    kubeconfig: str | None,
    kube_context: str | None,
    namespace: str | None,
    k8s_command: str | None,
    k8s_args: str | None,
    probe_name: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Bisect the changes between GOOD and BAD by running probes.

    The probe workload follows `--`: clusterbisect run good.yaml bad.yaml -- python train.py
    """
    from pathlib import Path

    from clusterbisect import workflow

    if backend == "local" and not command and not dry_run:
        raise click.UsageError(
            "the local backend needs the probe workload after `--`, "
            "e.g. clusterbisect run good.yaml bad.yaml -- python train.py"
        )
    config = workflow.new_config(
        good=good,
        bad=bad,
        backend=backend,
        command=list(command) or None,
        fail_on=fail_on,
        fail_exit_code=fail_exit_code,
        fail_reason=fail_reason,
        timeout=timeout,
        hang_is_failure=hang_is_failure,
        ignore=list(ignore),
        container=container,
        parallel=parallel,
        clean_env=clean_env,
        max_probes=max_probes,
        max_time=max_time,
        flaky=flaky,
        confidence=confidence,
        baseline_runs=baseline_runs,
        repro_rate=repro_rate,
        background_rate=background_rate,
        backend_options=backend_options(
            backend,
            address=ray_address,
            entrypoint_num_cpus=entrypoint_num_cpus,
            entrypoint_num_gpus=entrypoint_num_gpus,
            entrypoint_memory=entrypoint_memory,
            kubeconfig=kubeconfig,
            context=kube_context,
            namespace=namespace,
            command=k8s_command,
            args=k8s_args,
            probe=probe_name,
        ),
        dry_run=dry_run,
    )
    with workflow.new_session(config, Path(state_dir) if state_dir else None) as session:
        if not dry_run:
            finish(workflow.run_session(session, progress(quiet)), as_json)
            return
        plan = workflow.dry_run(session)
    if as_json:
        emit_json(plan)
    else:
        _print_plan(plan)


@click.command()
@click.argument("state_dir", type=click.Path(file_okay=False))
@json_option
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
def resume(state_dir: str, as_json: bool, quiet: bool) -> None:
    """Continue an interrupted session without re-running finished probes."""
    from pathlib import Path

    from clusterbisect import workflow
    from clusterbisect.session import Session

    session = Session.open(Path(state_dir))
    finish(workflow.run_session(session, progress(quiet)), as_json)


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
    from pathlib import Path

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
        click.echo(reporting.render_markdown(result), nl=False)
    else:
        click.echo(reporting.render_text(result))


def _print_plan(plan: dict[str, Any]) -> None:
    click.echo(
        f"Dry run on the {plan['backend']} backend: {plan['changes_searched']} of "
        f"{plan['changes_total']} changes searchable; nothing was launched."
    )
    for probe in plan["plan"]:
        click.echo(
            f"  {probe['id']} {probe['purpose']:<14} {len(probe['subset']):>4} changes"
            f"  -> {probe['manifest']}"
        )
    for item in plan["untestable"]:
        click.echo(f"  untestable: {item['key']}: {item['reason']}")
    click.echo(f"State: {plan['state_dir']}")
