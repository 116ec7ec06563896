"""The session's state directory: every file a session writes, and nothing else.

Layout::

    STATE_DIR/
      session.json      what was asked: inputs, backend, options (config.SessionConfig)
      inputs/           copies of the good and bad specs (and config.json, the options
                        as given, when they hold a secret)                         [0600]
      lock              held (flock) by the one command writing the session (locking.py)
      journal.jsonl     one record per finished probe, fsynced before the next starts
      journal.jsonl.torn  a torn last line cut off the journal (a crash mid-write)
      logs/p001.log     each probe's combined output, bounded in size              [0600]
      result.json       the last result
      dry-run/          probes rendered by ``run --dry-run``
      probes/           probes rendered by step mode's ``next``; p001.env,
                        p001.secret.yaml...: the real values they refer to       [0600]
      manifests/        manifests a Kubernetes dry run writes (and their Secrets [0600])
      ray/              a session-local Ray's token and start log (a backend's own files)
      bisect.log        the journal as a replayable log (the ``log`` tool)

The directory is mode 0700. Secret values are only in the files marked [0600] (created
so, see ``files.py``); everything else is scrubbed by the session's redactor
(:attr:`Session.redactor`, ``redact.py``) before it is written.

Integrity: a command that writes (``run``, ``resume``, ``start``, ``replay``, recording an
outcome) holds the session's lock (:meth:`Session.create`, :meth:`Session.locked`), so
there is one writer at a time. On such an open, a torn last journal line
(the process was killed mid-write) is cut off and kept aside in ``journal.jsonl.torn``,
never appended to. Probe ids are never reused: a new probe takes a number no journal
line, torn line or log file has taken (:meth:`Session.new_probe_numbers`).

Step mode's current session is recorded in ``.clusterbisect/CURRENT`` (relative to the
working directory), as git keeps its bisect state in ``.git``: :func:`set_current`,
:func:`resolve_state_dir`, :func:`is_current` and :func:`clear_current`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from clusterbisect import redact
from clusterbisect.config import SessionConfig
from clusterbisect.errors import HostError, InputError
from clusterbisect.files import private_dir, write_private
from clusterbisect.journal import ProbeRecord
from clusterbisect.locking import LOCK_FILE, StateLock
from clusterbisect.log import get_logger
from clusterbisect.specs.model import Spec

SESSION_FILE = "session.json"
PRIVATE_CONFIG = "inputs/config.json"  # the options as given, when session.json hides some
JOURNAL_FILE = "journal.jsonl"
RESULT_FILE = "result.json"
BISECT_LOG_FILE = "bisect.log"
DEFAULT_ROOT = ".clusterbisect"
CURRENT_FILE = "CURRENT"

# Folders of rendered probes: what `run --dry-run` plans, what `next` shows.
DRY_RUN_DIR = "dry-run"
PROBES_DIR = "probes"
MANIFESTS_DIR = "manifests"
TORN_SUFFIX = ".torn"
PROBE_NUMBER = re.compile(r"\bp(\d+)\b")

log = get_logger(__name__)


class Session:
    """A state directory on disk."""

    def __init__(
        self,
        state_dir: Path,
        session_id: str,
        config: SessionConfig,
        created: float = 0.0,
        lock: StateLock | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.session_id = session_id
        self.config = config
        self.created = created  # when the session was made (epoch seconds)
        self.lock = lock  # held while this process writes the session
        self._redactor: redact.Redactor | None = None

    def close(self) -> None:
        """Release the lock, if this process holds it (idempotent)."""
        if self.lock is not None:
            self.lock.release()

    # --- creation and opening -------------------------------------------------------

    @classmethod
    def create(
        cls,
        config: SessionConfig,
        state_dir: Path | None = None,
        good_text: str | None = None,
        bad_text: str | None = None,
        specs: tuple[Spec, Spec] | None = None,
        purpose: str = "run",
    ) -> Session:
        """Make a new state directory, locked for ``purpose``, and copy the inputs in.

        ``good_text``/``bad_text`` replace copying when the spec came from a cluster.
        ``specs`` (good, bad), when the caller loaded them, make the session's redactor
        without loading the copies again. The lock is taken before the directory is
        checked for a session, so of two commands creating a session in one directory
        exactly one succeeds.
        """
        session_id = time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]
        if state_dir is None:
            state_dir = Path(DEFAULT_ROOT) / session_id
        state_dir = state_dir.resolve()
        with _writing(state_dir):
            private_dir(state_dir)
        lock = StateLock.acquire(state_dir, purpose)
        try:
            if (state_dir / SESSION_FILE).exists():
                raise InputError(
                    "already holds a session; use `clusterbisect resume` or another --state-dir",
                    source=str(state_dir),
                )
            with _writing(state_dir):
                private_dir(state_dir / "inputs")
                private_dir(state_dir / "logs")
            config.good = _store_input(state_dir, "good", config.good_source, good_text)
            config.bad = _store_input(state_dir, "bad", config.bad_source, bad_text)
            created = time.time()
            session = cls(state_dir, session_id, config, created, lock)
            if specs is not None:
                session.use_specs(*specs)
            real = config.to_dict()
            shown = session.redactor.value(real)
            with _writing(state_dir):
                if shown != real:  # the workload or an option holds a secret: keep it private
                    write_private(state_dir / PRIVATE_CONFIG, json.dumps(real, indent=2) + "\n")
                _write_json_atomic(
                    state_dir / SESSION_FILE,
                    {"session_id": session_id, "created": created, "config": shown},
                )
        except BaseException:
            lock.release()
            raise
        return session

    @classmethod
    def open(cls, state_dir: Path) -> Session:
        """Open an existing state directory (for resume, report and the step mode), as
        it stands: a command that writes it takes its lock with :meth:`locked`."""
        path = state_dir / SESSION_FILE
        if not path.is_file():
            raise InputError("is not a clusterbisect state directory", source=str(state_dir))
        private = state_dir / PRIVATE_CONFIG
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            given = (
                json.loads(private.read_text(encoding="utf-8"))
                if private.is_file()
                else data["config"]
            )
            config = SessionConfig.from_dict(given)
            session_id = str(data["session_id"])
            created = float(data.get("created") or 0.0)
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise InputError(f"unreadable session file ({err})", source=str(path)) from None
        except InputError as err:
            raise InputError(f"unreadable session file ({err.message})", source=str(path)) from None
        except OSError as err:
            raise HostError(f"{path}: cannot read ({err.strerror})") from None
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

    @contextlib.contextmanager
    def locked(self, purpose: str) -> Iterator[Session]:
        """Hold the session's lock for the block, as the one writer (``purpose``: the
        command, named to a refused second writer). A torn last journal line is
        repaired first. Nothing to do if this object holds the lock already (a session
        just created)."""
        if self.lock is not None and self.lock.held:
            yield self
            return
        self.lock = StateLock.acquire(self.state_dir, purpose)
        try:
            self.repair_journal()
            yield self
        finally:
            self.close()

    # --- inputs ---------------------------------------------------------------------

    def input_path(self, which: str) -> Path:
        return self.state_dir / (self.config.good if which == "good" else self.config.bad)

    def spec(self, which: str) -> Spec:
        """The stored ``good`` or ``bad`` spec, loaded (its source is what the user gave:
        errors name it too, not the copy in ``inputs/``)."""
        from clusterbisect.specs import load_spec

        source = self.config.good_source if which == "good" else self.config.bad_source
        try:
            spec = load_spec(str(self.input_path(which)))
        except InputError as err:
            raise InputError(
                err.reason, source=source, field=err.field, details=err.details
            ) from None
        spec.source = source
        return spec

    # --- secrets ----------------------------------------------------------------------

    @property
    def redactor(self) -> redact.Redactor:
        """What hides this session's secrets (both specs', the workload's, the
        options'), made on first use from the stored inputs and registered with
        ``redact.scrub`` so that every output of the process hides them too."""
        if self._redactor is None:
            self.use_specs(self.spec("good"), self.spec("bad"))
        assert self._redactor is not None
        return self._redactor

    def use_specs(self, good: Spec, bad: Spec) -> None:
        """Make the redactor from the session's specs, already loaded by the caller."""
        self._redactor = redact.register(
            redact.Redactor.of_specs(
                [good, bad], extra=[self.config.to_dict()], key=self._fingerprint_key()
            )
        )

    def _fingerprint_key(self) -> bytes:
        """The key of the report's secret fingerprints: a hash of the private inputs,
        so it is the same for every report of the session and unknown to anyone who
        cannot read them."""
        digest = hashlib.sha256(self.session_id.encode())
        for path in sorted((self.state_dir / "inputs").glob("*")):
            with contextlib.suppress(OSError):
                digest.update(path.read_bytes())
        return digest.digest()

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
        """Keep ``text`` as the probe's log (a log reported by hand); its relative path.

        A log holds the workload's output as it was, secrets included: mode 0600.
        """
        path = self.log_path(probe_id)
        with _writing(path):
            private_dir(path.parent)
            write_private(path, text)
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
        path = out / f"{probe_id}.yaml"
        with _writing(path):
            out.mkdir(exist_ok=True)
            path.write_text(yaml.safe_dump(self.redactor.value(rendered), sort_keys=False))
        return path

    def save_private(self, folder: str, probe_id: str, suffix: str, text: str) -> Path:
        """Write the real values a rendered probe refers to (``p001.env``,
        ``p001.secret.yaml``) under ``folder``, mode 0600."""
        path = self.state_dir / folder / f"{probe_id}{suffix}"
        with _writing(path):
            private_dir(path.parent)
            return write_private(path, text)

    def write_bisect_log(self, text: str) -> Path:
        path = self.state_dir / BISECT_LOG_FILE
        with _writing(path):
            path.write_text(self.redactor.text(text))
        return path

    @property
    def private_config(self) -> Path | None:
        """The options as given (``inputs/config.json``), when session.json hides some."""
        path = self.state_dir / PRIVATE_CONFIG
        return path if path.is_file() else None

    @property
    def result_path(self) -> Path:
        return self.state_dir / RESULT_FILE

    # --- the journal ----------------------------------------------------------------

    @property
    def journal_path(self) -> Path:
        return self.state_dir / JOURNAL_FILE

    def append(self, record: ProbeRecord) -> ProbeRecord:
        """Append one record and fsync, so no finished probe is ever lost.

        What it observed (a matched line, an infrastructure error) is scrubbed of
        secrets first; the record as written is returned.
        """
        record = shown_record(record, self.redactor)
        with _writing(self.journal_path), open(self.journal_path, "a", encoding="utf-8") as journal:
            journal.write(record.to_line())
            journal.flush()
            os.fsync(journal.fileno())
        return record

    def records(self) -> list[ProbeRecord]:
        """Every journaled probe, in order.

        A last line without its newline is a record still being written (or torn by a
        crash, which the next writer repairs): it is left out. Any other line that is
        not a record is a damaged journal, and an error naming the line.
        """
        lines, _ = self._journal_lines()
        records = []
        for number, line in enumerate(lines, 1):
            try:
                records.append(ProbeRecord.from_line(line))
            except (ValueError, TypeError) as err:
                raise InputError(
                    f"line {number} is not a probe record ({err}); the journal was changed "
                    "by something other than clusterbisect",
                    source=str(self.journal_path),
                ) from None
        return records

    def _journal_lines(self) -> tuple[list[str], bytes]:
        """The journal's complete lines, and what follows the last newline (a tail)."""
        try:
            data = self.journal_path.read_bytes()
        except FileNotFoundError:
            return [], b""
        except OSError as err:
            raise HostError(f"{self.journal_path}: cannot read ({err.strerror})") from None
        cut = data.rfind(b"\n") + 1
        text = data[:cut].decode("utf-8", errors="replace")
        return [line for line in text.splitlines() if line.strip()], data[cut:]

    def repair_journal(self) -> None:
        """Cut a torn last line off the journal (the writer was killed mid-write).

        The torn bytes are kept aside in ``journal.jsonl.torn`` (appended, so every
        crash's is kept), with a warning; the journal is never appended to after a torn
        line. A last record that is whole but lacks its newline gets it back. Called
        with the lock held (:meth:`locked`).
        """
        _, tail = self._journal_lines()
        if not tail:
            return
        try:
            ProbeRecord.from_line(tail.decode("utf-8"))
            whole = True
        except (ValueError, TypeError):
            whole = False
        path = self.journal_path
        with _writing(path):
            if whole:
                with open(path, "ab") as journal:
                    journal.write(b"\n")
                    os.fsync(journal.fileno())
                return
            torn = path.with_name(path.name + TORN_SUFFIX)
            with open(torn, "ab") as kept:
                kept.write(tail + b"\n")
                os.fsync(kept.fileno())
            with open(path, "r+b") as journal:
                journal.truncate(path.stat().st_size - len(tail))
                os.fsync(journal.fileno())
        log.warning(
            "the journal's last line was torn (a crash mid-write); cut off and kept aside",
            journal=str(path),
            torn=str(torn),
            bytes=len(tail),
        )

    def taken_numbers(self) -> set[int]:
        """Probe numbers used so far: by journal lines (whole or torn) and log files.

        A probe that was running when its run was killed has a log and no record; its
        number stays taken, so its log is never overwritten.
        """
        taken: set[int] = set()
        with contextlib.suppress(OSError):
            for line in self.journal_path.read_text(encoding="utf-8", errors="replace").split("\n"):
                found = re.search(r'"probe_id":\s*"p(\d+)"', line)
                if found:
                    taken.add(int(found.group(1)))
        with contextlib.suppress(OSError):
            # A torn line may have lost its shape: any probe id in it counts.
            torn = self.journal_path.with_name(JOURNAL_FILE + TORN_SUFFIX)
            taken.update(int(n) for n in PROBE_NUMBER.findall(torn.read_text(errors="replace")))
        with contextlib.suppress(OSError):
            for entry in os.scandir(self.state_dir / "logs"):
                match = re.fullmatch(r"p(\d+)\.log", entry.name)
                if match:
                    taken.add(int(match.group(1)))
        return taken

    def new_probe_numbers(self, count: int, taken: set[int] | None = None) -> list[int]:
        """The ``count`` smallest probe numbers nobody has taken (see :meth:`taken_numbers`)."""
        taken = self.taken_numbers() if taken is None else taken
        numbers: list[int] = []
        number = 0
        while len(numbers) < count:
            number += 1
            if number not in taken:
                numbers.append(number)
        return numbers

    def discard(self) -> None:
        """Remove a session that never ran a probe: what :meth:`create` made, and the
        directory itself if nothing else is in it (a --state-dir may hold other files)."""
        (self.state_dir / SESSION_FILE).unlink(missing_ok=True)
        shutil.rmtree(self.state_dir / "inputs", ignore_errors=True)
        if self.lock is not None:
            self.lock.release(remove=True)
        else:
            (self.state_dir / LOCK_FILE).unlink(missing_ok=True)
        for path in (self.state_dir / "logs", self.state_dir):
            with contextlib.suppress(OSError):
                path.rmdir()  # only when empty

    # --- the result -----------------------------------------------------------------

    def write_result(self, result: dict[str, Any]) -> None:
        with _writing(self.result_path):
            _write_json_atomic(self.result_path, self.redactor.value(result))

    def read_result(self) -> dict[str, Any] | None:
        """The last result written, None if there is none; a damaged file is bad input."""
        path = self.result_path
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except OSError as err:
            raise HostError(f"{path}: cannot read ({err.strerror})") from None
        except ValueError as err:
            raise InputError(
                f"is not a whole result ({err}); write it again with `clusterbisect resume "
                f"{self.state_dir}`",
                source=str(path),
            ) from None
        if not isinstance(data, dict) or "status" not in data:
            raise InputError("is not a clusterbisect result", source=str(path))
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


def shown_record(record: ProbeRecord, redactor: redact.Redactor) -> ProbeRecord:
    """``record`` with its free text (what was observed, why it failed) scrubbed; the
    keys of its changes never hold a secret and stay as they are."""
    return dataclasses.replace(
        record,
        observed=redactor.text(record.observed),
        reason=redactor.text(record.reason) if record.reason else record.reason,
        infra_error=redactor.text(record.infra_error) if record.infra_error else None,
    )


def _store_input(state_dir: Path, which: str, source: str, text: str | None) -> str:
    """Copy an input into ``inputs/`` (mode 0600: a spec holds its secrets); its path
    there, relative, with the ``#NAME`` that picks one object of a file kept (so the
    copy loads as the source did)."""
    path, selector = source, ""
    if text is None and "#" in source and not Path(source).exists():
        path, _, name = source.rpartition("#")
        selector = f"#{name}"
    suffix = Path(path).suffix if text is None else ".yaml"
    relative = f"inputs/{which}{suffix or '.txt'}"
    data: str | bytes
    if text is not None:
        data = text
    else:
        try:
            data = Path(path).read_bytes()
        except OSError as err:
            raise InputError(f"cannot read ({err.strerror or err})", source=source) from None
    with _writing(state_dir / relative):
        write_private(state_dir / relative, data)
    return relative + selector


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write through a temporary file of our own, so concurrent readers (and a second
    writer of the same file) never see half a document."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(data, indent=2, default=str) + "\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """An OSError while writing the state directory is this machine's problem (exit 3),
    said in one line: read-only, immutable, full, not a directory."""
    try:
        yield
    except OSError as err:
        raise HostError(
            f"{path}: the state directory cannot be written ({err.strerror or err})"
        ) from None
