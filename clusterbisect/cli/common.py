"""What the commands share: one JSON document on stdout, a few options, the result.

The options of sessions (signature, search, limits, backends...) are not declared
here: they are generated from the option groups of ``config.py``
(:func:`session_options`), as the tools' schemas are.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from clusterbisect import backends
from clusterbisect.config import SessionConfig
from clusterbisect.options import click_options, from_params


def emit_json(document: Any) -> None:
    """Print exactly one JSON document on stdout, every secret this process knows
    scrubbed (``redact.scrub``)."""
    from clusterbisect.redact import scrub

    text = json.dumps(document, indent=2, sort_keys=False, default=str)
    click.echo(json.dumps(scrub(json.loads(text)), indent=2, sort_keys=False))


def echo(text: str = "", **kwargs: Any) -> None:
    """``click.echo`` for the commands' text: every secret this process knows scrubbed."""
    from clusterbisect.redact import scrub

    click.echo(scrub(text), **kwargs)


def warn(warnings: list[str]) -> None:
    """Each warning as a line on stderr (the JSON document also lists them)."""
    for warning in warnings:
        echo(f"warning: {warning}", err=True)


json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print one JSON document on stdout."
)
quiet_option = click.option("--quiet", is_flag=True, help="No progress on stderr.")


def state_dir_option(func: Any) -> Any:
    """``--state-dir`` of the step commands: an existing session (default: the current)."""
    return click.option(
        "--state-dir",
        type=click.Path(file_okay=False),
        help="The session (default: the current one, in .clusterbisect/CURRENT).",
    )(func)


def session_options(*groups: type) -> Callable[[Any], Any]:
    """The options of a new session (``config.START_GROUPS`` or ``RUN_GROUPS``) and of
    every backend, as click options."""
    return click_options(*groups, *backends.option_classes())


def session_config(
    good: str, bad: str, command: tuple[str, ...], params: Mapping[str, Any]
) -> tuple[SessionConfig, Path | None]:
    """The new session's config and state directory from a command's parameters."""
    config, state_dir = SessionConfig.from_options(
        good, bad, command, lambda group: from_params(group, params)
    )
    return config, Path(state_dir) if state_dir else None


def require_workload(backend: str, command: tuple[str, ...], dry_run: str | None) -> None:
    """A backend that runs the workload after `--` needs one (a dry run does not)."""
    if backends.get(backend).capabilities.needs_command and not command and not dry_run:
        raise click.UsageError(
            f"the {backend} backend needs the probe workload after `--`, "
            "e.g. clusterbisect run good.yaml bad.yaml -- python train.py"
        )


def progress(quiet: bool) -> Any:
    from clusterbisect.progress import TerminalProgress

    return TerminalProgress(quiet=quiet)


def show_result(as_json: bool) -> Callable[[dict[str, Any]], None]:
    """What prints a result (as JSON, or the text report): a run hands it the result
    as soon as the search ends, before the backend is torn down."""

    def show(result: dict[str, Any]) -> None:
        from clusterbisect.report import render_text

        if as_json:
            emit_json(result)
        else:
            echo(render_text(result))

    return show


def exit_for(result: dict[str, Any]) -> None:
    """Exit 0 with a culprit, 1 without."""
    from clusterbisect.errors import EXIT_NO_CULPRIT

    if result["status"] != "found":
        sys.exit(EXIT_NO_CULPRIT)
