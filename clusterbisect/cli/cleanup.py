"""``clusterbisect cleanup``: delete probe objects left on a cluster."""

from __future__ import annotations

import click

from clusterbisect.cli.common import emit_json, json_option, kube_options


@click.command("cleanup")
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
