"""The command line. Errors become exit codes here, and only here.

Each command lives in a small module of this package (``diff``, ``run``, ``step``,
``cleanup``, ``agent``, ``triage``) and is registered on the ``cli`` group below. Ray and
Kubernetes are imported inside the commands that use them, never at start-up, so
``clusterbisect --help`` and ``diff`` stay fast.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from clusterbisect import __version__
from clusterbisect.cli import agent, cleanup, diff, run, step, triage
from clusterbisect.cli.common import echo, emit_json
from clusterbisect.errors import EXIT_BACKEND, EXIT_INTERRUPTED, ClusterBisectError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__)
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


for _command in (
    diff.diff_command,
    run.run,
    run.resume,
    run.report,
    triage.triage_command,
    cleanup.cleanup_command,
    agent.tools_command,
    agent.call_command,
    agent.mcp_command,
    step.step_start,
    step.step_next,
    step.step_good,
    step.step_bad,
    step.step_skip,
    step.step_mark,
    step.step_exec,
    step.step_status,
    step.step_log,
    step.step_replay,
    step.step_reset,
):
    cli.add_command(_command)


PROG = "clusterbisect"
KUBECTL_PROG = "kubectl bisect"  # kubectl runs the kubectl-bisect plugin for `kubectl bisect`


def kubectl_main(argv: list[str] | None = None) -> None:
    """The ``kubectl-bisect`` entry point: the same CLI, named as kubectl users type it."""
    main(argv, prog_name=KUBECTL_PROG)


def main(argv: list[str] | None = None, prog_name: str = PROG) -> None:
    """Console entry point: run the CLI and map errors to exit codes."""
    try:
        # Shell completion is read from _CLUSTERBISECT_COMPLETE whatever the name shown.
        cli.main(
            args=argv,
            prog_name=prog_name,
            complete_var="_CLUSTERBISECT_COMPLETE",
            standalone_mode=False,
        )
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
    except Exception as err:
        _internal_error(err)


def _internal_error(err: Exception) -> None:
    """A bug of ours, or a failure nothing above foresaw: one line, exit 3. The
    traceback is logged at debug level (``--log-level debug``) for a bug report."""
    from clusterbisect.log import get_logger

    get_logger(__name__).debug("internal error", exc_info=err)
    message = f"{type(err).__name__}: {err}"
    if isinstance(err, OSError):  # the machine, not the input: a disk, a permission
        message = f"{err.filename + ': ' if err.filename else ''}{err.strerror or err}"
    _report_error(f"internal error: {message}", "internal_error", {})
    sys.exit(EXIT_BACKEND)


def _wants_json() -> bool:
    return "--json" in sys.argv[1:]


def _report_error(message: str, code: str, details: dict[str, Any]) -> None:
    """The error as one JSON document (with --json) and a line on stderr: an error
    raised anywhere may quote a secret (an API server quoting a value), so both are
    scrubbed."""
    if _wants_json():
        emit_json({"error": {"code": code, "message": message, "details": details}})
    echo(f"error: {message}", err=True)
