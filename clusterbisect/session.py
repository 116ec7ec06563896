"""The session's state directory: inputs, an append-only journal, logs and the result.

Layout::

    STATE_DIR/
      session.json      what was asked: inputs, backend, signature, options
      inputs/           copies of the good and bad specs
      journal.jsonl     one record per finished probe, fsynced before the next starts
      logs/p001.log     each probe's combined output, bounded in size
      result.json       the last result

The journal names changes by their keys, not by index, so it stays readable and a
resumed session maps it back onto the (recomputed) change list.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from clusterbisect.errors import InputError
from clusterbisect.specs.model import Spec

SESSION_FILE = "session.json"
JOURNAL_FILE = "journal.jsonl"
RESULT_FILE = "result.json"
DEFAULT_ROOT = ".clusterbisect"


@dataclass
class SessionConfig:
    """Everything needed to recompute the changes and rerun the search."""

    good: str  # path of the copy under inputs/ (relative to the state dir)
    bad: str
    good_source: str  # what the user gave
    bad_source: str
    backend: str = "local"
    command: list[str] | None = None
    signature: dict[str, Any] = field(default_factory=dict)
    parallel: int = 1
    timeout_s: float | None = None
    ignore: list[str] = field(default_factory=list)
    container: str | None = None
    clean_env: bool = False
    max_probes: int | None = None
    max_time_s: float | None = None
    strategy: str = "bisection"
    strategy_options: dict[str, Any] = field(default_factory=dict)
    backend_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ProbeRecord:
    """One finished probe, as journaled."""

    probe_id: str
    round: int
    subset: list[str]  # change keys applied
    outcome: str
    purpose: str = "search"
    exit_code: int | None = None
    timed_out: bool = False
    reason: str | None = None
    infra_error: str | None = None
    duration_s: float = 0.0
    log: str | None = None  # relative to the state dir
    observed: str = ""
    finished_at: float = 0.0
    source: str = "runner"  # runner | manual (step-by-step mode)


class Session:
    """A state directory on disk."""

    def __init__(self, state_dir: Path, session_id: str, config: SessionConfig) -> None:
        self.state_dir = state_dir
        self.session_id = session_id
        self.config = config

    # --- creation and opening -------------------------------------------------------

    @classmethod
    def create(
        cls,
        config: SessionConfig,
        state_dir: Path | None = None,
        good_text: str | None = None,
        bad_text: str | None = None,
    ) -> Session:
        """Make a new state directory and copy the inputs into it.

        ``good_text``/``bad_text`` replace copying when the spec came from a cluster.
        """
        session_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        if state_dir is None:
            state_dir = Path(DEFAULT_ROOT) / session_id
        state_dir = state_dir.resolve()
        if (state_dir / SESSION_FILE).exists():
            raise InputError(
                "already holds a session; use `clusterbisect resume` or another --state-dir",
                source=str(state_dir),
            )
        (state_dir / "inputs").mkdir(parents=True, exist_ok=True)
        (state_dir / "logs").mkdir(exist_ok=True)
        config.good = _store_input(state_dir, "good", config.good_source, good_text)
        config.bad = _store_input(state_dir, "bad", config.bad_source, bad_text)
        session = cls(state_dir, session_id, config)
        _write_json_atomic(
            state_dir / SESSION_FILE,
            {"session_id": session_id, "created": time.time(), "config": asdict(config)},
        )
        return session

    @classmethod
    def open(cls, state_dir: Path) -> Session:
        """Open an existing state directory (for resume, report and the step mode)."""
        path = state_dir / SESSION_FILE
        if not path.is_file():
            raise InputError("is not a clusterbisect state directory", source=str(state_dir))
        try:
            data = json.loads(path.read_text())
            config = SessionConfig(**data["config"])
            session_id = str(data["session_id"])
        except (ValueError, KeyError, TypeError) as err:
            raise InputError(f"unreadable session file ({err})", source=str(path)) from err
        return cls(state_dir.resolve(), session_id, config)

    @classmethod
    def find(cls, state_dir: Path | None) -> Session | None:
        """The session in ``state_dir``, or None when it holds none (a runner built
        outside a session)."""
        if state_dir is None or not (state_dir / SESSION_FILE).is_file():
            return None
        return cls.open(state_dir)

    # --- paths ----------------------------------------------------------------------

    def input_path(self, which: str) -> Path:
        return self.state_dir / (self.config.good if which == "good" else self.config.bad)

    def spec(self, which: str) -> Spec:
        """The stored ``good`` or ``bad`` spec, loaded."""
        from clusterbisect.specs import load_spec

        return load_spec(str(self.input_path(which)))

    def log_path(self, probe_id: str) -> Path:
        return self.state_dir / "logs" / f"{probe_id}.log"

    # --- the journal ----------------------------------------------------------------

    def append(self, record: ProbeRecord) -> None:
        """Append one record and fsync, so no finished probe is ever lost."""
        line = json.dumps(asdict(record), sort_keys=True) + "\n"
        with open(self.state_dir / JOURNAL_FILE, "a", encoding="utf-8") as journal:
            journal.write(line)
            journal.flush()
            os.fsync(journal.fileno())

    def records(self) -> list[ProbeRecord]:
        """Every journaled probe, in order. A torn last line (killed mid-write) is skipped."""
        path = self.state_dir / JOURNAL_FILE
        if not path.exists():
            return []
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(ProbeRecord(**json.loads(line)))
            except (ValueError, TypeError):
                continue
        return records

    def truncate_journal(self, keep: int) -> None:
        """Keep only the first ``keep`` records (used by ``reset``-like operations)."""
        kept = self.records()[:keep]
        path = self.state_dir / JOURNAL_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(asdict(r), sort_keys=True) + "\n" for r in kept))
        os.replace(tmp, path)

    def discard(self) -> None:
        """Remove a session that never ran a probe: what :meth:`create` made, and the
        directory itself if nothing else is in it (a --state-dir may hold other files)."""
        (self.state_dir / SESSION_FILE).unlink(missing_ok=True)
        shutil.rmtree(self.state_dir / "inputs", ignore_errors=True)
        for path in (self.state_dir / "logs", self.state_dir):
            with contextlib.suppress(OSError):
                path.rmdir()  # only when empty

    # --- the result -----------------------------------------------------------------

    def write_result(self, result: dict[str, Any]) -> None:
        _write_json_atomic(self.state_dir / RESULT_FILE, result)

    def read_result(self) -> dict[str, Any] | None:
        path = self.state_dir / RESULT_FILE
        if not path.exists():
            return None
        data: dict[str, Any] = json.loads(path.read_text())
        return data


def _store_input(state_dir: Path, which: str, source: str, text: str | None) -> str:
    suffix = Path(source).suffix if text is None else ".yaml"
    relative = f"inputs/{which}{suffix or '.txt'}"
    if text is not None:
        (state_dir / relative).write_text(text)
    else:
        shutil.copyfile(source, state_dir / relative)
    return relative


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)
