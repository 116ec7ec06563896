"""The Kubernetes backend: probes run as Jobs (as RayJobs for a RayJob).

- ``client``: connecting like kubectl, API calls with retries and readable errors;
- ``render``: probes as Job manifests (pure), of the template ``--template`` names;
- ``operators``: what a workload's operator does to its pods (env, a TrainJob's
  trainer, Indexed Jobs), done for a probe that is a world of one (pure);
- ``carried``: what of a spec reaches a probe, and why the rest does not (pure);
- ``rayjobs``: a RayJob input probed as RayJobs (rendering, the CRD check, following
  them, cleanup);
- ``status``: a probe's verdict from Job conditions and pod states (pure);
- ``jobs``: probe Jobs in flight: created, watched, settled into results, deleted;
- ``runner``: the runner: what is testable, rendering, dry runs, running a batch;
- ``cleanup``: deleting leftovers by label.

Importing this package does not import the ``kubernetes`` client.
"""

from clusterbisect.runners.kubernetes.cleanup import cleanup
from clusterbisect.runners.kubernetes.client import Connection, KubernetesSettings, connect
from clusterbisect.runners.kubernetes.runner import KubernetesRunner, make_runner

__all__ = [
    "Connection",
    "KubernetesRunner",
    "KubernetesSettings",
    "cleanup",
    "connect",
    "make_runner",
]
