"""A scripted Kubernetes API at the client boundary, for the runner's unit tests.

Only ``kubernetes.client.BatchV1Api`` / ``CoreV1Api`` and ``kubernetes.watch.Watch``
are replaced, with ``create_autospec`` of the real classes: a call with an argument
the real client does not take (``tailLines`` for ``tail_lines``) fails as it would on
a cluster. They answer with the client's own model objects (V1Job, V1Pod, ...) and,
for a streamed log, a real ``urllib3.HTTPResponse``.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest.mock import create_autospec

import pytest
import yaml
from conftest import EXAMPLES
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from clusterbisect.outcome import FailureSignature
from clusterbisect.runners.base import Probe, RunnerContext
from clusterbisect.runners.kubernetes import KubernetesRunner, KubernetesSettings, render
from clusterbisect.specs import load_spec

EXAMPLE = EXAMPLES / "training-upgrade"
SESSION = "20261127-023012-a1b2c3"
T0 = dt.datetime(2026, 11, 27, 3, 0, tzinfo=dt.timezone.utc)


# --- a scripted cluster -------------------------------------------------------------


@dataclass
class Step:
    """What one probe Job looks like at one tick of the fake cluster."""

    conditions: list[tuple[str, str]] = field(default_factory=list)  # (type, reason)
    pod: Callable[[str], client.V1Pod] | None = None
    more_pods: list[Callable[[str], client.V1Pod]] = field(default_factory=list)
    suspended: bool = False

    def pods(self, job: str) -> list[client.V1Pod]:
        makers = ([self.pod] if self.pod else []) + self.more_pods
        return [make(job) for make in makers]


def condition(kind: str, reason: str) -> client.V1JobCondition:
    return client.V1JobCondition(
        type=kind, status="True", reason=reason, last_transition_time=T0, message=reason
    )


def container(name: str, **state: Any) -> client.V1ContainerStatus:
    return client.V1ContainerStatus(
        name=name,
        image="registry.example.com/ml/pytorch-train:2.6.0",
        image_id="",
        ready=False,
        restart_count=0,
        state=client.V1ContainerState(**state),
    )


def terminated(code: int, reason: str) -> dict[str, Any]:
    return {
        "terminated": client.V1ContainerStateTerminated(
            exit_code=code, reason=reason, started_at=T0, finished_at=T0
        )
    }


def waiting(reason: str, message: str = "") -> dict[str, Any]:
    return {"waiting": client.V1ContainerStateWaiting(reason=reason, message=message)}


def pod_for(
    phase: str,
    statuses: list[client.V1ContainerStatus] | None = None,
    conditions: list[client.V1PodCondition] | None = None,
    suffix: str = "x7k2p",
    node: str | None = "cpu-1",
    created: dt.datetime = T0,
) -> Callable[[str], client.V1Pod]:
    def make(job: str) -> client.V1Pod:
        return client.V1Pod(
            api_version="v1",
            kind="Pod",
            spec=client.V1PodSpec(containers=[], node_name=node),
            metadata=client.V1ObjectMeta(
                name=f"{job}-{suffix}",
                namespace="ns1",
                creation_timestamp=created,
                labels={
                    render.LABEL_JOB: job,
                    render.LABEL_SESSION: SESSION,
                    render.LABEL_MANAGED_BY: "clusterbisect",
                },
                owner_references=[
                    client.V1OwnerReference(
                        api_version="batch/v1",
                        kind="Job",
                        name=job,
                        uid="u-" + job,
                        controller=True,
                    )
                ],
            ),
            status=client.V1PodStatus(
                phase=phase, container_statuses=statuses, conditions=conditions
            ),
        )

    return make


RUNNING = Step(
    pod=pod_for(
        "Running", [container("trainer", running=client.V1ContainerStateRunning(started_at=T0))]
    )
)


def complete_steps() -> list[Step]:
    return [
        RUNNING,
        Step(
            [("SuccessCriteriaMet", "CompletionsReached"), ("Complete", "CompletionsReached")],
            pod_for("Succeeded", [container("trainer", **terminated(0, "Completed"))]),
        ),
    ]


def failed_steps(code: int, reason: str, new_cluster: bool = True) -> list[Step]:
    kinds = [("FailureTarget", "BackoffLimitExceeded")] if new_cluster else []
    return [
        RUNNING,
        Step(
            [*kinds, ("Failed", "BackoffLimitExceeded")],
            pod_for("Failed", [container("trainer", **terminated(code, reason))]),
        ),
    ]


@functools.cache
def _spec_of(name: str) -> Any:
    """An autospec of a real client class, made once (CoreV1Api has ~1,000 methods)."""
    if name == "Watch":
        from kubernetes import watch

        return create_autospec(watch.Watch)
    return create_autospec(getattr(client, name), instance=True)


def autospecced(mocker: Any, target: str) -> Any:
    """Patch ``target`` (``kubernetes.client.CoreV1Api``...) with a fresh autospec:
    what the class returns is an instance spec, reset for this test."""
    name = target.rsplit(".", 1)[1]
    spec = _spec_of(name)
    spec.reset_mock(return_value=True, side_effect=True)
    if name == "Watch":
        return mocker.patch(target, spec)
    return mocker.patch(target, return_value=spec)


def allow_access_reviews(mocker: Any, allowed: bool = True) -> Any:
    """An autospecced AuthorizationV1Api whose access reviews answer ``allowed``."""
    auth = autospecced(mocker, "kubernetes.client.AuthorizationV1Api").return_value
    auth.create_self_subject_access_review.return_value = client.V1SelfSubjectAccessReview(
        spec=client.V1SelfSubjectAccessReviewSpec(),
        status=client.V1SubjectAccessReviewStatus(allowed=allowed),
    )
    return auth


class FakeCluster:
    """Jobs created through the autospecced BatchV1Api follow the script of their probe."""

    def __init__(
        self,
        mocker: Any,
        scripts: dict[str, list[Step]],
        logs: dict[str, str] | None = None,
        decide: Callable[[dict[str, Any]], tuple[list[Step], str]] | None = None,
    ):
        self.scripts = scripts
        self.logs = logs or {}
        self.decide = decide  # script a Job from its body (what the workload would do)
        self.created: dict[str, dict[str, Any]] = {}  # job name -> body
        self.probe_of: dict[str, str] = {}
        self.deleted: list[str] = []
        self.events: dict[str, list[client.CoreV1Event]] = {}  # object name -> events
        self.tick = 0
        self.version = 100
        self.stream_calls = 0
        self.stream_hooks: dict[int, Callable[[], None]] = {}  # call number -> raise/act
        self.batch = autospecced(mocker, "kubernetes.client.BatchV1Api").return_value
        self.core = autospecced(mocker, "kubernetes.client.CoreV1Api").return_value
        self.watch = autospecced(mocker, "kubernetes.watch.Watch")
        self.auth = allow_access_reviews(mocker)
        # No probe RayJobs to sweep (a cluster with or without the CRD).
        self.custom = autospecced(mocker, "kubernetes.client.CustomObjectsApi").return_value
        self.custom.list_namespaced_custom_object.return_value = {"items": []}
        self.batch.create_namespaced_job.side_effect = self.create
        self.batch.list_namespaced_job.side_effect = self.list_jobs
        self.batch.delete_namespaced_job.side_effect = self.delete
        self.core.list_namespaced_pod.side_effect = self.list_pods
        self.core.read_namespaced_pod_log.side_effect = self.read_log
        self.core.list_namespaced_event.side_effect = self.list_events
        self.core.list_namespaced_config_map.return_value = client.V1ConfigMapList(
            items=[], metadata=client.V1ListMeta()
        )
        self.watch.return_value.stream.side_effect = self.stream

    # API calls -------------------------------------------------------------------

    def create(self, namespace: str, body: dict[str, Any], **kwargs: Any) -> client.V1Job:
        name = body["metadata"]["name"]
        if kwargs.get("dry_run") == "All":  # checked by the server, never persisted
            return client.V1Job(metadata=client.V1ObjectMeta(name=name))
        if name in self.created:
            raise api_exception(409, f'jobs.batch "{name}" already exists')
        self.created[name] = body
        probe = body["metadata"]["labels"][render.LABEL_PROBE]
        self.probe_of[name] = probe
        if self.decide is not None:
            self.scripts[probe], self.logs[probe] = self.decide(body)
        return self.job(name)

    def delete(self, name: str, namespace: str, **kwargs: Any) -> client.V1Status:
        self.deleted.append(name)
        return client.V1Status(status="Success")

    def list_jobs(self, namespace: str, **kwargs: Any) -> client.V1JobList:
        if kwargs.get("watch"):  # the watch's own call: see stream()
            return client.V1JobList(items=[], metadata=client.V1ListMeta())
        self.version += 1
        wanted = self.selected(kwargs.get("label_selector", ""))
        items = [self.job(n) for n in self.created if n not in self.deleted and n in wanted]
        return client.V1JobList(
            items=items, metadata=client.V1ListMeta(resource_version=str(self.version))
        )

    def list_pods(self, namespace: str, **kwargs: Any) -> client.V1PodList:
        selector = kwargs.get("label_selector", "")
        pods = []
        for name in self.created:
            if name in self.deleted:
                continue
            if selector.startswith(render.LABEL_JOB) and not selector.endswith("=" + name):
                continue
            pods += self.step(name).pods(name)
        return client.V1PodList(items=pods, metadata=client.V1ListMeta(resource_version="1"))

    def list_events(self, namespace: str, **kwargs: Any) -> client.CoreV1EventList:
        name = kwargs.get("field_selector", "").removeprefix("involvedObject.name=")
        return client.CoreV1EventList(items=self.events.get(name, []))

    def read_log(self, name: str, namespace: str, **kwargs: Any) -> Any:
        job = name.rsplit("-", 1)[0]
        text = self.logs.get(self.probe_of[job], "")
        if kwargs.get("_preload_content") is False:  # streamed, as the real client does
            import urllib3

            return urllib3.HTTPResponse(
                body=io.BytesIO(text.encode()), preload_content=False, status=200
            )
        return text

    def stream(self, func: Any, *args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        # What Watch.stream passes to the list call: its signature is checked too.
        func(*args, **{**kwargs, "watch": True, "_preload_content": False})
        self.stream_calls += 1
        hook = self.stream_hooks.get(self.stream_calls)
        if hook:
            hook()
        self.tick += 1
        wanted = self.selected(kwargs.get("label_selector", ""))
        for name in self.created:
            if name not in self.deleted and name in wanted:
                self.version += 1
                job = self.job(name)
                yield {"type": "MODIFIED", "object": job, "raw_object": {}}

    # state -------------------------------------------------------------------------

    def selected(self, selector: str) -> set[str]:
        """The Jobs whose labels match ``selector`` (``k=v,k=v``)."""
        wanted = dict(part.split("=", 1) for part in selector.split(",") if part)
        return {
            name
            for name, body in self.created.items()
            if all(body["metadata"]["labels"].get(k) == v for k, v in wanted.items())
        }

    def job_lists(self) -> list[Any]:
        """The calls that listed Jobs (not the watch's own)."""
        calls = self.batch.list_namespaced_job.call_args_list
        return [c for c in calls if not c.kwargs.get("watch")]

    def step(self, name: str) -> Step:
        script = self.scripts[self.probe_of[name]]
        return script[min(self.tick, len(script) - 1)]

    def job(self, name: str) -> client.V1Job:
        step = self.step(name)
        body = self.created[name]
        return client.V1Job(
            api_version="batch/v1",
            kind="Job",
            metadata=client.V1ObjectMeta(
                name=name,
                namespace="ns1",
                labels=body["metadata"]["labels"],
                resource_version=str(self.version),
                uid="u-" + name,
            ),
            spec=client.V1JobSpec(
                template=client.V1PodTemplateSpec(), suspend=step.suspended or None
            ),
            status=client.V1JobStatus(
                conditions=[condition(k, r) for k, r in step.conditions] or None,
                active=0 if step.conditions else 1,
                start_time=T0,
            ),
        )


def api_exception(status: int, message: str, headers: dict[str, str] | None = None) -> ApiException:
    err = ApiException(status=status, reason=message.split(":")[0])
    err.body = json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "message": message,
            "code": status,
        }
    )
    err.headers = headers or {}
    return err


def write_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A kubeconfig with a kind-like context (namespace ns1) and a prod one."""
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "kind-clusterbisect", "cluster": {"server": "https://127.0.0.1:6443"}},
                    {"name": "prod", "cluster": {"server": "https://prod.example.com"}},
                ],
                "users": [{"name": "probe", "user": {"token": "not-a-real-token"}}],
                "contexts": [
                    {
                        "name": "kind-clusterbisect",
                        "context": {
                            "cluster": "kind-clusterbisect",
                            "user": "probe",
                            "namespace": "ns1",
                        },
                    },
                    {"name": "prod", "context": {"cluster": "prod", "user": "probe"}},
                ],
                "current-context": "kind-clusterbisect",
            }
        )
    )
    monkeypatch.delenv("KUBECONFIG", raising=False)
    return path


def make(
    kubeconfig: Path,
    tmp_path: Path,
    clock: list[float] | None = None,
    dry_run: str | None = None,
    signature: FailureSignature | None = None,
    **options: Any,
) -> KubernetesRunner:
    settings = {
        "kubeconfig": str(kubeconfig),
        "poll_s": 0.0,
        "retry_base_s": 0.0,
        "pending_grace_s": 0.0,
        "image_pull_grace_s": 0.0,
        **options,
    }
    context = RunnerContext(
        session_id=SESSION,
        dry_run=dry_run,
        manifests_dir=tmp_path / "manifests",
        signature=signature,
    )
    if clock is None:
        return KubernetesRunner(context, KubernetesSettings(**settings), sleep=lambda s: None)
    return KubernetesRunner(
        context, KubernetesSettings(**settings), clock=lambda: clock[0], sleep=lambda s: None
    )


def probes(tmp_path: Path, *ids: str) -> list[Probe]:
    spec = load_spec(str(EXAMPLE / "good.yaml"))
    return [
        Probe(
            probe_id=pid,
            session_id=SESSION,
            spec=spec,
            changes=[],
            log_path=tmp_path / "logs" / f"{pid}.log",
            timeout_s=600,
        )
        for pid in ids
    ]
