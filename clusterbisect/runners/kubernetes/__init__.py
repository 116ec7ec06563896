"""The Kubernetes backend: probes run as Jobs.

- ``client``: connecting like kubectl, API calls with retries and readable errors;
- ``render``: probes as Job manifests (pure);
- ``status``: a probe's verdict from Job conditions and pod states (pure);
- ``runner``: the runner that creates, watches and deletes probe Jobs;
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
