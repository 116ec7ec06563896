"""Optional dependencies (the ``ray``, ``kubernetes`` and ``mcp`` extras).

A backend whose package is not installed is a usage error that names the install
command, not a ``ModuleNotFoundError`` traceback.
"""

from __future__ import annotations

import importlib

from clusterbisect.errors import InputError


def require(extra: str, what: str) -> None:
    """Import the package of ``extra`` (named like it), or explain how to install it.

    ``what`` names the feature that needs it, e.g. "the Ray backend".
    """
    try:
        importlib.import_module(extra)
    except ImportError:
        raise InputError(
            f"{what} needs the {extra} extra, which is not installed: "
            f"pip install 'clusterbisect[{extra}]'"
        ) from None
