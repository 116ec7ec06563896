"""The chaos harness: SIGKILL a real local `run` at random points, `resume` it, compare.

Used by ``tests/test_chaos.py`` (the claim, on a small run) and
``benchmarks/bench_chaos.py`` (the figures). A bisection of ``n`` env variables with
one culprit runs once uninterrupted; then, for each kill point, a fresh run is killed
with SIGKILL after ``k`` journaled probes plus a random delay (so the kill lands in a
probe, between probes, or while a record is being written), and resumed (or, killed
before its session was made, run again as the user would). Each
resumed session is checked:

- its verdict (status and culprits) equals the uninterrupted one;
- its journal is valid (every line a record), its probe ids are unique, and its
  probes are the uninterrupted run's, in order (none recorded twice, none lost);
- every process a probe started has ended (the workload writes its PID; the keeper
  kills the tree when clusterbisect dies).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "clusterbisect.cli"]

# The workload: records its PID (and a background child's), sleeps a little so kills
# land inside probes, and fails (exit 1) when the culprit variable is bad.
WORKLOAD = """#!/bin/sh
echo $$ >> "$PIDS_DIR/pids"
sleep 30 &
echo $! >> "$PIDS_DIR/pids"
sleep "$PROBE_SLEEP"
if [ "$VAR_CULPRIT" = bad ]; then echo "RuntimeError: CUDA error"; exit 1; fi
echo ok
"""


@dataclass
class KillOutcome:
    """One kill point and what the resumed session showed."""

    after_records: int  # journaled probes when the kill was sent
    delay_s: float
    finished_first: bool  # the run ended before the kill landed
    before_session: bool  # killed before the session was made: run again, not resume
    torn_tail: bool  # the kill left a torn last line (repaired on resume)
    records_at_kill: int
    resume_s: float
    same_verdict: bool
    journal_valid: bool
    ids_unique: bool
    same_probes: bool
    leftovers: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.same_verdict
            and self.journal_valid
            and self.ids_unique
            and self.same_probes
            and not self.leftovers
        )


@dataclass
class Scenario:
    """A bisection to break: ``n`` env variables, the culprit at ``culprit``."""

    folder: Path
    n: int = 24
    culprit: int = 13
    probe_sleep: float = 0.05

    def write(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        names = [self._name(i) for i in range(self.n)]
        for which in ("good", "bad"):
            (self.folder / f"{which}.env").write_text("".join(f"{v}={which}\n" for v in names))
        script = self.folder / "work.sh"
        script.write_text(WORKLOAD)
        script.chmod(0o755)

    def _name(self, index: int) -> str:
        return "VAR_CULPRIT" if index == self.culprit else f"VAR_{index:03d}"

    def env(self, pids: Path) -> dict[str, str]:
        pids.mkdir(parents=True, exist_ok=True)
        return {
            **os.environ,
            "PIDS_DIR": str(pids),
            "PROBE_SLEEP": str(self.probe_sleep),
            "PYTHONPATH": str(ROOT),
        }

    def argv(self, state: Path) -> list[str]:
        return [
            *CLI,
            "run",
            str(self.folder / "good.env"),
            str(self.folder / "bad.env"),
            "--json",
            "--quiet",
            "--state-dir",
            str(state),
            "--",
            str(self.folder / "work.sh"),
        ]


def journal(state: Path) -> tuple[list[dict[str, Any]], bool]:
    """The journal's records, and whether every complete line is one (a torn last
    line, without its newline, is not counted against it)."""
    path = state / "journal.jsonl"
    if not path.exists():
        return [], True
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")
    records, valid = [], True
    for line in lines[:-1]:
        try:
            records.append(json.loads(line))
        except ValueError:
            valid = False
    return records, valid


def verdict(result: dict[str, Any]) -> tuple[str, list[list[str]]]:
    culprits = sorted(
        sorted(c["key"] for c in culprit["changes"]) for culprit in result["culprits"]
    )
    return result["status"], culprits


def uninterrupted(scenario: Scenario, state: Path) -> dict[str, Any]:
    done = subprocess.run(
        scenario.argv(state),
        env=scenario.env(state.with_name(state.name + "-pids")),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode not in (0, 1):
        raise RuntimeError(f"the uninterrupted run failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def kill_and_resume(
    scenario: Scenario,
    state: Path,
    reference: dict[str, Any],
    after_records: int,
    delay_s: float,
    wait_dead: Callable[[list[int]], list[int]],
) -> KillOutcome:
    """Kill a fresh run after ``after_records`` journaled probes and ``delay_s`` more,
    resume it, and check the session against the uninterrupted ``reference``."""
    pids_dir = state.with_name(state.name + "-pids")
    env = scenario.env(pids_dir)
    proc = subprocess.Popen(
        scenario.argv(state), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    while proc.poll() is None and len(journal(state)[0]) < after_records:
        time.sleep(0.01)
    time.sleep(delay_s)
    finished_first = proc.poll() is not None
    if not finished_first:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.stderr is not None
    proc.stderr.close()
    at_kill, _ = journal(state)
    raw = (state / "journal.jsonl").read_bytes() if (state / "journal.jsonl").exists() else b""
    torn = bool(raw) and not raw.endswith(b"\n")
    # Killed before the session was made: the user runs the same command again.
    made = (state / "session.json").exists()
    again = [*CLI, "resume", str(state), "--json", "--quiet"] if made else scenario.argv(state)
    started = time.monotonic()
    resumed = subprocess.run(
        again,
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    resume_s = time.monotonic() - started
    if resumed.returncode not in (0, 1):
        raise RuntimeError(f"resume failed ({resumed.returncode}): {resumed.stderr[-2000:]}")
    result = json.loads(resumed.stdout)
    records, valid = journal(state)
    ids = [r["probe_id"] for r in records]
    pids = [int(p) for p in (pids_dir / "pids").read_text().split()] if pids_dir.exists() else []
    return KillOutcome(
        after_records=after_records,
        delay_s=delay_s,
        finished_first=finished_first,
        before_session=not made,
        torn_tail=torn,
        records_at_kill=len(at_kill),
        resume_s=resume_s,
        same_verdict=verdict(result) == verdict(reference),
        journal_valid=valid and (state / "journal.jsonl").read_bytes().endswith(b"\n"),
        ids_unique=len(ids) == len(set(ids)),
        same_probes=[(r["subset"], r["purpose"]) for r in records]
        == [(p["subset"], p["purpose"]) for p in reference["probes"]],
        leftovers=wait_dead(pids),
    )


def kill_points(reference: dict[str, Any], count: int, seed: int) -> list[tuple[int, float]]:
    """``count`` random (records, delay) points over the uninterrupted run."""
    rng = random.Random(seed)
    total = reference["probe_count"]
    spread = max(0.02, reference["elapsed_s"] / max(1, total))
    return [(rng.randrange(0, total), rng.uniform(0.0, 1.5 * spread)) for _ in range(count)]


def alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_dead(pids: list[int], patience_s: float = 60.0) -> list[int]:
    """The PIDs still alive once every one has ended, or after ``patience_s`` (a state
    to wait for, not a time to race: a loaded machine only makes this slower)."""
    deadline = time.monotonic() + patience_s
    left = [p for p in pids if alive(p)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if alive(p)]
    return left
