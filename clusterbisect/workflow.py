"""Whole bisections: create or open a session, build its runner and engine, drive them.

The CLI commands and the agent tools are thin shells over these functions, so a
session started one way can be finished the other. Following ``run``:

1. :func:`new_session` checks the inputs (they load and can be compared), makes the
   state directory (``session.py``) and keeps the specs and their changes: a
   :class:`Bisection`. The diff is computed once and passed along from here.
2. :func:`runner_for` asks the registry (``backends.py``) for the backend's runner,
   handing it a ``RunnerContext``: the good spec, the changes, the session's paths.
3. :func:`engine_for` splits off what the runner cannot apply (``problem.py``) and
   sets up the engine with the search strategy (``engine.py``, ``search/``).
4. :func:`run_session` drives the engine, which runs probes through the runner and
   journals each; the report (``report.py``) is built from the evidence, as data,
   written and handed out (``publish``) before the runner is torn down.

:func:`resume_session` first clears what an interrupted run left behind
(:func:`clear_leftovers`, the backend's cleanup hook), then runs the session;
:func:`cleanup` is the ``cleanup`` command's and tool's way to that hook.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clusterbisect import backends, options
from clusterbisect.config import BackendOptions, KubeConnection, LimitOptions, SessionConfig
from clusterbisect.diff import Change, Comparison, compare
from clusterbisect.engine import Engine, Progress
from clusterbisect.errors import InputError, Interrupted
from clusterbisect.interrupts import sigterm_as_interrupt
from clusterbisect.log import get_logger
from clusterbisect.nextstep import Reached, next_step
from clusterbisect.outcome import Outcome
from clusterbisect.problem import Problem
from clusterbisect.report import Evidence, build_result
from clusterbisect.runners.base import Probe, RunnerContext, runner_notes
from clusterbisect.search import make_strategy
from clusterbisect.search.base import ProbeAnswer, ProbeRequest, SearchResult, Strategy, Subset
from clusterbisect.session import DRY_RUN_DIR, Session
from clusterbisect.specs import load_spec, parse_spec
from clusterbisect.specs.model import Spec

log = get_logger(__name__)


@dataclass
class Bisection:
    """A session opened for work: its state directory, its specs and their changes.

    The changes are computed once, when the session is created or opened; every
    runner, engine and report of this process reuses them.
    """

    session: Session
    good: Spec
    bad: Spec
    changes: list[Change]
    warnings: list[str] = field(default_factory=list)  # about the scope (--ignore)

    @classmethod
    def open(cls, state_dir: Path) -> Bisection:
        """Open an existing session and diff its stored inputs."""
        session = Session.open(state_dir)
        return cls.of(session, session.spec("good"), session.spec("bad"))

    @classmethod
    def of(cls, session: Session, good: Spec, bad: Spec) -> Bisection:
        session.use_specs(good, bad)
        found = _compare(session.config, good, bad)
        return cls(session, good, bad, found.changes, found.warnings)


def _compare(config: SessionConfig, good: Spec, bad: Spec) -> Comparison:
    return compare(good, bad, ignore=config.scope.ignore, container=config.scope.container)


# --- creating a session -------------------------------------------------------------------


def create_session(
    config: SessionConfig, state_dir: Path | None, purpose: str = "run"
) -> Bisection:
    """Validate the inputs (they must load and be comparable), then make the state dir,
    locked for ``purpose`` (the caller releases it: ``bisection.session.close()``).

    A source naming a live object (``job/NAME``, ``k8s://NS/job/NAME``) is fetched with
    the session's kubeconfig and stored as YAML, so a resume never depends on the
    cluster still holding it.
    """
    config.validate()
    if config.search.priors and not config.prior_weights:
        config.prior_weights = _prior_weights(config.search.priors)
    sources = (config.good_source, config.bad_source)
    texts = [_live_text(source, config) for source in sources]
    good, bad = (
        parse_spec(text, source) if text is not None else load_spec(source)
        for text, source in zip(texts, sources, strict=True)
    )
    found = _compare(config, good, bad)
    session = Session.create(
        config,
        state_dir,
        good_text=texts[0],
        bad_text=texts[1],
        specs=(good, bad),
        purpose=purpose,
    )
    return Bisection(session, good, bad, found.changes, found.warnings)


@contextmanager
def new_session(
    config: SessionConfig, state_dir: Path | None, purpose: str = "run"
) -> Iterator[Bisection]:
    """Create a session for one command, which holds its lock until the block ends. If
    the command then fails on its input before any probe ran (say, no change can be
    applied on the backend), the session is removed again: a usage error leaves no
    half-made state directory behind."""
    bisection = create_session(config, state_dir, purpose)
    try:
        yield bisection
    except InputError:
        if not bisection.session.records():
            bisection.session.discard()
        raise
    finally:
        bisection.session.close()


def _prior_weights(path: str) -> dict[str, float]:
    """The weights by key of a triage result file (``run --priors``), kept in the
    session so that a resume replays the same search without the file."""
    from clusterbisect.triage.priors import load_priors

    return load_priors(path).to_dict()


def _live_text(source: str, config: SessionConfig) -> str | None:
    """The YAML of a live Kubernetes object, or None when ``source`` is a file."""
    if Path(source).exists() or "/" not in source:
        return None
    from clusterbisect.specs import live

    options = config.backend_options
    connection = options if isinstance(options, KubeConnection) else KubeConnection()
    return live.source_text(source, connection)


# --- the runner and the engine --------------------------------------------------------------


def runner_for(bisection: Bisection, render_only: bool = False) -> Any:
    """The session's runner. ``render_only`` (the step mode, which launches nothing)
    renders every probe as a client dry run does, so no cluster is needed."""
    config = bisection.session.config
    context = runner_context(bisection, render_only)
    return backends.make_runner(config.backend, context, config.backend_options)


def runner_context(bisection: Bisection, render_only: bool = False) -> RunnerContext:
    """What the session's runner is told (see :func:`runner_for`)."""
    session, config = bisection.session, bisection.session.config
    return RunnerContext(
        session_id=session.session_id,
        good=bisection.good,
        changes=tuple(bisection.changes),
        command=config.command,
        container=config.scope.container,
        parallel=config.search.parallel,
        timeout_s=config.limits.timeout,
        dry_run="client" if render_only else config.dry_run,
        signature=config.signature.failure_signature(),
        state_dir=session.state_dir,
        manifests_dir=session.manifests_dir,
        private_dir=session.private_dir(config.backend),
        redactor=session.redactor,
    )


def engine_for(bisection: Bisection, runner: Any, progress: Progress | None = None) -> Engine:
    """An engine over the session's journal; ``runner`` decides what is testable."""
    untestable = runner.untestable(bisection.changes)
    instead = "choose another --backend"
    if bisection.changes and len(untestable) == len(bisection.changes):
        instead = _backends_that_can(bisection, runner.name) or instead
    problem = Problem.split(
        bisection.good, bisection.bad, bisection.changes, untestable, runner.name, instead
    )
    config = bisection.session.config
    return Engine(
        session=bisection.session,
        problem=problem,
        strategy=make_strategy(config.search, _weights(config, problem)),
        runner=runner,
        signature=config.signature.failure_signature(),
        progress=progress,
    )


def _backends_that_can(bisection: Bisection, current: str) -> str | None:
    """The other backends that can apply some of the changes (asked as step mode asks:
    render only, nothing started), as advice for an error."""
    able = []
    for name in backends.BACKENDS:
        if name == current:
            continue
        context = RunnerContext(
            good=bisection.good,
            changes=tuple(bisection.changes),
            command=bisection.session.config.command,
            dry_run="client",
        )
        try:
            runner = backends.make_runner(name, context)
            try:
                count = len(bisection.changes) - len(runner.untestable(bisection.changes))
            finally:
                runner.close()
        except InputError as err:
            able.append(f"--backend {name} ({err.message})")
            continue
        if count:
            able.append(f"--backend {name} can apply {count}")
    return "; ".join(able) or None


def _weights(config: SessionConfig, problem: Problem) -> list[float] | None:
    """The priors' weight of each change searched (None: no priors)."""
    if not config.prior_weights:
        return None
    from clusterbisect.triage.priors import Priors

    priors = Priors(config.prior_weights)
    return [priors.weight(c.key) for c in problem.testable]


def _priors_used(config: SessionConfig, problem: Problem) -> dict[str, Any] | None:
    """What the report says of the priors: their file and the weights of the changes."""
    weights = _weights(config, problem)
    if weights is None:
        return None
    keyed = sorted(
        ((c.key, w) for c, w in zip(problem.testable, weights, strict=True) if w > 0),
        key=lambda kw: (-kw[1], kw[0]),
    )
    return {"source": config.search.priors, "weights": {k: round(w, 4) for k, w in keyed}}


def evidence(
    engine: Engine,
    search: SearchResult,
    elapsed_s: float,
    warnings: list[str] | None = None,
    stopped_early: str | None = None,
) -> Evidence:
    """What the report is built from: the engine's journal and problem, as data."""
    session = engine.session
    config = session.config
    reached = Reached(session.state_dir, len(engine.records), engine.strategy.remaining_estimate())
    inputs = session.input_path("good"), session.input_path("bad")
    step = next_step(config, search, *inputs, reached)
    return Evidence(
        search=search,
        problem=engine.problem,
        records=list(engine.records),
        rounds=engine.rounds,
        strategy=engine.strategy.name,
        signature=engine.signature.describe(),
        session={
            "state_dir": str(session.state_dir),
            "session_id": session.session_id,
            "backend": config.backend,
            "good": config.good_source,
            "bad": config.bad_source,
        },
        elapsed_s=elapsed_s,
        read_log=session.read_log,
        warnings=list(warnings or []),
        stopped_early=stopped_early,
        continue_with=f"continue with: {step['command']}" if stopped_early and step else None,
        failure=engine.signature,
        notes=[config.signature.decided] if config.signature.decided else [],
        redactor=session.redactor,
        fidelity=engine.runner.fidelity().to_dict() if engine.runner is not None else {},
        probe_timeout=engine.timeout().to_dict(),
        next_step=step,
        backend_notes=runner_notes(engine.runner),
        priors=_priors_used(config, engine.problem),
    )


# --- running ------------------------------------------------------------------------------------


def extend_budget(
    bisection: Bisection, max_probes: int | None = None, max_time: float | None = None
) -> None:
    """Give a session a new budget (``resume --max-probes/--max-time``), kept in its
    ``session.json``. ``max_probes`` counts every probe of the session, as ``run``'s
    does, so it must be above the number already run. Call it holding the session's
    lock (:func:`resume_session` does, given the budget)."""
    session = bisection.session
    limits = session.config.limits
    if max_probes is not None:
        done = len(session.records())
        if max_probes <= done:
            raise InputError(
                f"the session has run {done} probes already and --max-probes counts all "
                f"of them: give more than {done} (e.g. {done + 10})",
                field="max_probes",
            )
        limits.max_probes = max_probes
    if max_time is not None:
        limits.max_time = max_time
    if max_probes is not None or max_time is not None:
        session.save_config()


def run_session(
    bisection: Bisection,
    progress: Progress | None = None,
    publish: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Drive the session to a result with its backend; always release the runner.

    The journal is written as probes finish, so an interruption loses nothing: the
    session can be resumed and reaches the same answer. The result is written, and
    given to ``publish`` (the CLI prints it), as soon as the search ends: tearing the
    runner down (stopping a local Ray, say) comes after, and its time is not in the
    report's. The session's lock is held throughout (taken here for a session opened to
    resume): one writer at a time.
    """
    session = bisection.session
    with session.locked("resume"):
        return _run_locked(bisection, progress, publish)


def _run_locked(
    bisection: Bisection,
    progress: Progress | None,
    publish: Callable[[dict[str, Any]], None] | None,
) -> dict[str, Any]:
    started = time.monotonic()
    session = bisection.session
    runner = runner_for(bisection)
    try:
        with sigterm_as_interrupt():
            engine = engine_for(bisection, runner, progress)
            limits = session.config.limits
            outcome = engine.drive(
                execute=True, max_probes=limits.max_probes, max_time_s=limits.max_time
            )
        assert outcome.result is not None
        elapsed = time.monotonic() - started
        result = build_result(
            evidence(engine, outcome.result, elapsed, bisection.warnings, outcome.budget_exhausted)
        )
        session.write_result(result)
        if publish is not None:
            publish(result)
    except (Interrupted, KeyboardInterrupt) as interrupt:
        raise Interrupted(
            f"interrupted; probes were stopped and {len(session.records())} finished probes "
            f"are saved. Continue with: clusterbisect resume {session.state_dir}",
            details={"state_dir": str(session.state_dir)},
        ) from interrupt
    finally:
        closing = time.monotonic()
        runner.close()
        teardown_s = time.monotonic() - closing
        log.info("teardown", backend=runner.name, seconds=round(teardown_s, 2))
        if progress is not None:
            progress.torn_down(teardown_s)
    return result


def resume_session(
    bisection: Bisection,
    progress: Progress | None = None,
    publish: Callable[[dict[str, Any]], None] | None = None,
    budget: LimitOptions | None = None,
) -> dict[str, Any]:
    """Continue a session: clear what an interrupted run left behind, then run it
    (both under the session's lock, so a run still going is never cleared).
    ``budget`` (resume's --max-probes/--max-time) replaces the stored one where it
    sets a limit."""
    with bisection.session.locked("resume"):
        clear_leftovers(bisection.session)
        if budget is not None:
            extend_budget(bisection, budget.max_probes, budget.max_time)
        return run_session(bisection, progress, publish)


def clear_leftovers(session: Session) -> dict[str, Any] | None:
    """Stop and delete the session's probes that outlived an interrupted run (its
    backend's cleanup hook); None when the backend leaves nothing behind."""
    config = session.config
    backend = backends.get(config.backend)
    if backend.cleanup is None or backend.cleanup_options is None:
        return None
    connection = options.narrow(config.backend_options, backend.cleanup_options)
    report = backends.cleanup(
        config.backend, session.session_id, connection, session.private_dir(config.backend)
    )
    log.info("leftovers_cleared", **{k: v for k, v in report.items() if k != "summary"})
    return report


def cleanup_backend(name: str | None, state_dir: Path | None = None) -> backends.Backend:
    """The backend whose leftovers ``cleanup`` deletes: ``name``, else the session's,
    else the default; one that leaves nothing behind is bad input."""
    if name is None:
        name = Session.open(state_dir).config.backend if state_dir else backends.CLEANUP_DEFAULT
    chosen = backends.get(name)
    if chosen.cleanup is None or chosen.cleanup_options is None:
        raise InputError(f"the {name} backend leaves nothing to clean up", field="backend")
    return chosen


def cleanup(
    backend: str | None,
    session_id: str | None,
    given: BackendOptions | None,
    state_dir: Path | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """What ``cleanup`` does: delete a backend's leftovers, of one session or all.

    With ``state_dir``, that session's id, backend and stored connection are used
    (what ``given`` sets wins), and its own directory (a local Ray a killed run left).
    With ``dry_run``, only list them (``found``, ``sessions``, ``summary``).
    """
    chosen = cleanup_backend(backend, state_dir)
    assert chosen.cleanup_options is not None
    connection = given if given is not None else chosen.cleanup_options()
    private_dir = None
    if state_dir is not None:
        session = Session.open(state_dir)
        session_id = session.session_id
        private_dir = session.private_dir(chosen.name)
    if state_dir is not None and session.config.backend == chosen.name:
        stored = options.narrow(session.config.backend_options, chosen.cleanup_options)
        connection = type(stored)(
            **{
                **dataclasses.asdict(stored),
                **{k: v for k, v in dataclasses.asdict(connection).items() if v is not None},
            }
        )
    return backends.cleanup(chosen.name, session_id, connection, private_dir, dry_run)


def dry_run(bisection: Bisection) -> dict[str, Any]:
    """Render the baselines and the first search round without launching anything.

    The first round depends on the baselines, so the plan assumes they behave as
    expected (good passes, bad fails). Each rendered probe is written under
    ``STATE_DIR/dry-run/``.
    """
    session = bisection.session
    runner = runner_for(bisection)
    try:
        engine = engine_for(bisection, runner)
        batches = _first_batches(engine.strategy, len(engine.problem.testable))
        plan: list[dict[str, Any]] = []
        for request in [r for batch in batches for r in batch]:
            probe = engine.make_probe(request, len(plan) + 1)
            plan.append(
                {
                    "id": probe.probe_id,
                    "purpose": request.purpose,
                    "subset": engine.problem.subset_keys(request.subset),
                    **save_probe(session, DRY_RUN_DIR, runner, probe),
                }
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
        "untestable": engine.problem.untestable_list(),
        "fidelity": runner.fidelity().to_dict(),
        "plan": plan,
        "warnings": list(bisection.warnings),
        "notes": runner_notes(runner),
        "probe_count": 0,
        "rounds": 0,
        "culprits": [],
    }


def save_probe(session: Session, folder: str, runner: Any, probe: Probe) -> dict[str, Any]:
    """Write what ``runner`` renders for ``probe`` under ``folder``: the rendered probe
    (no secret value in it) and, when it refers to real values, the private file that
    holds them (mode 0600). Their paths, and how the two are used together."""
    saved: dict[str, Any] = {
        "manifest": str(session.save_rendered(folder, probe.probe_id, runner.render(probe)))
    }
    private = runner.private(probe)
    if private is not None:
        path = session.save_private(folder, probe.probe_id, private.suffix, private.text)
        saved["private_file"] = str(path)
        saved["private_file_holds"] = private.holds
        if private.usage:
            saved["use"] = private.usage.format(private=path, rendered=saved["manifest"])
    return saved


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
