"""The Kubernetes runner: probes rendered as Jobs, run, and always cleaned up.

Rendering is pure and lives in ``render`` (the Job) and ``secretref`` (its secret
values moved into a Secret it refers to); following the Jobs in flight (watch,
verdicts, logs, deletion) in ``jobs``. This module is the runner itself: what a probe
Job cannot test, rendering for people (a Job that refers to its Secret, runnable as
written) and the Secret for a private file, dry runs (client, or server with
``dryRun=All``), the ``--probe`` ConfigMap, and running a batch of probes with cleanup
on completion, timeout, error and Ctrl-C/SIGTERM. Nothing is printed on stdout.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from clusterbisect.config import KubernetesOptions
from clusterbisect.diff import Change
from clusterbisect.errors import BackendError, InputError, Interrupted
from clusterbisect.extras import require
from clusterbisect.files import write_private
from clusterbisect.interrupts import sigterm_as_interrupt
from clusterbisect.log import get_logger
from clusterbisect.outcome import RunResult
from clusterbisect.redact import Redactor
from clusterbisect.runners.base import DRY_RUN_MODES, PrivateFile, Probe, RunnerContext
from clusterbisect.runners.kubernetes import isolation, render, secretref
from clusterbisect.runners.kubernetes.cleanup import cleanup
from clusterbisect.runners.kubernetes.client import (
    Api,
    Connection,
    connect,
    context_namespace,
    field_path,
    model_problems,
    settings_of,
)
from clusterbisect.runners.kubernetes.jobs import ProbeJobs
from clusterbisect.settings import apply_changes, flatten

log = get_logger(__name__)


class KubernetesRunner:
    """Runs probes as Kubernetes Jobs in one namespace."""

    name = "kubernetes"

    def __init__(
        self,
        context: RunnerContext | None = None,
        options: KubernetesOptions | None = None,
        *,
        connection: Connection | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.context = context or RunnerContext()
        self.options = settings_of(options)
        self.mode = self.context.dry_run or "none"  # none | client | server
        if self.mode not in ("none", *DRY_RUN_MODES):
            raise InputError(
                f"expected one of {', '.join(DRY_RUN_MODES)}, got {self.mode!r}",
                field="--dry-run",
            )
        if self.context.good is not None:
            render.primary_template(self.context.good)  # a spec without a pod template
        self._conn = connection
        self._api: Api | None = None
        self.clock = clock
        self.sleep = sleep
        self._script: str | None = None
        self._configmap: str | None = None  # created in the cluster, to delete on close
        self._jobs: ProbeJobs | None = None
        self._swept = False  # this session's leftovers (a killed run's) were deleted
        self._volume_notes: dict[str, None] = {}  # what probes do not share, in order

    # --- setup ----------------------------------------------------------------------

    def connection(self) -> Connection:
        """The cluster connection, made on first use (a client dry run never makes one)."""
        if self._conn is None:
            self._conn = connect(
                self.options.kubeconfig, self.options.context, self.options.namespace
            )
        return self._conn

    @property
    def jobs(self) -> ProbeJobs:
        """The probe Jobs in flight (connects on first use)."""
        if self._jobs is None:
            signature = self.context.signature
            pattern = signature.compiled() if signature is not None else None
            self._jobs = ProbeJobs(self.api, self.options, self.clock, self.sleep, pattern)
        return self._jobs

    @property
    def api(self) -> Api:
        if self._api is None:
            self._api = Api.of(self.connection(), self.options, self.sleep)
        return self._api

    def namespace(self) -> str | None:
        """The probe namespace: -n, else the context's; None when unknown (client dry run)."""
        if self.options.namespace:
            return self.options.namespace
        if self._conn is not None:
            return self._conn.namespace
        if self.mode == "client":
            return context_namespace(self.options.kubeconfig, self.options.context)
        return self.connection().namespace

    def probe_script(self) -> str | None:
        """The text of ``probes/NAME.py`` for ``--probe NAME``."""
        if not self.options.probe:
            return None
        if self._script is None:
            root = (
                Path(self.options.probes_dir) if self.options.probes_dir else _default_probes_dir()
            )
            path = root / f"{self.options.probe}.py"
            if not path.is_file():
                found = sorted(p.stem for p in root.glob("*.py") if not p.stem.startswith("_"))
                names = ", ".join(found) or "none"
                raise InputError(
                    f"no probe {self.options.probe!r} in {root} (probes: {names})",
                    field="--probe",
                )
            self._script = path.read_text(encoding="utf-8")
        return self._script

    def render_options(self, session_id: str) -> render.RenderOptions:
        """How probe Jobs of ``session_id`` are rendered."""
        script = self.probe_script()
        return render.RenderOptions(
            namespace=self.namespace(),
            container=self.context.container,
            command=self.options.command,
            args=self.options.args,
            probe_name=self.options.probe,
            probe_configmap=(
                render.configmap_name(session_id, self.options.probe or "", script)
                if script is not None
                else None
            ),
            ttl=self.options.ttl,
            default_timeout_s=self.options.default_timeout_s,
            volumes=self._volume_mode(),
            admission_labels=(*isolation.ADMISSION_LABELS, *self.options.admission_labels),
        )

    def _volume_mode(self) -> str:
        if self.options.allow_shared_volumes:
            return isolation.SHARED
        return isolation.SCRATCH if self.options.scratch_volumes else isolation.READ_ONLY

    # --- the Runner protocol --------------------------------------------------------

    def untestable(self, changes: list[Change]) -> dict[str, str]:
        """Changes outside the probe's pod template (other roles, object-level fields)."""
        spec = self.context.good
        if spec is None:
            log.warning("k8s.untestable_without_spec", changes=len(changes))
            return {}
        paths: dict[str, Any] = {}
        if any(not c.path for c in changes):
            paths = {k: s.path for k, s in flatten(spec).items()}
        options = self._static_render_options()
        reasons = render.untestable(spec, changes, options, paths)
        self._check_fields(spec, [c for c in changes if c.key not in reasons])
        return reasons

    def _check_fields(self, good: Any, changes: list[Change]) -> None:
        """Bad input, before any probe runs: a field the Kubernetes API does not know
        (a typo such as ``envv``) in the good spec, or brought by a change. Checked
        with the client's own model of a Job, offline; the API server checks again on
        every create (fieldValidation=Strict)."""
        options = self._static_render_options()
        for spec, origin in ((good, None), (apply_changes(good, changes), changes)):
            job = render.render_job("check", self.context.session_id, spec, [], options)
            problems = model_problems("V1Job", job)
            if problems:
                raise _field_error(good, job, problems, origin)

    def _static_render_options(self) -> render.RenderOptions:
        return render.RenderOptions(
            container=self.context.container,
            command=self.options.command,
            args=self.options.args,
            probe_name=self.options.probe,
            volumes=self._volume_mode(),
        )

    def notes(self) -> list[str]:
        """What every probe changes about the job, for the report: the volumes it does
        not share as they are (read-only, or a scratch directory), and how to undo it."""
        if not self._volume_notes and self.context.good is not None:
            options = self._static_render_options()
            good = self.context.good
            self._remember_volumes(
                render.render_job("notes", self.context.session_id, good, [], options)
            )
        notes = list(self._volume_notes)
        if notes and self._volume_mode() == isolation.READ_ONLY:
            notes.append(
                "probes mount persistent volumes read-only so they cannot change the job's "
                "data; --scratch-volumes gives them empty ones, --allow-shared-volumes "
                "mounts them as they are"
            )
        return notes

    def _remember_volumes(self, job: dict[str, Any]) -> None:
        text = (job["metadata"].get("annotations") or {}).get(render.ANN_VOLUMES)
        for line in text.split("; ") if text else []:
            self._volume_notes.setdefault(line, None)

    def objects(self, probe: Probe, name: str | None = None) -> ProbeObjects:
        """What ``probe`` creates: [the ``--probe`` ConfigMap], [its Secret], its Job,
        which refers to the Secret for its secret values. Without ``name`` the Job's
        name is stable for the probe (a rendering shown twice names the same Secret)."""
        options = self.render_options(probe.session_id)
        stable = render.job_name(
            probe.session_id,
            probe.probe_id,
            render.short_hash(f"{probe.session_id}/{probe.probe_id}", 8),
        )
        job = render.render_job(
            probe.probe_id,
            probe.session_id,
            probe.spec,
            probe.changes,
            options,
            name=name or stable,
            timeout_s=probe.timeout_s,
            workload=probe.command,
            purpose=probe.purpose or None,
        )
        self._remember_volumes(job)
        script = self.probe_script()
        configmap = None
        if script is not None and self.options.probe is not None:
            configmap = render.render_configmap(
                probe.session_id, self.options.probe, script, options.namespace
            )
        return ProbeObjects(configmap, secretref.externalize(job, self.context.redactor))

    def manifests(self, probe: Probe, name: str | None = None) -> list[dict[str, Any]]:
        """What ``probe`` creates, in order, as sent: [ConfigMap], [Secret], Job."""
        return self.objects(probe, name).manifests()

    def render(self, probe: Probe) -> dict[str, Any]:
        """The probe's manifest as data, ready to write as YAML: the Job refers to the
        probe's Secret (:meth:`private`) for its secret values, so it runs as written
        once the Secret is applied. A secret no manifest can refer to (an annotation's
        value) is hidden here, and :meth:`private` holds that Job whole.

        With ``--probe`` it is a ``v1 List`` of the ConfigMap and the Job. With
        ``dry_run="server"`` the manifests are first sent with ``dryRun=All``; a
        rejection raises ``BackendError`` with the API server's reason.
        """
        objects = self.objects(probe)
        if self.mode == "server":
            # --dry-run=server: what is planned must also pass admission, quota and RBAC.
            verdict = self._server_dry_run(objects.manifests())
            if not verdict["accepted"]:
                raise BackendError(
                    f"server dry run rejected probe {probe.probe_id}: {verdict['error']}",
                    details={"probe_id": probe.probe_id},
                )
        shown = objects.shown(self.context.redactor)
        if len(shown) == 1:
            return shown[0]
        return {"apiVersion": "v1", "kind": "List", "items": shown}

    def private(self, probe: Probe) -> PrivateFile | None:
        """The probe's Secret (and, when a secret stays in the Job, the whole Job)."""
        return self.objects(probe).private()

    def run(self, probes: list[Probe]) -> list[RunResult]:
        """Create one Job per probe, watch them all, return results in order."""
        if not probes:
            return []
        if self.mode != "none":
            plan = self.dry_run(probes)
            return [
                RunResult(
                    exit_code=None,
                    infra_error=f"dry run ({plan['mode']}): not launched",
                    details=entry,
                )
                for entry in plan["probes"]
            ]
        require("kubernetes", "the Kubernetes backend")
        with sigterm_as_interrupt():
            try:
                self._sweep_leftovers(probes[0].session_id)
                self._ensure_configmap(probes[0].session_id)
                jobs = self.jobs
                tracked = [
                    jobs.start(
                        probe, functools.partial(self._job, probe), self._main_container(probe)
                    )
                    for probe in probes
                ]
                jobs.watch(tracked)
            except KeyboardInterrupt:
                deleted = self._abort()
                raise Interrupted(
                    f"interrupted; deleted {deleted} probe job(s) with their pods",
                    details={"deleted": deleted},
                ) from None
            except BaseException:
                self._abort()
                raise
        results = []
        for item in tracked:
            assert item.result is not None
            results.append(item.result)
        return results

    def close(self) -> None:
        """Delete anything still in flight and the ``--probe`` ConfigMap."""
        if self._conn is None:
            return
        self._abort()

    # --- dry runs -------------------------------------------------------------------

    def dry_run(self, probes: list[Probe]) -> dict[str, Any]:
        """Write each probe's manifest under the state dir; with ``server`` also send it
        with ``dryRun=All`` so admission, quota and RBAC are checked."""
        mode = "server" if self.mode == "server" else "client"
        out_dir = self._manifest_dir()
        entries: list[dict[str, Any]] = []
        for probe in probes:
            objects = self.objects(probe)
            manifests = objects.manifests()
            private = objects.private()
            path: Path | None = None
            secret_path: Path | None = None
            if out_dir is not None:
                path = out_dir / f"{probe.probe_id}.yaml"
                shown = objects.shown(self.context.redactor)
                path.write_text(yaml.safe_dump_all(shown, sort_keys=False), encoding="utf-8")
                if private is not None:
                    secret_path = out_dir / f"{probe.probe_id}{private.suffix}"
                    write_private(secret_path, private.text)
            entry: dict[str, Any] = {
                "probe_id": probe.probe_id,
                "job": manifests[-1]["metadata"]["name"],
                "namespace": self.namespace(),
                "changes": [c.key for c in probe.changes],
                "manifest": str(path) if path else None,
                "secret_file": str(secret_path) if secret_path else None,
            }
            if mode == "server":
                entry.update(self._server_dry_run(manifests))
            entries.append(entry)
        return {
            "mode": mode,
            "namespace": self.namespace(),
            "ok": all(e.get("accepted", True) for e in entries),
            "probes": entries,
        }

    def _manifest_dir(self) -> Path | None:
        """The session's ``manifests/`` folder (made on first use), or None without one."""
        out = self.context.manifests_dir
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        return out

    def _server_dry_run(self, manifests: list[dict[str, Any]]) -> dict[str, Any]:
        """Send ``manifests`` with dryRun=All; a rejection is reported, not raised."""
        conn = self.connection()
        for manifest in manifests:
            if manifest["kind"] == "ConfigMap":
                fn, resource = conn.core.create_namespaced_config_map, "configmaps"
            elif manifest["kind"] == "Secret":
                fn, resource = conn.core.create_namespaced_secret, "secrets"
            else:
                fn, resource = conn.batch.create_namespaced_job, "jobs.batch"
            try:
                self.api.create(fn, manifest, resource, dry_run="All")
            except BackendError as err:
                return {"accepted": False, "error": err.message}
        return {"accepted": True}

    # --- lifecycle ------------------------------------------------------------------

    def _sweep_leftovers(self, session_id: str) -> None:
        """Before this runner's first probe: delete what a killed run of the same
        session left (its Jobs would otherwise run on, unwatched, and a re-run probe id
        would meet them). A new session has none; a resumed one may."""
        if self._swept:
            return
        report = cleanup(session_id, self.connection(), options=self.options, api=self.api)
        self._swept = True
        deleted = report["deleted"]
        if any(deleted.values()):
            log.warning(
                "k8s.leftovers_deleted",
                session=session_id,
                jobs=len(deleted["jobs"]),
                pods=len(deleted["pods"]),
                configmaps=len(deleted["configmaps"]),
            )

    def _ensure_configmap(self, session_id: str) -> None:
        script = self.probe_script()
        if script is None or self.options.probe is None or self._configmap:
            return
        from kubernetes.client.exceptions import ApiException

        conn = self.connection()
        body = render.render_configmap(session_id, self.options.probe, script, conn.namespace)
        # A 409 means the same content-addressed ConfigMap exists from an earlier run.
        with contextlib.suppress(ApiException):
            self.api.create(
                conn.core.create_namespaced_config_map, body, "configmaps", passthrough=(409,)
            )
        self._configmap = body["metadata"]["name"]

    def _delete_configmap(self) -> None:
        if not self._configmap:
            return
        conn = self.connection()
        with contextlib.suppress(BackendError):
            self.api.delete(conn.core.delete_namespaced_config_map, self._configmap, "configmaps")
        self._configmap = None

    def _job(self, probe: Probe) -> list[dict[str, Any]]:
        """The probe's Secret (if it has one) and its Job, a fresh name each time."""
        objects = self.objects(probe, render.job_name(probe.session_id, probe.probe_id))
        return objects.manifests()[1 if objects.configmap else 0 :]

    def _main_container(self, probe: Probe) -> str:
        """The container whose exit and log are the probe's."""
        ref = render.primary_template(probe.spec)
        template = (
            render.template_of(probe.spec, ref) or self.manifests(probe)[-1]["spec"]["template"]
        )
        return render.main_container_name(probe.spec, template, self.context.container)

    def _abort(self) -> int:
        """Delete every Job still in flight and the ``--probe`` ConfigMap."""
        deleted = self.jobs.abort() if self._jobs is not None else 0
        self._delete_configmap()
        return deleted


def _field_error(
    good: Any, job: dict[str, Any], problems: list[tuple[Any, ...]], changes: list[Change] | None
) -> InputError:
    """The unknown (or mistyped) fields of a probe Job, named as the spec's settings
    (``containers[trainer].envv``) when they are in a container."""
    pod = job["spec"]["template"]["spec"]
    fields = [(_setting_path(tuple(loc), pod), message) for loc, message in problems]
    path = fields[0][0]
    related = [c.key for c in changes or [] if c.key.startswith(path) or path.startswith(c.key)]
    if changes is None:
        origin = f"it is in the good spec {good.source}, so in every probe"
    elif related:
        origin = f"it comes from the change {', '.join(related)} of the bad spec"
    else:
        origin = "it comes from the changes of the bad spec"
    listed = "; ".join(f"{p}: {m}" for p, m in fields)
    return InputError(
        f"{listed} in the {good.kind}'s pod template: the Kubernetes API has no such "
        f"field ({origin})",
        details={"fields": [p for p, _ in fields]},
    )


def _setting_path(loc: tuple[Any, ...], pod: dict[str, Any]) -> str:
    """A probe Job's field path as the spec's setting key where it can be one."""
    base = ("spec", "template", "spec")
    if loc[:3] != base:
        return field_path(loc)
    rest = loc[3:]
    if len(rest) >= 2 and rest[0] in ("containers", "initContainers") and isinstance(rest[1], int):
        items = pod.get(rest[0]) or []
        name = items[rest[1]].get("name") if rest[1] < len(items) else None
        if name:
            prefix = "containers" if rest[0] == "containers" else "initContainers"
            tail = field_path(rest[2:])
            joined = f"{prefix}[{name}]"
            return joined + ("" if not tail else tail if tail.startswith("[") else "." + tail)
    return field_path(rest)


@dataclass
class ProbeObjects:
    """What one probe creates: the ``--probe`` ConfigMap (or None), and its Job with
    its secret values moved into a Secret (``secretref.Externalized``)."""

    configmap: dict[str, Any] | None
    moved: secretref.Externalized

    def manifests(self) -> list[dict[str, Any]]:
        """In the order they are created: [ConfigMap], [Secret], Job."""
        found = [self.configmap, self.moved.secret, self.moved.job]
        return [m for m in found if m is not None]

    def shown(self, redactor: Redactor) -> list[dict[str, Any]]:
        """For people and files: [ConfigMap], the Job (which holds no secret value)."""
        return [m for m in (self.configmap, redactor.value(self.moved.job)) if m is not None]

    def private(self) -> PrivateFile | None:
        """The Secret to apply with the shown Job; or, when a secret stayed in the Job
        (:attr:`secretref.Externalized.unreferenced`), everything to apply instead."""
        secret, leftovers = self.moved.secret, self.moved.unreferenced
        if secret is None and not leftovers:
            return None
        if not leftovers:
            return PrivateFile(
                suffix=".secret.yaml",
                text=yaml.safe_dump(secret, sort_keys=False),
                holds="the probe's Secret, which its Job refers to",
                usage="kubectl apply -f {private} && kubectl create -f {rendered}",
            )
        return PrivateFile(
            suffix=".secret.yaml",
            text=yaml.safe_dump_all(self.manifests(), sort_keys=False),
            holds="the probe's Secret and its Job as launched: a secret value a manifest "
            f"cannot refer to stays in the Job ({', '.join(leftovers)})",
            usage="kubectl apply -f {private}",
        )


def _default_probes_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "probes"


def make_runner(context: RunnerContext, options: KubernetesOptions) -> KubernetesRunner:
    """The runner (the registry's factory); nothing connects until a probe is run or sent."""
    return KubernetesRunner(context, options)
