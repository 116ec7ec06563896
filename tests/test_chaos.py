"""SIGKILL at 20 random points of a real local run, each followed by `resume`.

Every resumed verdict equals the uninterrupted one, no probe is recorded twice or
lost, the journal is always valid afterwards, and no probe process outlives the kill.
The harness (``benchmarks/chaos.py``) is the one ``benchmarks/bench_chaos.py`` measures
with; here the claim is checked on a small bisection.
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.chaos import Scenario, kill_and_resume, kill_points, uninterrupted, wait_dead

KILLS = 20


def test_sigkill_at_20_random_points_then_resume_gives_the_same_verdict(tmp_path: Path) -> None:
    scenario = Scenario(tmp_path / "inputs", n=24, culprit=13)
    scenario.write()
    reference = uninterrupted(scenario, tmp_path / "reference")
    assert reference["status"] == "found"
    assert [c["changes"][0]["key"] for c in reference["culprits"]] == ["env.VAR_CULPRIT"]
    outcomes = []
    for number, (after, delay) in enumerate(kill_points(reference, KILLS, seed=15)):
        outcome = kill_and_resume(
            scenario, tmp_path / f"kill{number:02d}", reference, after, delay, wait_dead
        )
        outcomes.append(outcome)
        assert outcome.ok, (number, outcome)
    # The kills landed inside runs, not only after them.
    assert sum(not o.finished_first for o in outcomes) >= KILLS // 2
