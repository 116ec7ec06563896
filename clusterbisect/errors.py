"""User-facing errors. Each carries its exit code; only ``cli.py`` turns them into exits."""

from __future__ import annotations

from typing import Any

EXIT_OK = 0
EXIT_NO_CULPRIT = 1
EXIT_USAGE = 2
EXIT_BACKEND = 3
EXIT_INTERRUPTED = 130


class ClusterBisectError(Exception):
    """Base error: ``message`` is shown to the user as is, without a traceback."""

    exit_code = EXIT_USAGE
    code = "error"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class InputError(ClusterBisectError):
    """Bad input or usage: a file that cannot be read, a field that is wrong (exit 2)."""

    exit_code = EXIT_USAGE
    code = "bad_input"

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        field: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        prefix = f"{source}: " if source else ""
        where = f"{field}: " if field else ""
        super().__init__(f"{prefix}{where}{message}", details=details)
        self.reason = message  # without the source and the field
        self.source = source
        self.field = field


class BackendError(ClusterBisectError):
    """The backend or cluster failed us (exit 3): unreachable API, missing permission, ..."""

    exit_code = EXIT_BACKEND
    code = "backend_error"


class HostError(ClusterBisectError):
    """This machine failed us (exit 3): a state directory that cannot be written (read-only,
    immutable, full), a probe that cannot be started."""

    exit_code = EXIT_BACKEND
    code = "environment"


class Interrupted(ClusterBisectError):
    """The run was interrupted (Ctrl-C, SIGTERM); probes were cleaned up, state saved."""

    exit_code = EXIT_INTERRUPTED
    code = "interrupted"
