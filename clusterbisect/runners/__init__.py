"""Backends that run probes, each behind the same small interface (``base.py``).

- ``local``: a subprocess on this machine;
- ``ray/``: Ray jobs through the Jobs API;
- ``kubernetes/``: Kubernetes Jobs.

Which backends exist, their options and capabilities, and how a runner is made: the
registry, ``clusterbisect/backends.py``. Ray and Kubernetes modules are imported only
when that backend is chosen.
"""
