"""A probe's log, read whole as a stream and kept bounded: its end, its start, and the
lines that match the failure signature wherever they are.

The API server can stream a container's log (``read_namespaced_pod_log`` without
``limitBytes``). Asking it for a bounded log instead keeps the wrong part: with
``limitBytes`` the server sends the *first* bytes of the window, so on a long log the
error at the end is lost. Here every byte is read once; the end is kept (what the
signature and the report's excerpt read), the start is kept in the log file, and each
line is matched against the signature as it passes, so an error in the middle of a
2 GB log is still seen.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusterbisect.files import private_dir, write_private
from clusterbisect.log import get_logger
from clusterbisect.runners.kubernetes.client import connection_errors

log = get_logger(__name__)

CHUNK = 64 << 10
MAX_MATCHES = 20  # matching lines kept from outside the end of the log
MAX_LINE = 64 << 10  # a "line" without a newline is cut here for matching


@dataclass
class LogCapture:
    """Fed with a log's bytes in order; keeps its head, its tail and matching lines."""

    tail_bytes: int = 1 << 20
    head_bytes: int = 256 << 10
    pattern: re.Pattern[str] | None = None
    total: int = 0
    head: bytearray = field(default_factory=bytearray)
    tail: bytearray = field(default_factory=bytearray)
    matches: list[tuple[int, str]] = field(default_factory=list)  # (end offset, line)
    match_count: int = 0
    _line: bytearray = field(default_factory=bytearray)

    def feed(self, chunk: bytes) -> None:
        """The next bytes of the log."""
        if not chunk:
            return
        start = self.total
        self.total += len(chunk)
        if len(self.head) < self.head_bytes:
            self.head += chunk[: self.head_bytes - len(self.head)]
        self.tail += chunk
        if len(self.tail) > 2 * self.tail_bytes:  # trim now and then, not on every chunk
            del self.tail[: len(self.tail) - self.tail_bytes]
        if self.pattern is not None:
            self._match_lines(chunk, start)

    def _match_lines(self, chunk: bytes, start: int) -> None:
        offset = 0
        while offset < len(chunk):
            newline = chunk.find(b"\n", offset)
            end = len(chunk) if newline < 0 else newline + 1
            self._line += chunk[offset:end]
            offset = end
            if newline >= 0 or len(self._line) >= MAX_LINE:
                self._check(self._line, start + end)
                self._line.clear()

    def _check(self, line: bytes | bytearray, end: int) -> None:
        assert self.pattern is not None
        text = line.decode("utf-8", errors="replace").rstrip("\r\n")
        if self.pattern.search(text):
            self.match_count += 1
            if len(self.matches) < MAX_MATCHES:
                self.matches.append((end, text[:2000]))

    def finish(self) -> None:
        """The log ended: match its last line if it had no newline."""
        if self._line and self.pattern is not None:
            self._check(self._line, self.total)
        self._line.clear()
        if len(self.tail) > self.tail_bytes:
            del self.tail[: len(self.tail) - self.tail_bytes]

    @property
    def tail_start(self) -> int:
        """The offset of the first byte of the kept tail."""
        return self.total - len(self.tail)

    def output(self) -> str:
        """What the probe's result holds: the end of the log (from a line start), after
        the matching lines that came before it, if any."""
        tail = bytes(self.tail)
        if self.tail_start > 0:
            cut = tail.find(b"\n")
            tail = tail[cut + 1 :] if 0 <= cut < len(tail) - 1 else tail
        text = tail.decode("utf-8", errors="replace")
        earlier = [line for end, line in self.matches if end <= self.tail_start]
        if self.tail_start == 0:
            return text
        note = f"[clusterbisect: the first {self.tail_start} bytes of this log are not shown]\n"
        if earlier:
            shown = "\n".join(earlier)
            note = (
                f"[clusterbisect: lines matching the failure signature earlier in the log "
                f"({len(earlier)} shown)]\n{shown}\n{note}"
            )
        return note + text

    def file_bytes(self) -> bytes:
        """What the probe's log file holds: the whole log, or its head and tail."""
        if self.tail_start == 0:
            return bytes(self.tail)
        if self.tail_start <= len(self.head):  # head and tail overlap: the whole log
            return bytes(self.head[: self.tail_start]) + bytes(self.tail)
        skipped = self.tail_start - len(self.head)
        middle = f"\n[clusterbisect: {skipped} bytes of log not kept]\n"
        earlier = [line for end, line in self.matches if len(self.head) < end <= self.tail_start]
        if earlier:
            middle += "[clusterbisect: matching lines in that part:]\n" + "\n".join(earlier) + "\n"
        return bytes(self.head) + middle.encode() + bytes(self.tail)

    def write(self, path: Path) -> None:
        """Keep the log as the workload wrote it (secrets and all: mode 0600)."""
        private_dir(path.parent)
        write_private(path, self.file_bytes())


def capture_text(
    text: str, tail_bytes: int, head_bytes: int, pattern: re.Pattern[str] | None
) -> LogCapture:
    """A :class:`LogCapture` of a log that was read at once."""
    capture = LogCapture(tail_bytes, head_bytes, pattern)
    capture.feed(text.encode("utf-8", errors="replace"))
    capture.finish()
    return capture


def read_pod_log(
    api: Any,
    pod: str,
    container: str,
    options: Any,
    pattern: re.Pattern[str] | None,
) -> LogCapture:
    """Stream the container's whole log through the API server into a capture.

    ``api`` is the runner's ``client.Api``; ``options`` its ``KubernetesSettings``. If
    the stream breaks (or the log cannot be streamed), the last ``log_tail_lines``
    lines are read instead: the end of the log is what matters most.
    """
    from kubernetes.client.exceptions import ApiException

    conn = api.conn
    capture = LogCapture(options.max_log_bytes, options.log_head_bytes, pattern)
    try:
        response = api.call(
            conn.core.read_namespaced_pod_log,
            pod,
            conn.namespace,
            container=container,
            _preload_content=False,
            _request_timeout=(options.request_timeout_s, options.request_timeout_s),
            verb="get",
            resource="pods/log",
            passthrough=(400, 404),
        )
    except ApiException as err:  # no container yet, or gone
        log.info("k8s.no_logs", pod=pod, status=err.status)
        return capture
    try:
        for chunk in response.stream(CHUNK):
            capture.feed(chunk)
        capture.finish()
        return capture
    except connection_errors() as err:
        log.warning("k8s.log_stream_broken", pod=pod, error=str(err), read=capture.total)
    finally:
        response.release_conn()
    return _tail_instead(api, pod, container, options, capture)


def _tail_instead(
    api: Any, pod: str, container: str, options: Any, broken: LogCapture
) -> LogCapture:
    """The last lines of the log (no ``limitBytes``: it would keep their start), with
    the matches the broken stream had already seen."""
    from kubernetes.client.exceptions import ApiException

    conn = api.conn
    try:
        text = api.call(
            conn.core.read_namespaced_pod_log,
            pod,
            conn.namespace,
            container=container,
            tail_lines=options.log_tail_lines,
            verb="get",
            resource="pods/log",
            passthrough=(400, 404),
        )
    except ApiException:
        broken.finish()
        return broken
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    capture = capture_text(str(text or ""), options.max_log_bytes, 0, broken.pattern)
    capture.head = broken.head
    capture.matches = broken.matches + capture.matches
    capture.total = max(capture.total, broken.total)
    return capture
