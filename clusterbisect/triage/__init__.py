"""Fleet triage: from thousands of crashed jobs to the suspects, the pair, and the priors.

The step before a bisection. Given many runs of the same workloads, some failed after
an upgrade, triage finds which setting values go with the failure, and picks a good
and a bad job with the fewest differences for ``run`` to bisect.

Modules, one concept each (the analysis is pure; reading and writing are at the edge):

- ``sources`` (edge): exported files and folders -> ``Inventory``;
  ``live`` (edge): a Kubernetes cluster, paginated; ``ray_source`` (edge): a Ray cluster.
- ``outcomes``: a job's outcome from its conditions; ``join``: pods to their jobs;
  ``jobs``: inventory -> ``Job`` records with specs loaded as ``diff`` loads them.
- ``signatures``: failure texts, normalised and clustered.
- ``table``: every setting value of every job (``diff``'s keys), as job bit masks;
  ``stats``: Fisher's exact test; ``suspects``: scores, bundles, ranking;
  ``interactions``: pairs that fail only together; ``pair``: the closest good/bad pair.
- ``analysis``: the pure pipeline; ``result``: the ``--json`` document; ``render``: the
  text table; ``priors``: key -> weight, for ``run --priors``.
- ``api`` (edge): ``triage(sources, options)``, and the pair's spec files.

How the command, the agent tool and ``--bisect`` are meant to call this is written in
docs/triage.md ("Not yet wired").
"""

from __future__ import annotations

from clusterbisect.triage.api import triage, triage_analysis, write_outputs
from clusterbisect.triage.options import ClusterQuery, TriageOptions, parse_duration
from clusterbisect.triage.priors import Priors, load_priors, priors_from_result
from clusterbisect.triage.render import render_text
from clusterbisect.triage.result import TriageResult

__all__ = [
    "ClusterQuery",
    "Priors",
    "TriageOptions",
    "TriageResult",
    "load_priors",
    "parse_duration",
    "priors_from_result",
    "render_text",
    "triage",
    "triage_analysis",
    "write_outputs",
]
