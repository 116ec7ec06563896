"""A probe's output as a runner reads it: matched whole, kept as its head and its tail.

A failing workload often prints for a long time before it fails, and the error is at
the end. So the signature's regex sees every line as it streams past
(``outcome.LineMatcher``), whatever is kept; what is kept, on disk and in memory, is
the first ``head`` bytes and the last ``tail`` bytes, with a line between them saying
how much was left out. The log file is written as the output arrives (``tail -f``
works) until it holds ``head + tail`` bytes; past that, the tail is kept in memory and
the file is rewritten to head + note + tail when the stream ends.
"""

from __future__ import annotations

import re
from typing import BinaryIO

from clusterbisect.outcome import LineMatcher

HEAD_BYTES = 256 << 10
TAIL_BYTES = 1 << 20


def cut_note(count: int) -> bytes:
    return f"\n[clusterbisect: {count} bytes of output not kept here]\n".encode()


class OutputCapture:
    """Receives a probe's output in chunks (:meth:`feed`), then :meth:`close`."""

    def __init__(
        self,
        sink: BinaryIO | None,
        pattern: re.Pattern[str] | None = None,
        head: int = HEAD_BYTES,
        tail: int = TAIL_BYTES,
    ) -> None:
        self.sink = sink
        self.head_limit = head
        self.tail_limit = tail
        self.matcher = LineMatcher(pattern) if pattern is not None else None
        self.total = 0
        self._head = bytearray()
        self._tail = bytearray()  # everything after the head, trimmed to the last ``tail``
        self._written = 0  # bytes written to the sink as they came

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.total += len(chunk)
        if self.matcher is not None:
            self.matcher.feed(chunk)
        room = self.head_limit - len(self._head)
        if room > 0:
            self._head += chunk[:room]
            rest = chunk[room:]
        else:
            rest = chunk
        if rest:
            self._tail += rest
            if len(self._tail) > 2 * self.tail_limit:  # trim now and then, not per chunk
                del self._tail[: len(self._tail) - self.tail_limit]
        if self.sink is not None and self._written < self.head_limit + self.tail_limit:
            keep = chunk[: self.head_limit + self.tail_limit - self._written]
            self.sink.write(keep)
            self.sink.flush()
            self._written += len(keep)

    @property
    def dropped(self) -> int:
        """Bytes of the stream that are kept neither in the head nor in the tail."""
        return max(0, self.total - self.head_limit - self.tail_limit)

    @property
    def matched(self) -> str | None:
        return self.matcher.matched if self.matcher is not None else None

    def close(self) -> None:
        """The stream ended: match its last line; a cut log becomes head + note + tail."""
        if self.matcher is not None:
            self.matcher.close()
        if len(self._tail) > self.tail_limit:
            del self._tail[: len(self._tail) - self.tail_limit]
        if self.sink is not None and self.dropped:
            self.sink.seek(len(self._head))
            self.sink.truncate()
            self.sink.write(cut_note(self.dropped) + bytes(self._tail))
            self.sink.flush()

    def kept(self) -> bytes:
        """The output kept: all of it, or its head, a note and its tail."""
        if self.dropped:
            return bytes(self._head) + cut_note(self.dropped) + bytes(self._tail)
        return bytes(self._head) + bytes(self._tail)

    def text(self) -> str:
        return self.kept().decode("utf-8", errors="replace")
