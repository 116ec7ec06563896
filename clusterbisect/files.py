"""Private files: what holds a secret value is readable by its owner only.

A session's state directory is mode 0700. The files in it that hold real secret values
(the copies of the inputs, raw probe logs, a probe's Kubernetes Secret or env file) are
created mode 0600, never widened afterwards; everything else it holds is scrubbed
(``redact.py``) before it is written.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO, Any, BinaryIO, Literal, overload

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def private_dir(path: Path) -> Path:
    """Make ``path`` (and its parents) and restrict it to its owner; ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):  # not ours to change (a shared parent): keep it
        os.chmod(path, PRIVATE_DIR)
    return path


@overload
def open_private(path: Path, mode: Literal["wb", "ab"], **kwargs: Any) -> BinaryIO: ...
@overload
def open_private(path: Path, mode: str = "w", **kwargs: Any) -> IO[Any]: ...
def open_private(path: Path, mode: str = "w", **kwargs: Any) -> IO[Any]:
    """Open ``path`` for writing (``w``/``wb``/``a``/``ab``) created mode 0600; an
    existing file is restricted too before anything is written."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(path, flags, PRIVATE_FILE)
    with contextlib.suppress(OSError):
        os.fchmod(fd, PRIVATE_FILE)
    return os.fdopen(fd, mode, **kwargs)


def write_private(path: Path, data: str | bytes) -> Path:
    """Write ``data`` to ``path``, mode 0600 (made in a parent that exists)."""
    if isinstance(data, bytes):
        with open_private(path, "wb") as handle:
            handle.write(data)
    else:
        with open_private(path, "w", encoding="utf-8") as handle:
            handle.write(data)
    return path
