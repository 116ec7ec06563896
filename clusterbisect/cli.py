"""The command line. Errors become exit codes here, and only here.

Ray and Kubernetes are imported inside the commands that use them, never at
start-up, so ``clusterbisect --help`` and ``diff`` stay fast.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from clusterbisect import __version__
from clusterbisect.errors import EXIT_INTERRUPTED, ClusterBisectError


def emit_json(document: Any) -> None:
    """Print exactly one JSON document on stdout."""
    click.echo(json.dumps(document, indent=2, sort_keys=False, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="clusterbisect")
@click.option(
    "--log-format",
    type=click.Choice(["auto", "console", "json"]),
    default="auto",
    show_default=True,
    help="Logs go to stderr: readable on a terminal, JSON lines with 'json'.",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    show_default=True,
)
def cli(log_format: str, log_level: str) -> None:
    """Find the setting that makes a cluster job crash.

    Diff a working (GOOD) and a failing (BAD) job, then run probe jobs that apply
    subsets of the differences until the culprit is isolated.
    """
    from clusterbisect import log

    log.configure(log_format, log_level)


# --- commands are registered below, each in its own section -----------------------


# --- diff ----------------------------------------------------------------------------


@cli.command("diff")
@click.argument("good", metavar="GOOD")
@click.argument("bad", metavar="BAD")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
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
    from clusterbisect.specs import load_spec

    good_spec = load_spec(good)
    bad_spec = load_spec(bad)
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


# --- run / resume / report -----------------------------------------------------------


def _signature_options(func: Any) -> Any:
    """Options that define the failure signature (shared by run and start)."""
    options = [
        click.option("--fail-on", metavar="REGEX", help="The failure shows this in the output."),
        click.option("--fail-exit-code", type=int, help="The failure exits with this code."),
        click.option(
            "--fail-reason", metavar="REASON", help="The failure ends with this reason (OOMKilled)."
        ),
        click.option("--timeout", type=float, metavar="SECONDS", help="Per-probe timeout."),
        click.option(
            "--hang-is-failure", is_flag=True, help="A probe that times out shows the failure."
        ),
        click.option("--ignore", multiple=True, metavar="GLOB", help="Setting keys to ignore."),
        click.option("--container", metavar="NAME", help="Only this container's settings."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _signature(
    fail_on: str | None,
    fail_exit_code: int | None,
    fail_reason: str | None,
    hang_is_failure: bool,
) -> dict[str, Any]:
    from clusterbisect.outcome import FailureSignature

    if fail_on:
        import re

        try:
            re.compile(fail_on)
        except re.error as err:
            raise click.BadParameter(
                f"not a valid regular expression: {err}", param_hint="--fail-on"
            ) from None
    return FailureSignature(fail_on, fail_exit_code, fail_reason, hang_is_failure).to_dict()


@cli.command(context_settings={"ignore_unknown_options": False})
@click.argument("good")
@click.argument("bad")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option(
    "--backend",
    type=click.Choice(["local", "ray", "kubernetes"]),
    default="local",
    show_default=True,
)
@_signature_options
@click.option("--parallel", type=click.IntRange(1, 256), default=1, show_default=True, metavar="K")
@click.option("--state-dir", type=click.Path(file_okay=False), help="Where the session lives.")
@click.option(
    "--dry-run",
    type=click.Choice(["client", "server"]),
    is_flag=False,
    flag_value="client",
    default=None,
    help="Render the probes without launching them (server: check them with the API).",
)
@click.option("--clean-env", is_flag=True, help="Local: start probes from a minimal environment.")
@click.option("--max-probes", type=click.IntRange(1), help="Stop after this many probes.")
@click.option("--max-time", type=float, metavar="SECONDS", help="Stop after this long.")
@click.option("--flaky", is_flag=True, help="Use the flake-aware strategy.")
@click.option("--confidence", type=click.FloatRange(0.5, 0.99999), default=0.99, show_default=True)
@click.option("--baseline-runs", type=click.IntRange(1, 100), default=1, show_default=True)
@click.option("--ray-address", envvar="RAY_ADDRESS", help="Ray: an existing cluster.")
@click.option("--entrypoint-num-cpus", type=float, help="Ray: CPUs per probe job.")
@click.option("--entrypoint-num-gpus", type=float, help="Ray: GPUs per probe job.")
@click.option("--entrypoint-memory", type=int, help="Ray: memory (bytes) per probe job.")
@click.option("--kubeconfig", type=click.Path(dir_okay=False), help="Kubernetes: kubeconfig.")
@click.option("--context", "kube_context", help="Kubernetes: kubeconfig context.")
@click.option("-n", "--namespace", help="Kubernetes: namespace (default: the context's).")
@click.option("--command", "k8s_command", help="Kubernetes: replace the container command.")
@click.option("--args", "k8s_args", help="Kubernetes: replace the container args.")
@click.option("--probe", "probe_name", help="Kubernetes: run probes/NAME.py from a ConfigMap.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
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
    from clusterbisect.session import SessionConfig

    if hang_is_failure and not timeout:
        raise click.UsageError("--hang-is-failure needs --timeout")
    if backend == "local" and not command and not dry_run:
        raise click.UsageError(
            "the local backend needs the probe workload after `--`, "
            "e.g. clusterbisect run good.yaml bad.yaml -- python train.py"
        )
    backend_options: dict[str, Any] = {}
    if backend == "ray":
        backend_options = _drop_none(
            address=ray_address,
            entrypoint_num_cpus=entrypoint_num_cpus,
            entrypoint_num_gpus=entrypoint_num_gpus,
            entrypoint_memory=entrypoint_memory,
        )
    elif backend == "kubernetes":
        backend_options = _drop_none(
            kubeconfig=kubeconfig,
            context=kube_context,
            namespace=namespace,
            command=k8s_command,
            args=k8s_args,
            probe=probe_name,
            dry_run=dry_run or "none",
        )
    strategy_options: dict[str, Any] = {}
    if flaky:
        strategy_options = {"confidence": confidence, "baseline_runs": baseline_runs}
    config = SessionConfig(
        good="",
        bad="",
        good_source=good,
        bad_source=bad,
        backend=backend,
        command=list(command) or None,
        signature=_signature(fail_on, fail_exit_code, fail_reason, hang_is_failure),
        parallel=parallel,
        timeout_s=timeout,
        ignore=list(ignore),
        container=container,
        clean_env=clean_env,
        max_probes=max_probes,
        max_time_s=max_time,
        strategy="flaky" if flaky else "bisection",
        strategy_options=strategy_options,
        backend_options=backend_options,
    )
    session = workflow.create_session(config, Path(state_dir) if state_dir else None)
    if dry_run:
        plan = workflow.dry_run(session)
        if as_json:
            emit_json(plan)
        else:
            _print_plan(plan)
        return
    _finish(workflow.run_session(session, _progress(quiet)), as_json)


@cli.command()
@click.argument("state_dir", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
@click.option("--quiet", is_flag=True, help="No progress on stderr.")
def resume(state_dir: str, as_json: bool, quiet: bool) -> None:
    """Continue an interrupted session without re-running finished probes."""
    from pathlib import Path

    from clusterbisect import workflow
    from clusterbisect.session import Session

    session = Session.open(Path(state_dir))
    _finish(workflow.run_session(session, _progress(quiet)), as_json)


@cli.command()
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


def _drop_none(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


def _progress(quiet: bool) -> Any:
    from clusterbisect.progress import TerminalProgress

    return TerminalProgress(quiet=quiet)


def _finish(result: dict[str, Any], as_json: bool) -> None:
    """Print the result and exit 0 with a culprit, 1 without."""
    from clusterbisect.errors import EXIT_NO_CULPRIT
    from clusterbisect.report import render_text

    if as_json:
        emit_json(result)
    else:
        click.echo(render_text(result))
    if result["status"] != "found":
        sys.exit(EXIT_NO_CULPRIT)


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


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI and map errors to exit codes."""
    try:
        cli.main(args=argv, prog_name="clusterbisect", standalone_mode=False)
    except ClusterBisectError as err:
        _report_error(err.message, err.code, err.details)
        sys.exit(err.exit_code)
    except click.exceptions.Abort:
        click.echo("Interrupted.", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as err:
        err.show()
        sys.exit(2 if err.exit_code == 1 else err.exit_code)
    except click.exceptions.Exit as err:
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(EXIT_INTERRUPTED)


def _wants_json() -> bool:
    return "--json" in sys.argv[1:]


def _report_error(message: str, code: str, details: dict[str, Any]) -> None:
    if _wants_json():
        emit_json({"error": {"code": code, "message": message, "details": details}})
    click.echo(f"error: {message}", err=True)


if __name__ == "__main__":
    main()
