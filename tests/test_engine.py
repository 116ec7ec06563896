"""The engine, in process, over a real session with the scripted backend (tests/fakes.py).

No subprocess and no mock: the engine drives the real default strategy, the scripted
runner decides each probe from its environment, and every run is journaled.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import ScriptedOptions, ScriptedRunner, register

from clusterbisect import workflow
from clusterbisect.config import SearchOptions, SessionConfig, SignatureOptions
from clusterbisect.outcome import Outcome
from clusterbisect.search.base import FOUND, INCONCLUSIVE, ProbeRequest


@pytest.fixture(autouse=True)
def scripted_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    register(monkeypatch)


def bisection(
    tmp_path: Path, n: int = 16, culprits: list[list[str]] | None = None, parallel: int = 1
) -> workflow.Bisection:
    """A new session over ``n`` changed variables, on the scripted backend."""
    (tmp_path / "good.env").write_text("".join(f"VAR_{i:02d}=good\n" for i in range(n)))
    (tmp_path / "bad.env").write_text("".join(f"VAR_{i:02d}=bad\n" for i in range(n)))
    config = SessionConfig(
        good_source=str(tmp_path / "good.env"),
        bad_source=str(tmp_path / "bad.env"),
        backend="scripted",
        signature=SignatureOptions(fail_on="CUDA error"),
        search=SearchOptions(parallel=parallel),
        backend_options=ScriptedOptions(culprits if culprits is not None else [["VAR_05"]]),
    )
    return workflow.create_session(config, tmp_path / "state")


def keys(engine: workflow.Engine, subsets: object) -> list[list[str]]:
    return [engine.problem.subset_keys(s) for s in subsets]  # type: ignore[attr-defined]


def test_the_engine_finds_the_culprit_and_journals_every_run(tmp_path: Path) -> None:
    opened = bisection(tmp_path)
    runner = workflow.runner_for(opened)
    engine = workflow.engine_for(opened, runner)
    outcome = engine.drive()
    assert outcome.result is not None and outcome.result.status == FOUND
    assert keys(engine, [c.changes for c in outcome.result.culprits]) == [["env.VAR_05"]]
    records = opened.session.records()
    assert [r.probe_id for r in records] == [f"p{i:03d}" for i in range(1, len(records) + 1)]
    assert sum(len(batch) for batch in runner.batches) == len(records)
    assert records[0].purpose == "baseline-good" and records[0].outcome == "pass"
    assert records[1].purpose == "baseline-bad" and records[1].outcome == "fail"
    assert all((opened.session.state_dir / r.log).is_file() for r in records if r.log)


def test_a_new_engine_answers_from_the_journal_and_runs_nothing_again(tmp_path: Path) -> None:
    opened = bisection(tmp_path)
    first = workflow.engine_for(opened, workflow.runner_for(opened)).drive()
    reopened = workflow.Bisection.open(opened.session.state_dir)
    runner = workflow.runner_for(reopened)
    assert isinstance(runner, ScriptedRunner)
    again = workflow.engine_for(reopened, runner).drive()
    assert runner.batches == []
    assert first.result is not None and again.result is not None
    assert again.result.status == first.result.status
    assert [c.changes for c in again.result.culprits] == [c.changes for c in first.result.culprits]


def test_parallel_probes_run_in_rounds_of_k(tmp_path: Path) -> None:
    opened = bisection(tmp_path, n=64, culprits=[["VAR_41"]], parallel=4)
    runner = workflow.runner_for(opened)
    engine = workflow.engine_for(opened, runner)
    outcome = engine.drive()
    assert outcome.result is not None and outcome.result.status == FOUND
    assert max(len(batch) for batch in runner.batches) <= 4
    assert engine.rounds == len(runner.batches) < len(engine.records)


def test_the_probe_budget_ends_inconclusive_with_candidates(tmp_path: Path) -> None:
    opened = bisection(tmp_path, n=32)
    engine = workflow.engine_for(opened, workflow.runner_for(opened))
    outcome = engine.drive(max_probes=3)
    assert outcome.budget_exhausted and outcome.result is not None
    assert outcome.result.status == INCONCLUSIVE and len(opened.session.records()) == 3
    assert any("env.VAR_05" in k for k in keys(engine, outcome.result.candidates))


def test_without_execute_the_engine_stops_at_what_is_pending(tmp_path: Path) -> None:
    opened = bisection(tmp_path)
    runner = workflow.runner_for(opened)
    outcome = workflow.engine_for(opened, runner).drive(execute=False)
    assert outcome.pending is not None and runner.batches == []
    assert [r.purpose for r in outcome.pending.requests] == ["baseline-good", "baseline-bad"]


def test_a_probe_is_the_good_spec_plus_its_subset_with_typed_fields(tmp_path: Path) -> None:
    opened = bisection(tmp_path, n=4)
    engine = workflow.engine_for(opened, workflow.runner_for(opened))
    probe = engine.make_probe(ProbeRequest(frozenset({2}), purpose="search"), 7)
    assert probe.probe_id == "p007" and probe.purpose == "search"
    assert probe.env_names == ("VAR_00", "VAR_01", "VAR_02", "VAR_03")
    assert probe.spec.document["env"]["VAR_02"] == "bad"
    assert probe.spec.document["env"]["VAR_01"] == "good"
    assert probe.log_path == opened.session.state_dir / "logs" / "p007.log"


def test_an_outcome_reported_by_hand_is_journaled_like_a_run(tmp_path: Path) -> None:
    opened = bisection(tmp_path, n=4)
    engine = workflow.engine_for(opened, workflow.runner_for(opened))
    record = engine.record_manual(frozenset(), Outcome.PASS, "baseline-good", number=1)
    assert record.source == "manual" and record.subset == []
    assert opened.session.records() == [record]
    assert engine.outcomes_of(frozenset()) == [Outcome.PASS]


def test_nothing_testable_on_the_backend_is_bad_input_and_leaves_no_session(
    tmp_path: Path,
) -> None:
    from clusterbisect.errors import InputError

    (tmp_path / "good.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n"
        "  containers: [{name: c, image: 'x:1'}]\n"
    )
    (tmp_path / "bad.yaml").write_text((tmp_path / "good.yaml").read_text().replace("x:1", "x:2"))
    config = SessionConfig(
        good_source=str(tmp_path / "good.yaml"),
        bad_source=str(tmp_path / "bad.yaml"),
        backend="scripted",
    )
    with pytest.raises(InputError, match="none of the 1 changes can be applied on the scripted"):  # noqa: SIM117
        with workflow.new_session(config, tmp_path / "state") as opened:
            workflow.engine_for(opened, workflow.runner_for(opened))
    assert not (tmp_path / "state").exists()
