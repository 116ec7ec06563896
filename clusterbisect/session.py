"""The session's state directory: every file a session writes, and nothing else.

Layout::

    STATE_DIR/
      session.json      what was asked: inputs, backend, options (config.SessionConfig)
      inputs/           copies of the good and bad specs
      journal.jsonl     one record per finished probe, fsynced before the next starts
      logs/p001.log     each probe's combined output, bounded in size
      result.json       the last result
      dry-run/          probes rendered by ``run --dry-run``
      probes/           probes rendered by step mode's ``next``
      manifests/        manifests a Kubernetes dry run writes
      ray/              a session-local Ray's token and start log (a backend's own files)
      bisect.log        the journal as a replayable log (the ``log`` tool)

Step mode's current session is recorded in ``.clusterbisect/CURRENT`` (relative to the
working directory), as git keeps its bisect state in ``.git``: :func:`set_current`,
:func:`resolve_state_dir`, :func:`is_current` and :func:`clear_current`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from clusterbisect.config import SessionConfig
from clusterbisect.errors import InputError
from clusterbisect.journal import ProbeRecord
from clusterbisect.specs.model import Spec

SESSION_FILE = "session.json"
JOURNAL_FILE = "journal.jsonl"
RESULT_FILE = "result.json"
BISECT_LOG_FILE = "bisect.log"
DEFAULT_ROOT = ".clusterbisect"
CURRENT_FILE = "CURRENT"

# Folders of rendered probes: what `run --dry-run` plans, what `next` shows.
DRY_RUN_DIR = "dry-run"
PROBES_DIR = "probes"
MANIFESTS_DIR = "manifests"


class Session:
    """A state directory on disk."""

    def __init__(
        self, state_dir: Path, session_id: str, config: SessionConfig, created: float = 0.0
    ) -> None:
        self.state_dir = state_dir
        self.session_id = session_id
        self.config = config
        self.created = created  # when the session was made (epoch seconds)

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
        created = time.time()
        session = cls(state_dir, session_id, config, created)
        session.save_config()
        return session

    @classmethod
    def open(cls, state_dir: Path) -> Session:
        """Open an existing state directory (for resume, report and the step mode)."""
        path = state_dir / SESSION_FILE
        if not path.is_file():
            raise InputError("is not a clusterbisect state directory", source=str(state_dir))
        try:
            data = json.loads(path.read_text())
            config = SessionConfig.from_dict(data["config"])
            session_id = str(data["session_id"])
            created = float(data.get("created") or 0.0)
        except (ValueError, KeyError, TypeError) as err:
            raise InputError(f"unreadable session file ({err})", source=str(path)) from err
        return cls(state_dir.resolve(), session_id, config, created)

    def save_config(self) -> None:
        """Write :attr:`config` back to ``session.json`` (a resume that raised the
        budget, a signature that was decided): later commands see what this one used."""
        _write_json_atomic(
            self.state_dir / SESSION_FILE,
            {
                "session_id": self.session_id,
                "created": self.created,
                "config": self.config.to_dict(),
            },
        )

    # --- inputs ---------------------------------------------------------------------

    def input_path(self, which: str) -> Path:
        return self.state_dir / (self.config.good if which == "good" else self.config.bad)

    def spec(self, which: str) -> Spec:
        """The stored ``good`` or ``bad`` spec, loaded (its source is what the user gave)."""
        from clusterbisect.specs import load_spec

        spec = load_spec(str(self.input_path(which)))
        spec.source = self.config.good_source if which == "good" else self.config.bad_source
        return spec

    # --- paths ----------------------------------------------------------------------

    def log_path(self, probe_id: str) -> Path:
        return self.state_dir / "logs" / f"{probe_id}.log"

    def path_of(self, relative: str) -> Path:
        """The absolute path of a file the journal names relative to the state dir."""
        return self.state_dir / relative

    def read_log(self, relative: str) -> str:
        """A probe log named as the journal names it (relative); "" if it is unreadable."""
        try:
            return self.path_of(relative).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def write_log(self, probe_id: str, text: str) -> str:
        """Keep ``text`` as the probe's log (a log reported by hand); its relative path."""
        path = self.log_path(probe_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return str(path.relative_to(self.state_dir))

    @property
    def manifests_dir(self) -> Path:
        """Where a backend writes rendered manifests (made by whoever writes first)."""
        return self.state_dir / MANIFESTS_DIR

    def private_dir(self, backend: str) -> Path:
        """A backend's own files (a local Ray's token and log), made on first use."""
        return self.state_dir / backend

    def save_rendered(self, folder: str, probe_id: str, rendered: dict[str, Any]) -> Path:
        """Write a rendered probe as YAML under ``folder`` (``dry-run`` or ``probes``)."""
        out = self.state_dir / folder
        out.mkdir(exist_ok=True)
        path = out / f"{probe_id}.yaml"
        path.write_text(yaml.safe_dump(rendered, sort_keys=False))
        return path

    def write_bisect_log(self, text: str) -> Path:
        path = self.state_dir / BISECT_LOG_FILE
        path.write_text(text)
        return path

    @property
    def result_path(self) -> Path:
        return self.state_dir / RESULT_FILE

    # --- the journal ----------------------------------------------------------------

    def append(self, record: ProbeRecord) -> None:
        """Append one record and fsync, so no finished probe is ever lost."""
        with open(self.state_dir / JOURNAL_FILE, "a", encoding="utf-8") as journal:
            journal.write(record.to_line())
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
                records.append(ProbeRecord.from_line(line))
            except (ValueError, TypeError):
                continue
        return records

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
        _write_json_atomic(self.result_path, result)

    def read_result(self) -> dict[str, Any] | None:
        if not self.result_path.exists():
            return None
        data: dict[str, Any] = json.loads(self.result_path.read_text())
        return data


# --- the current session (step mode) ------------------------------------------------------


def current_file(root: Path | None = None) -> Path:
    return (root or Path(DEFAULT_ROOT)) / CURRENT_FILE


def set_current(state_dir: Path) -> None:
    """Make ``state_dir`` the session later step commands act on."""
    path = current_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(str(state_dir.resolve()) + "\n")
    os.replace(tmp, path)


def resolve_state_dir(explicit: str | os.PathLike[str] | None) -> Path:
    """The explicit state directory, else the current session's."""
    if explicit:
        return Path(explicit)
    path = current_file()
    if path.is_file():
        text = path.read_text().strip()
        if text:
            return Path(text)
    raise InputError(
        "no bisection in progress: start one with `clusterbisect start GOOD BAD`, "
        "or name a session with --state-dir",
        source=str(path),
    )


def is_current(session: Session) -> bool:
    path = current_file()
    return path.is_file() and Path(path.read_text().strip()) == session.state_dir


def clear_current() -> None:
    current_file().unlink(missing_ok=True)


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
