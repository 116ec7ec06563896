"""The Kubernetes runner: probes rendered as Jobs (RayJobs for a RayJob), run, and
always cleaned up.

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
from clusterbisect.runners.base import DRY_RUN_MODES, Fidelity, PrivateFile, Probe, RunnerContext
from clusterbisect.runners.kubernetes import carried, isolation, pipjob, rayjobs, render, secretref
from clusterbisect.runners.kubernetes.cleanup import cleanup
from clusterbisect.runners.kubernetes.client import (
    Api,
    Connection,
    connect,
    context_namespace,
    model_problems,
    settings_of,
)
from clusterbisect.runners.kubernetes.jobs import ProbeJobs
from clusterbisect.runners.kubernetes.namespace import source_namespace, source_refused
from clusterbisect.runners.kubernetes.objects import ProbeObjects, field_error
from clusterbisect.settings import apply_changes, flatten
from clusterbisect.specs.model import PIP, Spec
from clusterbisect.specs.pip import install_lines

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
        good = self.context.good
        # A pip freeze has no pod: its probes run in --pip-image (pipjob.py).
        self.pip = good is not None and good.format == PIP
        self._template = (
            pipjob.job_spec(good, self.options.pip_image) if good is not None and self.pip else good
        )
        # A RayJob is probed as RayJobs (KubeRay runs its entrypoint); the rest as Jobs.
        self.rayjob = rayjobs.applies(good)
        if self._template is not None:  # refuse a spec without a pod template now
            if self.rayjob:
                rayjobs.check_options(self._template, self._static_render_options())
            else:
                render.probe_template(self._template, self.options.template)
        self._conn = connection
        self._namespace_from: str | None = None  # where the probe namespace came from
        self._api: Api | None = None
        self.clock = clock
        self.sleep = sleep
        self._script: str | None = None
        self._configmap: str | None = None  # created in the cluster, to delete on close
        self._jobs: ProbeJobs | None = None
        self._rayjobs: rayjobs.RayJobProbes | None = None
        self._swept = False  # this session's leftovers (a killed run's) were deleted
        self._volume_notes: dict[str, None] = {}  # what probes do not share, in order

    # --- setup ----------------------------------------------------------------------

    def connection(self) -> Connection:
        """The cluster connection, made on first use (a client dry run never makes one).

        Its namespace is where probes go: ``-n``, else the source's namespace when the
        cluster has it and we may create probes there, else the context's, else
        ``default``.
        """
        if self._conn is None:
            source = source_namespace(self.context.good)
            wanted = self.options.namespace or source
            hint = "a client --dry-run needs no cluster"
            conn = connect(self.options.kubeconfig, self.options.context, wanted, hint=hint)
            refused = (
                source_refused(self._api_of(conn), source, self.rayjob)
                if source and wanted == source
                else None
            )
            if self.options.namespace:
                self._namespace_from = "-n"
            elif source and refused is None:
                self._namespace_from = "the source's"
            elif source:
                conn = connect(self.options.kubeconfig, self.options.context, None, hint=hint)
                self._namespace_from = f"the context's; {refused}"
            else:
                self._namespace_from = "the context's"
            self._conn = conn
        return self._conn

    def _api_of(self, conn: Connection) -> Api:
        return Api(conn, self.options.retries, self.options.retry_base_s, self.sleep)

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
        """The probe namespace: -n, else the source's, else the context's; None when
        unknown (a client dry run without a kubeconfig)."""
        if self.options.namespace:
            self._namespace_from = "-n"
            return self.options.namespace
        if self._conn is None and self.mode == "client":
            source = source_namespace(self.context.good)
            if source:
                self._namespace_from = "the source's; not checked in a client dry run"
                return source
            self._namespace_from = "the context's"
            return context_namespace(self.options.kubeconfig, self.options.context)
        return self.connection().namespace

    def namespace_said(self) -> str:
        """``namespace 'ml' (the source's)``: where probes go, and why there."""
        namespace = self.namespace()
        if namespace is None:
            return "the namespace of the kubeconfig's context when applied (none set)"
        return f"namespace {namespace!r} ({self._namespace_from or 'the context s'})"

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
            template=self.options.template,
            volumes=self._volume_mode(),
            admission_labels=(*isolation.ADMISSION_LABELS, *self.options.admission_labels),
        )

    def _volume_mode(self) -> str:
        if self.options.allow_shared_volumes:
            return isolation.SHARED
        return isolation.SCRATCH if self.options.scratch_volumes else isolation.READ_ONLY

    # --- the Runner protocol --------------------------------------------------------

    def untestable(self, changes: list[Change]) -> dict[str, str]:
        """Changes outside the probe's pod template (other roles, object-level fields);
        every pin of a pip freeze is installed by the probe's install step."""
        spec = self.context.good
        if self.pip:
            return {}
        if spec is None:
            log.warning("k8s.untestable_without_spec", changes=len(changes))
            return {}
        paths: dict[str, Any] = {}
        if any(not c.path for c in changes):
            paths = {k: s.path for k, s in flatten(spec).items()}
        if self.rayjob:
            return rayjobs.untestable(changes, self._workload_given(), paths)
        options = self._static_render_options()
        reasons = carried.untestable(spec, changes, options, paths)
        self._check_fields(spec, [c for c in changes if c.key not in reasons])
        return reasons

    def _workload_given(self) -> bool:
        return self.options.command is not None or bool(self.context.command)

    def _check_fields(self, good: Any, changes: list[Change]) -> None:
        """Bad input before any probe runs: a field unknown to the client's model of a
        Job (``envv``), in the good spec or a change; creates are Strict too."""
        options = self._static_render_options()
        for spec, origin in ((good, None), (apply_changes(good, changes), changes)):
            job = render.render_job("check", self.context.session_id, spec, [], options)
            problems = model_problems("V1Job", job)
            if problems:
                raise field_error(good, job, problems, origin)

    def _static_render_options(self) -> render.RenderOptions:
        return render.RenderOptions(
            container=self.context.container,
            command=self.options.command,
            args=self.options.args,
            probe_name=self.options.probe,
            template=self.options.template,
            volumes=self._volume_mode(),
        )

    def fidelity(self) -> Fidelity:
        """Where probes go (which namespace, and why), which template they run and the
        good spec's settings they do not carry."""
        spec = self._template  # a pip freeze's: the Job its probes are rendered from
        target = self.namespace_said()
        if spec is None:
            return Fidelity(target=target)
        if self.pip:
            image = self.options.pip_image
            return Fidelity(target=target, runs=f"the pins installed in {image}, then the workload")
        if self.rayjob:
            return Fidelity(
                target=target,
                runs="the whole RayJob: a fresh Ray cluster per probe, its entrypoint "
                "submitted by KubeRay",
                not_carried=rayjobs.not_carried(spec, self._workload_given()),
            )
        options = self._static_render_options()
        ref = render.probe_template(spec, options.template)
        return Fidelity(
            target=target,
            runs=f"{render.where_probes_run(spec, ref)}, as a Job of one pod",
            not_carried=carried.not_carried(spec, options),
        )

    def notes(self) -> list[str]:
        """What every probe changes of the job: volumes not shared as they are."""
        if not self._volume_notes and self._template is not None and not self.rayjob:
            options = self._static_render_options()
            good = self._template
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
        make = rayjobs.render_rayjob if rayjobs.applies(probe.spec) else render.render_job
        job = make(
            probe.probe_id,
            probe.session_id,
            self._template if self.pip and self._template else probe.spec,
            probe.changes,
            options,
            name=name or stable,
            timeout_s=probe.timeout_s,
            workload=probe.command,
            purpose=probe.purpose or None,
        )
        if self.pip:
            assert self.options.pip_image is not None
            job = pipjob.add_install_step(job, install_lines(probe.spec), self.options.pip_image)
        self._remember_volumes(job)
        script = self.probe_script()
        configmap = None
        if script is not None and self.options.probe is not None:
            configmap = render.render_configmap(
                probe.session_id, self.options.probe, script, options.namespace
            )
        if job["kind"] != "Job":
            # A RayJob is created alone (rayjobs.RayJobProbes): its secrets stay in it,
            # and what is shown of it hides them (docs/kinds.md).
            return ProbeObjects(configmap, secretref.kept(job, self.context.redactor))
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
            verdict = self._server_dry_run(objects.manifests(), probe.spec)
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
        rayjob = rayjobs.applies(probes[0].spec)
        if rayjob:
            rayjobs.check_crd(self.api, probes[0].spec)
        with sigterm_as_interrupt():
            try:
                self._sweep_leftovers(probes[0].session_id)
                tracked = self._run_rayjobs(probes) if rayjob else self._run_jobs(probes)
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
            results.append(pipjob.install_verdict(item.result) if self.pip else item.result)
        return results

    def _run_jobs(self, probes: list[Probe]) -> list[Any]:
        self._ensure_configmap(probes[0].session_id)
        jobs = self.jobs
        tracked = [
            jobs.start(probe, functools.partial(self._job, probe), self._main_container(probe))
            for probe in probes
        ]
        jobs.watch(tracked)
        return tracked

    def _run_rayjobs(self, probes: list[Probe]) -> list[Any]:
        if self._rayjobs is None:
            signature = self.context.signature
            pattern = signature.compiled() if signature is not None else None
            self._rayjobs = rayjobs.RayJobProbes(
                self.api, probes[0].spec, self.options, self.clock, self.sleep, pattern
            )
        tracked = [
            self._rayjobs.start(probe, functools.partial(self._rayjob, probe)) for probe in probes
        ]
        self._rayjobs.watch(tracked)
        return tracked

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
                entry.update(self._server_dry_run(manifests, probe.spec))
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

    def _server_dry_run(
        self, manifests: list[dict[str, Any]], spec: Spec | None = None
    ) -> dict[str, Any]:
        """Send ``manifests`` (of ``spec``'s probe) with dryRun=All; a rejection is
        reported, not raised."""
        conn = self.connection()
        if spec is not None and rayjobs.applies(spec):
            rayjobs.check_crd(self.api, spec)
            probes = rayjobs.RayJobProbes(self.api, spec, self.options)
            try:
                for manifest in manifests:
                    probes.create(manifest, dry_run="All")
            except BackendError as err:
                return {"accepted": False, "error": err.message}
            return {"accepted": True}
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
                rayjobs=len(deleted["rayjobs"]),
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

    def _rayjob(self, probe: Probe) -> dict[str, Any]:
        """The probe's RayJob, a fresh name each time."""
        return self.objects(probe, render.job_name(probe.session_id, probe.probe_id)).moved.job

    def _main_container(self, probe: Probe) -> str:
        """The container whose exit and log are the probe's."""
        if self.pip:
            return pipjob.CONTAINER
        ref = render.probe_template(probe.spec, self.options.template)
        template = (
            render.template_of(probe.spec, ref) or self.manifests(probe)[-1]["spec"]["template"]
        )
        return render.main_container_name(probe.spec, template, self.context.container)

    def _abort(self) -> int:
        """Delete every Job still in flight and the ``--probe`` ConfigMap."""
        deleted = self.jobs.abort() if self._jobs is not None else 0
        if self._rayjobs is not None:
            deleted += self._rayjobs.abort()
        self._delete_configmap()
        return deleted


def _default_probes_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "probes"  # the repository's probes/


def make_runner(context: RunnerContext, options: KubernetesOptions) -> KubernetesRunner:
    """The runner (the registry's factory). A run that launches connects now, so a
    missing or broken kubeconfig fails before any progress is shown; a dry run or step
    mode (render only) never connects."""
    runner = KubernetesRunner(context, options)
    if runner.mode == "none" and context.good is not None:
        runner.connection()
    return runner
