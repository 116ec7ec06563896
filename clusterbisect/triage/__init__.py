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
- ``api`` (edge): ``triage(TriageRequest(...))``, and the pair's spec files.

Its options are option groups of ``config.py`` (``TriageSourceOptions``,
``TriageOptions``, with ``ScopeOptions`` and the connections), so the ``triage``
command (``cli/triage.py``) and the ``triage`` tool take the same ones. docs/triage.md
is the user's guide.
"""

from __future__ import annotations

from clusterbisect.config import TriageOptions, TriageSourceOptions
from clusterbisect.durations import parse_duration
from clusterbisect.triage.api import TriageRequest, triage, triage_analysis, write_outputs
from clusterbisect.triage.priors import Priors, load_priors, priors_from_result
from clusterbisect.triage.render import render_text
from clusterbisect.triage.result import TriageResult

__all__ = [
    "Priors",
    "TriageOptions",
    "TriageRequest",
    "TriageResult",
    "TriageSourceOptions",
    "load_priors",
    "parse_duration",
    "priors_from_result",
    "render_text",
    "triage",
    "triage_analysis",
    "write_outputs",
]
