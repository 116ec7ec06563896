"""Minimal CRDs of the training workload kinds for the test cluster.

PyTorchJob (kubeflow.org/v1), RayJob (ray.io/v1), a Volcano Job
(batch.volcano.sh/v1alpha1), LeaderWorkerSet (leaderworkerset.x-k8s.io/v1), JobSet
(jobset.x-k8s.io/v1alpha2), and Kubeflow Trainer's TrainJob and
ClusterTrainingRuntime (trainer.kubeflow.org/v1alpha1). They declare the fields
clusterbisect reads and the inputs in tests/ use, with structural schemas, so objects
are created with ``fieldValidation=Strict`` as on a cluster with the operators' CRDs
installed: an unknown or misspelt field is refused. Each pod template is validated
against the API server's own ``PodTemplateSpec`` (a JobSet's job templates against its
``JobTemplateSpec``), taken from its OpenAPI v3 document and converted to a
structural schema, so a typo inside a replica's pod template is refused too. There
are no controllers behind them: objects are stored, nothing runs them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Fetch = Callable[[str], dict[str, Any]]  # GET a path of the API server, as JSON

_META = "io.k8s.apimachinery.pkg.apis.meta.v1."
_SPECIAL: dict[str, dict[str, Any]] = {
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"x-kubernetes-int-or-string": True},
    "io.k8s.apimachinery.pkg.api.resource.Quantity": {"x-kubernetes-int-or-string": True},
    _META + "Time": {"type": "string", "format": "date-time"},
    _META + "MicroTime": {"type": "string", "format": "date-time"},
    "io.k8s.apimachinery.pkg.runtime.RawExtension": {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    },
    # Pod template metadata: what a controller copies onto the pods it creates.
    _META + "ObjectMeta": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "namespace": {"type": "string"},
            "generateName": {"type": "string"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
        },
    },
}
_FORMATS = {"int32", "int64", "double", "float", "byte", "date-time"}


def structural(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI v3 schema with its $refs inlined, as a CRD structural schema."""
    ref = schema.get("$ref")
    if ref is None and len(schema.get("allOf") or []) == 1:
        ref = schema["allOf"][0].get("$ref")
    if ref is not None:
        name = ref.rsplit("/", 1)[-1]
        if name in _SPECIAL:
            return dict(_SPECIAL[name])
        return structural(components[name], components)
    out: dict[str, Any] = {}
    if "type" in schema:
        out["type"] = schema["type"]
    if schema.get("format") in _FORMATS:
        out["format"] = schema["format"]
    if "enum" in schema:
        out["enum"] = schema["enum"]
    if "properties" in schema:
        out["type"] = "object"
        out["properties"] = {
            key: structural(value, components) for key, value in schema["properties"].items()
        }
        if schema.get("required"):
            out["required"] = schema["required"]
    if "items" in schema:
        out["items"] = structural(schema["items"], components)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        out["additionalProperties"] = structural(extra, components)
    elif extra is True:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "type" not in out and "x-kubernetes-int-or-string" not in out:
        out["type"] = "object"
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def pod_template(fetch: Fetch) -> dict[str, Any]:
    """io.k8s.api.core.v1.PodTemplateSpec from the API server, structural."""
    components = fetch("/openapi/v3/api/v1")["components"]["schemas"]
    return structural(components["io.k8s.api.core.v1.PodTemplateSpec"], components)


def job_template(fetch: Fetch) -> dict[str, Any]:
    """io.k8s.api.batch.v1.JobTemplateSpec from the API server, structural."""
    components = fetch("/openapi/v3/apis/batch/v1")["components"]["schemas"]
    return structural(components["io.k8s.api.batch.v1.JobTemplateSpec"], components)


def core_schema(fetch: Fetch, name: str) -> dict[str, Any]:
    """A core/v1 type (``EnvVar``, ``ResourceRequirements``) from the API server."""
    components = fetch("/openapi/v3/api/v1")["components"]["schemas"]
    return structural(components[f"io.k8s.api.core.v1.{name}"], components)


def _obj(properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, **extra}


STR = {"type": "string"}
INT = {"type": "integer", "format": "int32"}
BOOL = {"type": "boolean"}
NUM = {"type": "number"}
STR_MAP = {"type": "object", "additionalProperties": STR}
ANY = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def _crd(
    group: str,
    kind: str,
    plural: str,
    spec: dict[str, Any],
    version: str = "v1",
    scope: str = "Namespaced",
) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{group}",
            "labels": {"app.kubernetes.io/part-of": "clusterbisect-test-cluster"},
        },
        "spec": {
            "group": group,
            "names": {
                "kind": kind,
                "plural": plural,
                "singular": kind.lower(),
                "listKind": f"{kind}List",
            },
            "scope": scope,
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "schema": {
                        "openAPIV3Schema": _obj(
                            {
                                "apiVersion": STR,
                                "kind": STR,
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": ANY,
                            }
                        )
                    },
                }
            ],
        },
    }


def definitions(fetch: Fetch) -> list[dict[str, Any]]:
    """The two CRDs, their pod templates validated as the API server's own."""
    template = pod_template(fetch)
    restart = {"type": "string", "enum": ["Always", "OnFailure", "Never", "ExitCode"]}
    replica = _obj({"replicas": INT, "restartPolicy": restart, "template": template})
    run_policy = _obj(
        {
            "cleanPodPolicy": {"type": "string", "enum": ["All", "Running", "None"]},
            "ttlSecondsAfterFinished": INT,
            "activeDeadlineSeconds": {"type": "integer", "format": "int64"},
            "backoffLimit": INT,
            "suspend": BOOL,
            "managedBy": STR,
            "schedulingPolicy": _obj(
                {
                    "minAvailable": INT,
                    "queue": STR,
                    "minResources": {
                        "type": "object",
                        "additionalProperties": {"x-kubernetes-int-or-string": True},
                    },
                    "priorityClass": STR,
                    "scheduleTimeoutSeconds": INT,
                }
            ),
        }
    )
    elastic = _obj(
        {
            "minReplicas": INT,
            "maxReplicas": INT,
            "rdzvBackend": STR,
            "rdzvPort": INT,
            "rdzvHost": STR,
            "rdzvId": STR,
            "rdzvConf": {"type": "array", "items": _obj({"key": STR, "value": STR})},
            "standalone": BOOL,
            "nProcPerNode": INT,
            "maxRestarts": INT,
            "metrics": {"type": "array", "items": ANY},
        }
    )
    pytorch = _obj(
        {
            "pytorchReplicaSpecs": {"type": "object", "additionalProperties": replica},
            "runPolicy": run_policy,
            "elasticPolicy": elastic,
            "nprocPerNode": STR,
        },
        required=["pytorchReplicaSpecs"],
    )
    head = _obj(
        {
            "rayStartParams": STR_MAP,
            "serviceType": STR,
            "headService": ANY,
            "enableIngress": BOOL,
            "template": template,
        },
        required=["template"],
    )
    worker = _obj(
        {
            "groupName": STR,
            "replicas": INT,
            "minReplicas": INT,
            "maxReplicas": INT,
            "idleTimeoutSeconds": INT,
            "suspend": BOOL,
            "numOfHosts": INT,
            "rayStartParams": STR_MAP,
            "scaleStrategy": _obj({"workersToDelete": {"type": "array", "items": STR}}),
            "template": template,
        },
        required=["groupName", "template"],
    )
    cluster = _obj(
        {
            "rayVersion": STR,
            "enableInTreeAutoscaling": BOOL,
            "autoscalerOptions": ANY,
            "headServiceAnnotations": STR_MAP,
            "suspend": BOOL,
            "managedBy": STR,
            "gcsFaultToleranceOptions": ANY,
            "headGroupSpec": head,
            "workerGroupSpecs": {"type": "array", "items": worker},
        },
        required=["headGroupSpec"],
    )
    ray = _obj(
        {
            "entrypoint": STR,
            "runtimeEnvYAML": STR,
            "jobId": STR,
            "submissionMode": {
                "type": "string",
                "enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"],
            },
            "shutdownAfterJobFinishes": BOOL,
            "ttlSecondsAfterFinished": INT,
            "activeDeadlineSeconds": INT,
            "backoffLimit": INT,
            "suspend": BOOL,
            "managedBy": STR,
            "clusterSelector": STR_MAP,
            "entrypointNumCpus": NUM,
            "entrypointNumGpus": NUM,
            "entrypointResources": STR,
            "metadata": STR_MAP,
            "deletionStrategy": ANY,
            "submitterConfig": _obj({"backoffLimit": INT}),
            "submitterPodTemplate": template,
            "rayClusterSpec": cluster,
        }
    )
    return [
        _crd("kubeflow.org", "PyTorchJob", "pytorchjobs", pytorch),
        _crd("ray.io", "RayJob", "rayjobs", ray),
        *workload_definitions(fetch, template),
    ]


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


STR_LIST = _array(STR)


def workload_definitions(fetch: Fetch, template: dict[str, Any]) -> list[dict[str, Any]]:
    """A Volcano Job, LeaderWorkerSet, JobSet, TrainJob and ClusterTrainingRuntime."""
    policy = _obj(
        {
            "event": STR,
            "events": STR_LIST,
            "action": STR,
            "exitCode": INT,
            "timeout": STR,
        }
    )
    task = _obj(
        {
            "name": STR,
            "replicas": INT,
            "minAvailable": INT,
            "maxRetry": INT,
            "template": template,
            "policies": _array(policy),
            "topologyPolicy": STR,
            "dependsOn": ANY,
        },
        required=["name", "template"],
    )
    volcano = _obj(
        {
            "schedulerName": STR,
            "minAvailable": INT,
            "minSuccess": INT,
            "queue": STR,
            "maxRetry": INT,
            "ttlSecondsAfterFinished": INT,
            "priorityClassName": STR,
            "runningEstimate": STR,
            "plugins": {"type": "object", "additionalProperties": STR_LIST},
            "policies": _array(policy),
            "volumes": _array(ANY),
            "networkTopology": ANY,
            "tasks": _array(task),
        }
    )
    lws = _obj(
        {
            "replicas": INT,
            "startupPolicy": {"type": "string", "enum": ["LeaderCreated", "LeaderReady"]},
            "rolloutStrategy": ANY,
            "networkConfig": ANY,
            "leaderWorkerTemplate": _obj(
                {
                    "leaderTemplate": template,
                    "workerTemplate": template,
                    "size": INT,
                    "restartPolicy": {
                        "type": "string",
                        "enum": ["RecreateGroupOnPodRestart", "None", "Default"],
                    },
                    "subGroupPolicy": ANY,
                },
                required=["workerTemplate"],
            ),
        },
        required=["leaderWorkerTemplate"],
    )
    replicated = _obj(
        {
            "name": STR,
            "groupName": STR,
            "replicas": INT,
            "dependsOn": _array(_obj({"name": STR, "status": STR})),
            "template": job_template(fetch),
        },
        required=["name", "template"],
    )
    jobset = _obj(
        {
            "replicatedJobs": _array(replicated),
            "network": _obj(
                {"enableDNSHostnames": BOOL, "subdomain": STR, "publishNotReadyAddresses": BOOL}
            ),
            "successPolicy": ANY,
            "failurePolicy": ANY,
            "startupPolicy": ANY,
            "coordinator": _obj({"replicatedJob": STR, "jobIndex": INT, "podIndex": INT}),
            "suspend": BOOL,
            "managedBy": STR,
            "ttlSecondsAfterFinished": INT,
        }
    )
    env = _array(core_schema(fetch, "EnvVar"))
    trainjob = _obj(
        {
            "runtimeRef": _obj({"name": STR, "apiGroup": STR, "kind": STR}, required=["name"]),
            "initializer": ANY,
            "trainer": _obj(
                {
                    "image": STR,
                    "command": STR_LIST,
                    "args": STR_LIST,
                    "env": env,
                    "numNodes": INT,
                    "numProcPerNode": {"x-kubernetes-int-or-string": True},
                    "resourcesPerNode": core_schema(fetch, "ResourceRequirements"),
                }
            ),
            "labels": STR_MAP,
            "annotations": STR_MAP,
            "runtimePatches": _array(ANY),
            "podTemplateOverrides": _array(ANY),
            "suspend": BOOL,
            "managedBy": STR,
            "activeDeadlineSeconds": {"type": "integer", "format": "int64"},
        },
        required=["runtimeRef"],
    )
    runtime = _obj(
        {
            "mlPolicy": ANY,
            "podGroupPolicy": ANY,
            "template": _obj(
                {
                    "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    "spec": jobset,
                }
            ),
        }
    )
    return [
        _crd("batch.volcano.sh", "Job", "jobs", volcano, version="v1alpha1"),
        _crd("leaderworkerset.x-k8s.io", "LeaderWorkerSet", "leaderworkersets", lws),
        _crd("jobset.x-k8s.io", "JobSet", "jobsets", jobset, version="v1alpha2"),
        _crd("trainer.kubeflow.org", "TrainJob", "trainjobs", trainjob, version="v1alpha1"),
        _crd(
            "trainer.kubeflow.org",
            "ClusterTrainingRuntime",
            "clustertrainingruntimes",
            runtime,
            version="v1alpha1",
            scope="Cluster",
        ),
    ]
