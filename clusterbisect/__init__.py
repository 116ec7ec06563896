"""clusterbisect: find the setting that makes a cluster job crash.

Diff a working and a failing job's configuration, then run probe jobs that apply
subsets of the differences until the smallest failing set (the culprit) is isolated.
"""

__version__ = "0.1.0"
