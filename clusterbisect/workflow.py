"""Whole bisections: create or open a session, build its runner and strategy, drive it.

The CLI commands and the agent tools are thin shells over these functions, so a
session started one way can be finished the other.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from clusterbisect.diff import diff
from clusterbisect.engine import Engine, Progress, prepare
from clusterbisect.errors import InputError, Interrupted
from clusterbisect.interrupts import sigterm_as_interrupt
from clusterbisect.outcome import FailureSignature, Outcome
from clusterbisect.report import build_result
from clusterbisect.runners import make_runner
from clusterbisect.runners.base import Runner
from clusterbisect.search.base import ProbeAnswer, ProbeRequest, Strategy, Subset
from clusterbisect.session import Session, SessionConfig
from clusterbisect.specs import load_spec, parse_spec


def make_strategy(config: SessionConfig) -> Strategy:
    """The search strategy a session asked for."""
    options = config.strategy_options
    if config.strategy == "flaky":
        from clusterbisect.search.flaky import FlakyStrategy

        return FlakyStrategy(parallel=config.parallel, **options)
    from clusterbisect.search.auto import AutoStrategy

    return AutoStrategy(parallel=config.parallel, **options)


def new_config(
    *,
    good: str,
    bad: str,
    backend: str = "local",
    command: list[str] | None = None,
    fail_on: str | None = None,
    fail_exit_code: int | None = None,
    fail_reason: str | None = None,
    timeout: float | None = None,
    hang_is_failure: bool = False,
    ignore: list[str] | tuple[str, ...] = (),
    container: str | None = None,
    parallel: int = 1,
    clean_env: bool = False,
    max_probes: int | None = None,
    max_time: float | None = None,
    flaky: bool = False,
    confidence: float = 0.99,
    baseline_runs: int = 1,
    repro_rate: float | None = None,
    background_rate: float | None = None,
    backend_options: dict[str, Any] | None = None,
    dry_run: str | None = None,
) -> SessionConfig:
    """A session's configuration from the options of ``run`` and ``start`` (and their tools)."""
    import re

    from clusterbisect.runners import BACKENDS

    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; expected {', '.join(BACKENDS)}")
    if hang_is_failure and not timeout:
        raise InputError("hang_is_failure needs a timeout", field="timeout")
    if fail_on:
        try:
            re.compile(fail_on)
        except re.error as err:
            raise InputError(f"not a valid regular expression: {err}", field="fail_on") from None
    strategy_options: dict[str, Any] = {"confidence": confidence, "baseline_runs": baseline_runs}
    if repro_rate is not None:
        strategy_options["p"] = repro_rate
    if background_rate is not None:
        strategy_options["q"] = background_rate
    if repro_rate is not None and background_rate is not None and background_rate >= repro_rate:
        raise InputError(
            f"must be below the reproduction rate {repro_rate:g}, got {background_rate:g}",
            field="background_rate",
        )
    options = dict(backend_options or {})
    if backend == "kubernetes":
        options["dry_run"] = dry_run or "none"
    return SessionConfig(
        good="",
        bad="",
        good_source=good,
        bad_source=bad,
        backend=backend,
        command=list(command) if command else None,
        signature=FailureSignature(fail_on, fail_exit_code, fail_reason, hang_is_failure).to_dict(),
        parallel=parallel,
        timeout_s=timeout,
        ignore=list(ignore),
        container=container,
        clean_env=clean_env,
        max_probes=max_probes,
        max_time_s=max_time,
        # Without flaky, repeated baselines that disagree switch to the flaky strategy.
        strategy="flaky" if flaky else "auto",
        strategy_options=strategy_options,
        backend_options=options,
    )


def create_session(config: SessionConfig, state_dir: Path | None) -> Session:
    """Validate the inputs (they must load and be comparable), then make the state dir.

    A source naming a live object (``job/NAME``, ``k8s://NS/job/NAME``) is fetched with
    the session's kubeconfig and stored as YAML, so a resume never depends on the
    cluster still holding it.
    """
    texts = [_live_text(source, config) for source in (config.good_source, config.bad_source)]
    specs = [
        parse_spec(text, source) if text is not None else load_spec(source)
        for text, source in zip(texts, (config.good_source, config.bad_source))
    ]
    diff(specs[0], specs[1], ignore=config.ignore, container=config.container)
    return Session.create(config, state_dir, good_text=texts[0], bad_text=texts[1])


@contextmanager
def new_session(config: SessionConfig, state_dir: Path | None) -> Iterator[Session]:
    """Create a session for one command. If the command then fails on its input before
    any probe ran (say, no change can be applied on the backend), the session is
    removed again: a usage error leaves no half-made state directory behind."""
    session = create_session(config, state_dir)
    try:
        yield session
    except InputError:
        if not session.records():
            session.discard()
        raise


def _live_text(source: str, config: SessionConfig) -> str | None:
    """The YAML of a live Kubernetes object, or None when ``source`` is a file."""
    if Path(source).exists() or "/" not in source:
        return None
    from clusterbisect.runners.kubernetes.client import connect
    from clusterbisect.specs import live

    if not live.is_live_ref(source):
        return None
    options = config.backend_options
    connection = connect(
        options.get("kubeconfig"), options.get("context"), options.get("namespace")
    )
    return live.live_spec_text(source, connection)


def runner_for(session: Session, render_only: bool = False) -> Runner:
    """The session's runner. ``render_only`` (the step mode, which launches nothing)
    makes a Kubernetes runner render as in a client dry run, so no cluster is needed.
    """
    config = session.config
    options = dict(config.backend_options)
    if render_only and config.backend == "kubernetes":
        options["dry_run"] = "client"
    return make_runner(
        config.backend,
        state_dir=session.state_dir,
        parallel=config.parallel,
        container=config.container,
        clean_env=config.clean_env,
        timeout_s=config.timeout_s,
        options=options,
    )


def engine_for(session: Session, runner: Runner | None, progress: Progress | None = None) -> Engine:
    """An engine over the session's journal; ``runner`` only decides what is testable."""
    problem = prepare(session, runner)
    return Engine(
        session=session,
        problem=problem,
        strategy=make_strategy(session.config),
        runner=runner,
        signature=FailureSignature.from_dict(session.config.signature),
        progress=progress,
    )


def run_session(session: Session, progress: Progress | None = None) -> dict[str, Any]:
    """Drive the session to a result with its backend; always release the runner.

    The journal is written as probes finish, so an interruption loses nothing: the
    session can be resumed and reaches the same answer.
    """
    started = time.monotonic()
    runner = runner_for(session)
    try:
        with sigterm_as_interrupt():
            engine = engine_for(session, runner, progress)
            config = session.config
            outcome = engine.drive(
                execute=True, max_probes=config.max_probes, max_time_s=config.max_time_s
            )
    except (Interrupted, KeyboardInterrupt) as interrupt:
        raise Interrupted(
            f"interrupted; probes were stopped and {len(session.records())} finished probes "
            f"are saved. Continue with: clusterbisect resume {session.state_dir}",
            details={"state_dir": str(session.state_dir)},
        ) from interrupt
    finally:
        runner.close()
    assert outcome.result is not None
    result = build_result(engine, outcome.result, time.monotonic() - started)
    session.write_result(result)
    return result


@dataclass
class PlannedProbe:
    probe_id: str
    purpose: str
    changes: list[str]
    rendered: dict[str, Any]
    manifest: str | None = None


def dry_run(session: Session) -> dict[str, Any]:
    """Render the baselines and the first search round without launching anything.

    The first round depends on the baselines, so the plan assumes they behave as
    expected (good passes, bad fails). Each rendered probe is written under
    ``STATE_DIR/dry-run/``.
    """
    runner = runner_for(session)
    try:
        engine = engine_for(session, runner)
        batches = _first_batches(engine.strategy, len(engine.problem.testable))
        out_dir = session.state_dir / "dry-run"
        out_dir.mkdir(exist_ok=True)
        planned: list[PlannedProbe] = []
        for request in [r for batch in batches for r in batch]:
            probe = engine.make_probe(request, len(planned) + 1)
            rendered = runner.render(probe)
            path = out_dir / f"{probe.probe_id}.yaml"
            path.write_text(yaml.safe_dump(rendered, sort_keys=False))
            planned.append(
                PlannedProbe(
                    probe.probe_id,
                    request.purpose,
                    engine.problem.subset_keys(request.subset),
                    rendered,
                    str(path),
                )
            )
    finally:
        runner.close()
    return {
        "status": "dry_run",
        "state_dir": str(session.state_dir),
        "session_id": session.session_id,
        "backend": session.config.backend,
        "changes_total": len(engine.problem.changes),
        "changes_searched": len(engine.problem.testable),
        "untestable": [
            {"key": k, "reason": r} for k, r in sorted(engine.problem.untestable.items())
        ],
        "plan": [
            {"id": p.probe_id, "purpose": p.purpose, "subset": p.changes, "manifest": p.manifest}
            for p in planned
        ],
        "probe_count": 0,
        "rounds": 0,
        "culprits": [],
    }


def _first_batches(strategy: Strategy, n: int) -> list[list[ProbeRequest]]:
    """The baselines and the first round, assuming good passes and everything else fails."""
    search = strategy.search(n)
    batches: list[list[ProbeRequest]] = []
    planned: set[tuple[Subset, int]] = set()
    try:
        batch = next(search)
        while len(batches) < 2:
            # A batch that asks again for what is planned costs nothing: not a round.
            new = [r for r in batch if (r.subset, r.runs or 1) not in planned]
            if new:
                batches.append(new)
                planned.update((r.subset, r.runs or 1) for r in new)
            answers = []
            for request in batch:
                outcome = Outcome.PASS if not request.subset else Outcome.FAIL
                answers.append(ProbeAnswer(outcome, (outcome,) * (request.runs or 1)))
            batch = search.send(answers)
    except StopIteration:
        pass
    finally:
        search.close()
    return batches
