"""Progress on stderr: rounds, the reasons the candidates grow back, the elapsed-time
line of long rounds, and colours only where they belong."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest

from clusterbisect.journal import ProbeRecord
from clusterbisect.outcome import Outcome
from clusterbisect.progress import (
    LOG_MARKS_S,
    TerminalProgress,
    elapsed_text,
    next_tick,
    wants_color,
)
from clusterbisect.runners.base import Probe
from clusterbisect.search.auto import AutoStrategy
from clusterbisect.search.base import SearchResult, Strategy, answer_from, runs_to_start
from clusterbisect.search.bisection import BisectionStrategy
from clusterbisect.search.oracle import SimOracle


class Tty(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def probe(purpose: str = "search") -> Probe:
    return Probe("p001", "s", None, [], Path("p001.log"), purpose=purpose)  # type: ignore[arg-type]


def record(outcome: str) -> ProbeRecord:
    return ProbeRecord("p001", 1, ["env.A"], outcome, observed="exit code 1")


def wait_for(stream: io.StringIO, text: str) -> None:
    """Wait (for a state, not a time) until ``text`` was written; fail after a minute."""
    done = threading.Event()
    for _ in range(6000):
        if text in stream.getvalue():
            return
        done.wait(0.01)
    pytest.fail(f"never written: {text!r}; got {stream.getvalue()!r}")


def test_colours_on_a_terminal_only_and_never_with_no_color(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert wants_color(Tty()) and not wants_color(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not wants_color(Tty())
    monkeypatch.delenv("NO_COLOR")
    monkeypatch.setenv("TERM", "dumb")
    assert not wants_color(Tty())

    coloured = Tty()
    TerminalProgress(coloured, color=True).probe_finished(record("fail"))
    assert "\x1b[31m" in coloured.getvalue() and "FAIL" in coloured.getvalue()  # red
    plain = io.StringIO()
    TerminalProgress(plain).probe_finished(record("pass"))
    assert "\x1b[" not in plain.getvalue()
    assert plain.getvalue().startswith("  p001 [   1 changes] PASS ")


def test_a_long_round_shows_its_elapsed_time_until_it_ends() -> None:
    stream = io.StringIO()
    progress = TerminalProgress(stream, tty=False, schedule=lambda elapsed: elapsed + 0.01)
    progress.round_started(3, [probe()], 16, 5)
    wait_for(stream, "still running")
    progress.round_finished(3)
    written = stream.getvalue()
    assert "  round 3: 1 probe still running, 0s\n" in written
    progress.probe_finished(record("pass"))
    # The ticker is stopped with its round: nothing ticks after the round's end.
    assert "still running" not in stream.getvalue()[len(written) :]
    assert progress._ticker is None


def test_on_a_terminal_the_elapsed_time_is_one_line_updated_in_place() -> None:
    stream = Tty()
    progress = TerminalProgress(stream, color=False, schedule=lambda elapsed: 0.0)
    progress.round_started(1, [probe("baseline-good")], 4, None)
    wait_for(stream, "still running")
    progress.round_finished(1)
    progress.probe_finished(record("pass"))
    text = stream.getvalue()
    # The transient line has no newline of its own and is erased before the next line.
    assert "still running" in text and "still running, 0s\n" not in text
    assert "\r\x1b[K  p001 [   1 changes] PASS" in text


def test_the_ticks_thin_out_in_a_log() -> None:
    assert [next_tick(t, tty=False) for t in (0, 30, 59, 480, 1000)] == [
        LOG_MARKS_S[0],
        60.0,
        60.0,
        1080.0,
        1080.0,
    ]
    assert next_tick(0, tty=True) == 3.0 and next_tick(10, tty=True) == 11.0
    assert [elapsed_text(s) for s in (5, 65, 3720)] == ["5s", "1m05s", "1h02m"]


def test_candidates_that_grow_back_say_why() -> None:
    """A handed-over search says so, once, when its candidates jump back up."""
    stream = io.StringIO()
    progress = TerminalProgress(stream)
    progress.round_started(7, [probe()], 1, 3)
    progress.round_finished(7)
    why = "handed over to the flake-aware search: a candidate did not fail on its own"
    progress.round_started(8, [probe()], 11, 17, why)
    progress.round_finished(8)
    progress.round_started(9, [probe()], 6, 15, why)
    progress.round_finished(9)
    lines = stream.getvalue().splitlines()
    assert lines[1] == f"  candidates back up to 11: {why}"
    assert lines[2].startswith("round 8: 1 probe in flight (search); 11 candidate changes left")
    assert sum(why in line for line in lines) == 1


def turns_of(strategy: Strategy, n: int, oracle: SimOracle) -> tuple[SearchResult, list[str]]:
    """Drive ``strategy`` as the engine does; the distinct ``last_turn()`` texts seen."""
    cache: dict[frozenset[int], list[Outcome]] = {}
    turns: list[str] = []
    search = strategy.search(n)
    try:
        batch = next(search)
        while True:
            for request in runs_to_start(batch, lambda s: cache.get(s, [])):
                cache.setdefault(request.subset, []).append(oracle.run(request.subset))
            turn = strategy.last_turn()
            if turn and turn not in turns:
                turns.append(turn)
            answers = [answer_from(r, cache.get(r.subset, [])) for r in batch]
            batch = search.send([a for a in answers if a is not None])
    except StopIteration as stop:
        return stop.value, turns


def test_the_strategies_say_why_their_candidates_widen() -> None:
    # Two independent culprits: the bisection finds one, then searches again.
    result, turns = turns_of(BisectionStrategy(), 8, SimOracle([{1}, {6}]))
    assert result.status == "found" and len(result.culprits) == 2
    assert turns == [
        "culprit 1 found, but the bad spec still fails without it: searching the other "
        "7 changes for another culprit"
    ]
    # An interaction under the default strategy: its guess does not fail on its own,
    # and the flake-aware search takes over.
    result, turns = turns_of(AutoStrategy(), 8, SimOracle([{2, 5}]))
    assert result.status == "found"
    assert turns[-1].startswith("handed over to the flake-aware search: a candidate of 1")
    # The plain bisection searches part by part when its guess does not confirm.
    _, turns = turns_of(BisectionStrategy(), 8, SimOracle([{2, 5}]))
    assert turns[0].startswith("the descent's guess did not fail on its own")


def test_the_first_estimate_covers_the_whole_search() -> None:
    """Before any probe, the estimate is the baselines, the descent and the
    confirmation (the default strategy confirms twice), not the last step's 2."""
    auto = AutoStrategy()
    next(auto.search(33))
    assert auto.remaining_estimate() == 2 + 6 + 2 + 1
    bisection = BisectionStrategy(parallel=1)
    next(bisection.search(33))
    assert bisection.remaining_estimate() == 2 + 6 + 2
    parallel = BisectionStrategy(parallel=3)
    next(parallel.search(33))
    assert parallel.remaining_estimate() == 2 + 3 * 3 + 2  # ceil(log4 33) = 3 rounds of 3
