"""Container logs in the CRI format the kubelet reads (``TIME STREAM TAG TEXT``), and
the containerLogs options applied to them (tailLines, limitBytes, sinceSeconds, ...)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO

# A line longer than this is split into partial records (tag P), like containerd's.
MAX_RECORD = 16 * 1024


def timestamp(when: datetime | None = None) -> str:
    """RFC 3339 with nanoseconds, fixed width, so timestamps compare as strings."""
    when = when or datetime.now(timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond:06d}000Z"


class LogWriter:
    """Appends the records of one container instance to its log file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("ab", buffering=0)
        self._lock = threading.Lock()

    def copy(self, stream: str, pipe: IO[bytes]) -> None:
        """Copy ``pipe`` (the container's stdout or stderr) until it closes."""
        while True:
            line = pipe.readline(MAX_RECORD)
            if not line:
                break
            full = line.endswith(b"\n")
            text = line[:-1] if full else line
            record = f"{timestamp()} {stream} {'F' if full else 'P'} ".encode() + text + b"\n"
            with self._lock:
                self._file.write(record)
        pipe.close()

    def close(self) -> None:
        with self._lock:
            self._file.close()


@dataclass
class Record:
    time: str
    stream: str
    full: bool
    text: bytes

    def render(self, timestamps: bool) -> bytes:
        prefix = f"{self.time} ".encode() if timestamps else b""
        return prefix + self.text + (b"\n" if self.full else b"")


def parse(data: bytes) -> list[Record]:
    records = []
    for line in data.split(b"\n"):
        parts = line.split(b" ", 3)
        if len(parts) < 3:
            continue
        text = parts[3] if len(parts) == 4 else b""
        records.append(Record(parts[0].decode(), parts[1].decode(), parts[2] == b"F", text))
    return records


@dataclass
class Options:
    """PodLogOptions as the kubelet receives them in the query string."""

    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None
    since_seconds: int | None = None
    since_time: str | None = None
    stream: str = "All"

    def since(self) -> str | None:
        if self.since_seconds is not None:
            start = datetime.now(timezone.utc) - timedelta(seconds=self.since_seconds)
            return timestamp(start)
        if self.since_time:
            parsed = datetime.fromisoformat(self.since_time.replace("Z", "+00:00"))
            return timestamp(parsed.astimezone(timezone.utc))
        return None


def _selected(records: list[Record], options: Options, since: str | None) -> list[Record]:
    wanted = {"Stdout": {"stdout"}, "Stderr": {"stderr"}}.get(options.stream)
    out = [
        r
        for r in records
        if (since is None or r.time >= since) and (wanted is None or r.stream in wanted)
    ]
    if options.tail_lines is not None:
        out = out[-options.tail_lines :] if options.tail_lines > 0 else []
    return out


def stream(
    path: Path, options: Options, running: Callable[[], bool], poll_s: float = 0.2
) -> Iterator[bytes]:
    """The log as the kubelet serves it; with ``follow``, until the container stops."""
    since = options.since()
    budget = options.limit_bytes
    offset = 0
    pending = b""
    first = True
    while True:
        try:
            with path.open("rb") as handle:
                handle.seek(offset)
                chunk = handle.read()
        except FileNotFoundError:
            chunk = b""
        offset += len(chunk)
        pending += chunk
        complete, _, pending = pending.rpartition(b"\n")
        records = parse(complete) if complete else []
        if first:
            records = _selected(records, options, since)
            first = False
        else:
            records = _selected(records, Options(stream=options.stream), since)
        for record in records:
            data = record.render(options.timestamps)
            if budget is not None:
                data = data[:budget]
                budget -= len(data)
            if data:
                yield data
            if budget is not None and budget <= 0:
                return
        if not options.follow:
            return
        if not running():
            # One more pass picks up what was written before the container stopped.
            options = Options(follow=False, timestamps=options.timestamps, stream=options.stream)
            continue
        time.sleep(poll_s)


def tail_text(path: Path, lines: int = 80, limit: int = 2048) -> str:
    """The last ``lines`` lines, at most ``limit`` bytes (FallbackToLogsOnError)."""
    try:
        records = parse(path.read_bytes())
    except FileNotFoundError:
        return ""
    data = b"".join(r.render(False) for r in records[-lines:])
    return data[-limit:].decode("utf-8", "replace")
