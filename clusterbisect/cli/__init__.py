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


# Options that several commands take, declared once.
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON document on stdout."
)
parallel_option = click.option(
    "--parallel", type=click.IntRange(1, 256), default=1, show_default=True, metavar="K"
)
new_state_dir_option = click.option(
    "--state-dir", type=click.Path(file_okay=False), help="Where the session lives."
)
clean_env_option = click.option(
    "--clean-env", is_flag=True, help="Local: start probes from a minimal environment."
)
ray_address_option = click.option(
    "--ray-address", envvar="RAY_ADDRESS", help="Ray: an existing cluster."
)


def kube_options(func: Any) -> Any:
    """How to reach a Kubernetes cluster: kubeconfig, context and namespace."""
    func = click.option(
        "-n", "--namespace", help="Kubernetes: namespace (default: the context's)."
    )(func)
    func = click.option("--context", "kube_context", help="Kubernetes: kubeconfig context.")(func)
    return click.option(
        "--kubeconfig", type=click.Path(dir_okay=False), help="Kubernetes: kubeconfig."
    )(func)


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
        backend_options=_backend_options(
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
            _finish(workflow.run_session(session, _progress(quiet)), as_json)
            return
        plan = workflow.dry_run(session)
    if as_json:
        emit_json(plan)
    else:
        _print_plan(plan)


@cli.command()
@click.argument("state_dir", type=click.Path(file_okay=False))
@json_option
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


# Which CLI options belong to which backend's options dataclass.
_BACKEND_OPTION_NAMES = {
    "ray": ("address", "entrypoint_num_cpus", "entrypoint_num_gpus", "entrypoint_memory"),
    "kubernetes": ("kubeconfig", "context", "namespace", "command", "args", "probe"),
}


def _backend_options(backend: str, **values: Any) -> dict[str, Any]:
    """The given options of ``backend`` (the others' options are ignored)."""
    names = _BACKEND_OPTION_NAMES.get(backend, ())
    return {k: v for k, v in values.items() if k in names and v is not None}


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


# --- cleanup (Kubernetes) -----------------------------------------------------------------


@cli.command("cleanup")
@click.option("--session", "session_id", help="Only this session's objects (default: all).")
@kube_options
@json_option
def cleanup_command(
    session_id: str | None,
    kubeconfig: str | None,
    kube_context: str | None,
    namespace: str | None,
    as_json: bool,
) -> None:
    """Delete probe Jobs, pods and ConfigMaps left behind (found by label)."""
    from clusterbisect.runners import kubernetes as k8s

    options = k8s.KubernetesOptions(
        kubeconfig=kubeconfig, context=kube_context, namespace=namespace
    )
    report = k8s.cleanup(session_id, options=options)
    if as_json:
        emit_json(report)
        return
    deleted = report["deleted"]
    click.echo(
        f"Namespace {report['namespace']}: deleted {len(deleted['jobs'])} job(s), "
        f"{len(deleted['pods'])} orphaned pod(s), {len(deleted['configmaps'])} configmap(s) "
        f"matching {report['selector']}."
    )


# --- agents: tools, call, mcp ----------------------------------------------------------------


@cli.command("tools")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mcp", "anthropic", "openai", "json"]),
    default="mcp",
    show_default=True,
    help="The shape: MCP tools, Anthropic or OpenAI tool definitions, or everything.",
)
@click.option("--read-only", is_flag=True, help="Only the tools that launch nothing.")
def tools_command(fmt: str, read_only: bool) -> None:
    """Print the tool definitions (JSON Schema inputs) for agents."""
    from clusterbisect.agent.tools import definitions

    emit_json(definitions(fmt, read_only))


@cli.command("call")
@click.argument("tool")
@click.option("--input", "input_path", metavar="FILE|-", help="The JSON arguments (default: {}).")
@click.option("--read-only", is_flag=True, help="Refuse the tools that launch or delete jobs.")
def call_command(tool: str, input_path: str | None, read_only: bool) -> None:
    """Run one tool: JSON in, exactly one JSON document out.

    Errors are {"error": {"code", "message", "details"}} with the usual exit codes
    (2 for input that does not match the tool's schema). Logs go to stderr.
    """
    from clusterbisect.agent import dispatch

    try:
        arguments = _call_input(input_path)
        with dispatch.stdout_to_stderr():
            reply = dispatch.call(tool, arguments, read_only=read_only)
    except (Exception, KeyboardInterrupt) as err:
        document, code = dispatch.error_document(err)
        emit_json(document)
        click.echo(f"error: {document['error']['message']}", err=True)
        sys.exit(code)
    emit_json(reply.document)
    if reply.exit_code:
        sys.exit(reply.exit_code)


def _call_input(input_path: str | None) -> Any:
    from clusterbisect.errors import InputError

    if input_path is None:
        return {}
    source = "stdin" if input_path == "-" else input_path
    try:
        if input_path == "-":
            text = sys.stdin.read()
        else:
            with open(input_path, encoding="utf-8") as handle:
                text = handle.read()
    except OSError as err:
        raise InputError(f"cannot read ({err.strerror or err})", source=source) from None
    try:
        return json.loads(text)
    except ValueError as err:
        raise InputError(f"invalid JSON: {err}", source=source) from None


@cli.command("mcp")
@click.option("--read-only", is_flag=True, help="Serve only the tools that launch nothing.")
def mcp_command(read_only: bool) -> None:
    """Serve the tools over the Model Context Protocol on stdio."""
    from clusterbisect.extras import require

    require("mcp", "the MCP server")
    from clusterbisect.agent.mcp_server import serve

    serve(read_only)


# --- step by step, like git bisect: start, next, good/bad/skip, status, log, reset --------


def _state_dir_option(func: Any) -> Any:
    return click.option(
        "--state-dir",
        type=click.Path(file_okay=False),
        help="The session (default: the current one, in .clusterbisect/CURRENT).",
    )(func)


@cli.command("start")
@click.argument("good")
@click.argument("bad")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@click.option(
    "--backend",
    type=click.Choice(["local", "ray", "kubernetes"]),
    default="local",
    show_default=True,
    help="Whose probes `next` renders, and where `resume` would run them.",
)
@_signature_options
@parallel_option
@new_state_dir_option
@clean_env_option
@ray_address_option
@kube_options
@json_option
def step_start(
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
    clean_env: bool,
    ray_address: str | None,
    kubeconfig: str | None,
    kube_context: str | None,
    namespace: str | None,
    as_json: bool,
) -> None:
    """Start a step-by-step bisection of GOOD and BAD and show the first probe.

    You run each probe your own way and report it with good, bad or skip. The
    workload after `--` is optional; with it, `clusterbisect resume` can finish the
    session automatically.
    """
    from pathlib import Path

    from clusterbisect import stepmode, workflow

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
        backend_options=_backend_options(
            backend,
            address=ray_address,
            kubeconfig=kubeconfig,
            context=kube_context,
            namespace=namespace,
        ),
    )
    started = stepmode.start(config, Path(state_dir) if state_dir else None)
    if as_json:
        emit_json(started)
        return
    click.echo(
        f"Bisecting {started['changes_searched']} changes "
        f"({started['changes_total']} in all) on the {started['backend']} backend."
    )
    click.echo(f"State: {started['state_dir']}")
    _print_step(started["next"])


@cli.command("next")
@_state_dir_option
@click.option("--probe", metavar="ID", help="Show this pending probe instead of the first.")
@json_option
def step_next(state_dir: str | None, probe: str | None, as_json: bool) -> None:
    """Show the next probe: the changes to apply and what to run (or the result)."""
    from clusterbisect import stepmode

    view = stepmode.next_view(stepmode.open_session(state_dir), probe)
    if as_json:
        emit_json(view)
    else:
        _print_step(view)


def _step_mark(
    outcome: str | None,
    state_dir: str | None,
    probe: str | None,
    log_file: str | None,
    exit_code: int | None,
    as_json: bool,
) -> None:
    from clusterbisect import stepmode
    from clusterbisect.outcome import RunResult

    session = stepmode.open_session(state_dir)
    run = RunResult(exit_code=exit_code) if exit_code is not None else None
    recorded = stepmode.record(
        session,
        stepmode.parse_outcome(outcome) if outcome else None,
        probe=probe,
        run=run,
        log_file=log_file,
    )
    if as_json:
        emit_json(recorded)
        return
    entry = recorded["recorded"]
    observed = f" ({entry['observed']})" if entry["observed"] else ""
    click.echo(f"Recorded {entry['probe']} ({entry['purpose']}): {entry['outcome']}{observed}")
    _print_step(recorded["next"])


def _mark_options(func: Any) -> Any:
    func = json_option(func)
    func = click.option(
        "--log",
        "log_file",
        type=click.Path(exists=True, dir_okay=False),
        help="The probe's output, kept as evidence in the state directory.",
    )(func)
    func = click.option("--probe", metavar="ID", help="A pending probe other than the first.")(func)
    return _state_dir_option(func)


@cli.command("good")
@_mark_options
def step_good(
    state_dir: str | None, probe: str | None, log_file: str | None, as_json: bool
) -> None:
    """The probe passed (no failure)."""
    _step_mark("pass", state_dir, probe, log_file, None, as_json)


@cli.command("bad")
@_mark_options
def step_bad(state_dir: str | None, probe: str | None, log_file: str | None, as_json: bool) -> None:
    """The probe showed the failure."""
    _step_mark("fail", state_dir, probe, log_file, None, as_json)


@cli.command("skip")
@_mark_options
def step_skip(
    state_dir: str | None, probe: str | None, log_file: str | None, as_json: bool
) -> None:
    """The probe could not be judged (it did not run, or failed differently)."""
    _step_mark("unresolved", state_dir, probe, log_file, None, as_json)


@cli.command("mark")
@_mark_options
@click.option(
    "--outcome",
    type=click.Choice(["pass", "fail", "unresolved", "good", "bad", "skip"]),
    help="The outcome; or give --exit-code (and --log) for the failure signature to decide.",
)
@click.option("--exit-code", type=int, help="The probe's exit code, classified by the signature.")
def step_mark(
    state_dir: str | None,
    probe: str | None,
    log_file: str | None,
    as_json: bool,
    outcome: str | None,
    exit_code: int | None,
) -> None:
    """Record the probe's outcome (pass, fail, unresolved) or its exit code."""
    if outcome is None and exit_code is None:
        raise click.UsageError("give --outcome or --exit-code")
    _step_mark(outcome, state_dir, probe, log_file, exit_code, as_json)


@cli.command("status")
@_state_dir_option
@json_option
def step_status(state_dir: str | None, as_json: bool) -> None:
    """Where the session stands (the result when the search is complete)."""
    from clusterbisect import stepmode
    from clusterbisect.report import render_text

    view = stepmode.status(stepmode.open_session(state_dir))
    if as_json:
        emit_json(view)
        return
    current = " (current)" if view["current"] else ""
    click.echo(f"Session {view['session_id']}{current}: {view['state_dir']}")
    click.echo(
        f"{view['changes_searched']} of {view['changes_total']} changes searched on the "
        f"{view['backend']} backend; {view['probes_done']} probes done "
        f"({view['manual_probes']} reported by hand)"
    )
    if view["done"]:
        click.echo(render_text(view["result"]))
        return
    last = view["last"]
    if last:
        click.echo(f"Last: {last['probe']} {last['outcome']}")
    to_go = view["estimated_probes_to_go"]
    click.echo(
        f"Pending: {', '.join(view['pending'])}; {view['candidates_left']} candidate changes "
        f"left" + (f", ~{to_go} probes to go" if to_go is not None else "")
    )


@cli.command("log")
@_state_dir_option
@json_option
def step_log(state_dir: str | None, as_json: bool) -> None:
    """Print the session's journal as a replayable log (like git bisect log)."""
    from clusterbisect import stepmode

    session = stepmode.open_session(state_dir)
    text = stepmode.log_text(session)
    if as_json:
        emit_json({"state_dir": str(session.state_dir), "log": text})
    else:
        click.echo(text, nl=False)


@cli.command("replay")
@click.argument("logfile", type=click.Path(exists=True, dir_okay=False))
@click.option("--state-dir", type=click.Path(file_okay=False), help="Where the new session lives.")
@json_option
def step_replay(logfile: str, state_dir: str | None, as_json: bool) -> None:
    """Start a new session from a `log` output and re-apply its marks."""
    from pathlib import Path

    from clusterbisect import stepmode

    text = Path(logfile).read_text(encoding="utf-8")
    replayed = stepmode.replay(text, logfile, Path(state_dir) if state_dir else None)
    if as_json:
        emit_json(replayed)
        return
    click.echo(f"Replayed {replayed['replayed']} marks into {replayed['state_dir']}")
    _print_step(replayed["next"])


@cli.command("reset")
@_state_dir_option
@json_option
def step_reset(state_dir: str | None, as_json: bool) -> None:
    """End the session (its state directory is kept)."""
    from clusterbisect import stepmode

    ended = stepmode.reset(state_dir)
    if as_json:
        emit_json(ended)
    else:
        click.echo(
            f"Ended the session in {ended['state_dir']} ({ended['status']}, "
            f"{ended['probes']} probes)."
        )


def _short(value: Any) -> str:
    if value is None:
        return "(unset)"
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 50 else text[:47] + "..."


def _print_step(view: dict[str, Any]) -> None:
    """A step-mode view for people: the next probe, or the result."""
    from clusterbisect.report import render_text

    if view["done"]:
        click.echo("The search is complete.")
        click.echo(render_text(view["result"]))
        return
    probe = view["probe"]
    click.echo(
        f"Next probe {probe['id']} ({probe['purpose']}): apply {probe['changes_applied']} of "
        f"{view['changes_searched']} changes to the good spec"
    )
    for change in probe["changes"][:20]:
        click.echo(f"  {change['key']}: {_short(change['good'])} -> {_short(change['bad'])}")
    if len(probe["changes"]) > 20:
        click.echo(f"  ... and {len(probe['changes']) - 20} more")
    if probe.get("shell") and len(probe["shell"]) <= 2000:
        click.echo("Run it:")
        click.echo(f"  {probe['shell']}")
    click.echo(f"Rendered for the {view['backend']} backend: {probe['rendered_file']}")
    others = [p["probe"] for p in view["pending"][1:]]
    if others:
        click.echo(f"Also pending (may run in parallel): {', '.join(others)}")
    click.echo("Then: clusterbisect good | bad | skip  [--log FILE]")


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
