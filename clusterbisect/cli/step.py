"""The step-by-step commands, like git bisect: start, next, good/bad/skip/mark, exec,
status, log, replay and reset."""

from __future__ import annotations

import json
from typing import Any

import click

from clusterbisect.cli.common import (
    echo,
    emit_json,
    json_option,
    session_config,
    session_options,
    state_dir_option,
    warn,
)
from clusterbisect.config import START_GROUPS

verbose_option = click.option(
    "--verbose",
    is_flag=True,
    help="With --json: the full document (every change with its values, the rendered "
    "probe inline, each pending probe's keys); default: compact.",
)


@click.command("start")
@click.argument("good")
@click.argument("bad")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@session_options(*START_GROUPS)
@json_option
@verbose_option
def step_start(
    good: str, bad: str, command: tuple[str, ...], as_json: bool, verbose: bool, **options: Any
) -> None:
    """Start a step-by-step bisection of GOOD and BAD and show the first probe.

    You run each probe your own way and report it with good, bad or skip. The
    workload after `--` is optional; with it, `clusterbisect resume` can finish the
    session automatically.
    """
    from clusterbisect import stepmode

    started = stepmode.start(*session_config(good, bad, command, options))
    warn(started["warnings"])
    if as_json:
        emit_json(stepmode.shown(started, verbose))
        return
    echo(
        f"Bisecting {started['changes_searched']} changes "
        f"({started['changes_total']} in all) on the {started['backend']} backend."
    )
    echo(f"State: {started['state_dir']}")
    _print_step(started["next"])


@click.command("next")
@state_dir_option
@click.option("--probe", metavar="ID", help="Show this pending probe instead of the first.")
@json_option
@verbose_option
def step_next(state_dir: str | None, probe: str | None, as_json: bool, verbose: bool) -> None:
    """Show the next probe: the changes to apply and what to run (or the result)."""
    from clusterbisect import stepmode

    view = stepmode.next_view(stepmode.open_session(state_dir), probe)
    if as_json:
        emit_json(stepmode.shown(view, verbose))
    else:
        _print_step(view)


def _step_mark(
    outcome: str | None,
    state_dir: str | None,
    probe: str | None,
    log_file: str | None,
    exit_code: int | None,
    as_json: bool,
    verbose: bool = False,
    force: bool = False,
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
        force=force,
    )
    if as_json:
        emit_json(stepmode.shown(recorded, verbose))
        return
    entry = recorded["recorded"]
    observed = f" ({entry['observed']})" if entry["observed"] else ""
    echo(f"Recorded {entry['probe']} ({entry['purpose']}): {entry['outcome']}{observed}")
    _print_step(recorded["next"])


def _mark_options(func: Any) -> Any:
    func = verbose_option(func)
    func = json_option(func)
    func = click.option(
        "--log",
        "log_file",
        type=click.Path(exists=True, dir_okay=False),
        help="The probe's output, kept as evidence in the state directory.",
    )(func)
    func = click.option("--probe", metavar="ID", help="A pending probe other than the first.")(func)
    return state_dir_option(func)


def _outcome_command(name: str, outcome: str, summary: str) -> click.Command:
    """``good``, ``bad`` or ``skip``: record ``outcome`` for the pending probe."""

    @click.command(name, help=summary)
    @_mark_options
    def command(
        state_dir: str | None,
        probe: str | None,
        log_file: str | None,
        as_json: bool,
        verbose: bool,
    ) -> None:
        _step_mark(outcome, state_dir, probe, log_file, None, as_json, verbose)

    return command


step_good = _outcome_command("good", "pass", "The probe passed (no failure).")
step_bad = _outcome_command("bad", "fail", "The probe showed the failure.")
step_skip = _outcome_command(
    "skip", "unresolved", "The probe could not be judged (it did not run, or failed differently)."
)


@click.command("mark")
@_mark_options
@click.option(
    "--outcome",
    type=click.Choice(["pass", "fail", "unresolved", "good", "bad", "skip"]),
    help="The outcome; or give --exit-code (and --log) for the failure signature to decide.",
)
@click.option("--exit-code", type=int, help="The probe's exit code, classified by the signature.")
@click.option("--force", is_flag=True, help="Keep --outcome even when --exit-code contradicts it.")
def step_mark(
    state_dir: str | None,
    probe: str | None,
    log_file: str | None,
    as_json: bool,
    verbose: bool,
    outcome: str | None,
    exit_code: int | None,
    force: bool,
) -> None:
    """Record the probe's outcome (pass, fail, unresolved) or its exit code.

    With both, they must agree (--outcome pass with --exit-code 1 is refused) unless
    --force.
    """
    if outcome is None and exit_code is None:
        raise click.UsageError("give --outcome or --exit-code")
    _step_mark(outcome, state_dir, probe, log_file, exit_code, as_json, verbose, force)


@click.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("probe_id", metavar="PROBE_ID")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@state_dir_option
@json_option
@verbose_option
def step_exec(
    probe_id: str, command: tuple[str, ...], state_dir: str | None, as_json: bool, verbose: bool
) -> None:
    """Run pending probe PROBE_ID here with its real environment and record the outcome.

    The command follows `--` (default: the session's workload): clusterbisect exec p003
    -- python train.py. It gets the probe's environment, secrets included, as `run`
    gives it on this machine; its output is kept as the probe's log and the session's
    failure signature classifies it. Nothing secret is printed.
    """
    from clusterbisect import stepexec, stepmode

    recorded = stepexec.exec_probe(
        stepmode.open_session(state_dir), probe_id, list(command) or None
    )
    if as_json:
        emit_json(stepmode.shown(recorded, verbose))
        return
    entry = recorded["recorded"]
    observed = f" ({entry['observed']})" if entry["observed"] else ""
    echo(
        f"Ran {entry['probe']} ({entry['purpose']}): exit code {entry['exit_code']}, "
        f"{entry['outcome']}{observed}; log {entry['log']}"
    )
    _print_step(recorded["next"])


@click.command("status")
@state_dir_option
@json_option
@verbose_option
def step_status(state_dir: str | None, as_json: bool, verbose: bool) -> None:
    """Where the session stands (the result when the search is complete)."""
    from clusterbisect import stepmode
    from clusterbisect.report import render_text

    view = stepmode.status(stepmode.open_session(state_dir))
    if as_json:
        emit_json(stepmode.shown(view, verbose))
        return
    current = " (current)" if view["current"] else ""
    echo(f"Session {view['session_id']}{current}: {view['state_dir']}")
    if view.get("stopped_early"):
        echo(f"Stopped early: {view['stopped_early']}; {view['continue_with']}")
    echo(
        f"{view['changes_searched']} of {view['changes_total']} changes searched on the "
        f"{view['backend']} backend; {view['probes_done']} probes done "
        f"({view['manual_probes']} reported by hand)"
    )
    if view["done"]:
        echo(render_text(view["result"]))
        return
    last = view["last"]
    if last:
        echo(f"Last: {last['probe']} {last['outcome']}")
    to_go = view["estimated_probes_to_go"]
    echo(
        f"Pending: {', '.join(view['pending'])}; {view['candidates_left']} candidate changes "
        f"left" + (f", ~{to_go} probes to go" if to_go is not None else "")
    )


@click.command("log")
@state_dir_option
@json_option
def step_log(state_dir: str | None, as_json: bool) -> None:
    """Print the session's journal as a replayable log (like git bisect log)."""
    from clusterbisect import stepmode

    session = stepmode.open_state(state_dir)
    text = stepmode.log_text(session)
    if as_json:
        emit_json({"state_dir": str(session.state_dir), "log": text})
    else:
        echo(text, nl=False)


@click.command("replay")
@click.argument("logfile", type=click.Path(exists=True, dir_okay=False))
@click.option("--state-dir", type=click.Path(file_okay=False), help="Where the new session lives.")
@json_option
@verbose_option
def step_replay(logfile: str, state_dir: str | None, as_json: bool, verbose: bool) -> None:
    """Start a new session from a `log` output and re-apply its marks."""
    from pathlib import Path

    from clusterbisect import steplog, stepmode

    text = steplog.read_log_file(logfile)
    replayed = stepmode.replay(text, logfile, Path(state_dir) if state_dir else None)
    if as_json:
        emit_json(stepmode.shown(replayed, verbose))
        return
    echo(f"Replayed {replayed['replayed']} marks into {replayed['state_dir']}")
    _print_step(replayed["next"])


@click.command("reset")
@state_dir_option
@json_option
def step_reset(state_dir: str | None, as_json: bool) -> None:
    """End the session (its state directory is kept)."""
    from clusterbisect import stepmode

    ended = stepmode.reset(state_dir)
    if as_json:
        emit_json(ended)
    else:
        echo(
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
        echo("The search is complete.")
        echo(render_text(view["result"]))
        return
    probe = view["probe"]
    echo(
        f"Next probe {probe['id']} ({probe['purpose']}): apply {probe['changes_applied']} of "
        f"{view['changes_searched']} changes to the good spec"
    )
    for change in probe["changes"][:20]:
        echo(f"  {change['key']}: {_short(change['good'])} -> {_short(change['bad'])}")
    if len(probe["changes"]) > 20:
        echo(f"  ... and {len(probe['changes']) - 20} more")
    echo(f"Rendered for the {view['backend']} backend: {probe['rendered_file']}")
    if probe.get("private_file"):
        echo(f"Real values (mode 0600, never shown): {probe['private_file']}")
    if probe.get("exec"):
        echo(f"Run it here and record the outcome: {probe['exec']}")
    elif probe.get("use"):
        echo(f"Run it: {probe['use']}")
    others = [p["probe"] for p in view["pending"][1:]]
    if others:
        echo(f"Also pending (may run in parallel): {', '.join(others)}")
    echo("Then: clusterbisect good | bad | skip  [--log FILE]")
