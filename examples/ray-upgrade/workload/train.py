"""A tiny stand-in for a training job that resumes from a checkpoint.

Before training it checks that the checkpoint's format version is valid semantic
versioning and compatible with this trainer. It uses ``semver.VersionInfo.isvalid``,
which semver 3.0 renamed to ``Version.is_valid``: with semver>=3 the job crashes
with an AttributeError before the first step, exactly like the incident.
"""

from __future__ import annotations

import os
import sys

import semver

CHECKPOINT_FORMAT = "2.4.0"
TRAINER_FORMAT = "2.5.1"


def main() -> int:
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    workers = int(os.environ.get("DATALOADER_WORKERS", "0"))
    level = os.environ.get("TRAIN_LOG_LEVEL", "info")
    print(
        f"trainer starting: semver {semver.__version__}, threads={threads}, "
        f"dataloader workers={workers}, log level={level}"
    )
    if not semver.VersionInfo.isvalid(CHECKPOINT_FORMAT):
        print(f"checkpoint format {CHECKPOINT_FORMAT!r} is not a version", file=sys.stderr)
        return 2
    if (
        semver.VersionInfo.parse(CHECKPOINT_FORMAT).major
        != semver.VersionInfo.parse(TRAINER_FORMAT).major
    ):
        print("checkpoint from another major format", file=sys.stderr)
        return 2
    for step in range(3):
        print(f"step {step}: loss={1.0 / (step + 1):.3f}")
    print("training finished")
    return 0


if __name__ == "__main__":
    sys.exit(main())
