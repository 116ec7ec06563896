"""The Ray backend: probes run as Ray jobs through the Jobs API.

- ``render``: probes as job submissions, and what Ray cannot apply (pure);
- ``cluster``: the local Ray head started for a session when there is no address;
- ``runner``: the runner that submits, watches and stops probe jobs;
- ``jobs``: stopping and deleting jobs, a session's leftovers (``cleanup``), and Ray's
  log lines routed into ours.

Importing this package does not import ``ray``.
"""

from clusterbisect.runners.ray.cluster import LocalRayOptions
from clusterbisect.runners.ray.jobs import cleanup
from clusterbisect.runners.ray.render import Submission, render_submission
from clusterbisect.runners.ray.runner import RayRunner, RaySettings, make_runner

__all__ = [
    "LocalRayOptions",
    "RayRunner",
    "RaySettings",
    "Submission",
    "cleanup",
    "make_runner",
    "render_submission",
]
