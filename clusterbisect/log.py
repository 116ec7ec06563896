"""structlog configuration, done once per process. Logs always go to stderr."""

from __future__ import annotations

import logging
import sys

import structlog

_configured = False


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time of the call.

    Binding the stream at configuration time breaks when it is replaced later (test
    capture, a redirected stderr in an embedding program).
    """

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(log_format: str = "auto", level: str = "warning") -> None:
    """Set up structlog: readable on a terminal, JSON lines with ``log_format="json"``.

    stdout is reserved for results, so every handler writes to stderr. Every event
    is scrubbed of the secrets the process knows (``redact.scrub_event``).
    """
    global _configured
    numeric = getattr(logging, level.upper(), logging.WARNING)
    as_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor
    if as_json:
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    from clusterbisect.redact import scrub_event

    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            scrub_event,  # a log line may quote a value or a workload's output
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    _configured = True


def get_logger(name: str | None = None) -> structlog.typing.FilteringBoundLogger:
    """A logger; configures the default (warnings to stderr) if nobody did yet."""
    if not _configured:
        configure()
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(name)
    return logger
