"""What the commands share: one JSON document on stdout, the shared options, the result."""

from __future__ import annotations

import json
import sys
from typing import Any

import click


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


def signature_options(func: Any) -> Any:
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


# Which CLI options belong to which backend's options dataclass.
BACKEND_OPTION_NAMES = {
    "ray": ("address", "entrypoint_num_cpus", "entrypoint_num_gpus", "entrypoint_memory"),
    "kubernetes": ("kubeconfig", "context", "namespace", "command", "args", "probe"),
}


def backend_options(backend: str, **values: Any) -> dict[str, Any]:
    """The given options of ``backend`` (the others' options are ignored)."""
    names = BACKEND_OPTION_NAMES.get(backend, ())
    return {k: v for k, v in values.items() if k in names and v is not None}


def progress(quiet: bool) -> Any:
    from clusterbisect.progress import TerminalProgress

    return TerminalProgress(quiet=quiet)


def finish(result: dict[str, Any], as_json: bool) -> None:
    """Print the result and exit 0 with a culprit, 1 without."""
    from clusterbisect.errors import EXIT_NO_CULPRIT
    from clusterbisect.report import render_text

    if as_json:
        emit_json(result)
    else:
        click.echo(render_text(result))
    if result["status"] != "found":
        sys.exit(EXIT_NO_CULPRIT)
