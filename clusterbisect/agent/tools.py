"""Tool definitions: name, description, JSON Schema input, effect, and the handler.

Every tool declares its effect:

- ``read_only``: reads files and sessions, launches nothing;
- ``writes_state``: writes only the session's state directory, launches nothing;
- ``launches``: starts probe jobs or processes (on this machine, Ray or Kubernetes);
- ``destructive``: deletes things on a cluster.

``clusterbisect mcp --read-only`` serves only the tools that launch nothing
(``read_only`` and ``writes_state``): an agent can still drive a bisection step by
step, running each probe through its own access.

Handlers take the validated arguments and return a :class:`Reply`; they raise
``ClusterBisectError`` for everything the caller must fix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from clusterbisect import backends, config, options
from clusterbisect.agent.schemas import (
    RUN_INPUT,
    SPEC_PAIR,
    START_INPUT,
    STATE_DIR,
    obj,
    strings,
    text,
)
from clusterbisect.errors import EXIT_NO_CULPRIT, EXIT_OK, InputError
from clusterbisect.session import RESULT_FILE

# The backends whose leftovers `cleanup` deletes, and what it needs to reach them.
CLEANABLE = [b.name for b in backends.with_cleanup()]
CLEANUP_OPTIONS = tuple(
    dict.fromkeys(b.cleanup_options for b in backends.with_cleanup() if b.cleanup_options)
)

READ_ONLY = "read_only"
WRITES_STATE = "writes_state"
LAUNCHES = "launches"
DESTRUCTIVE = "destructive"
EFFECTS = (READ_ONLY, WRITES_STATE, LAUNCHES, DESTRUCTIVE)


@dataclass
class Reply:
    """A tool's answer: one JSON document, the exit code for `call`, and where the
    complete data lives when the document has to be shortened."""

    document: dict[str, Any]
    exit_code: int = EXIT_OK
    full: str | None = None


@dataclass(frozen=True)
class Tool:
    name: str
    title: str
    description: str
    input_schema: dict[str, Any]
    effect: str
    handler: Callable[[dict[str, Any]], Reply] = field(repr=False, compare=False)

    @property
    def launches_nothing(self) -> bool:
        return self.effect in (READ_ONLY, WRITES_STATE)

    def annotations(self) -> dict[str, Any]:
        """MCP tool annotations (hints for clients, e.g. to ask before launching)."""
        return {
            "title": self.title,
            "readOnlyHint": self.effect == READ_ONLY,
            # Launching probe jobs on a cluster deserves the same confirmation as deleting.
            "destructiveHint": self.effect in (LAUNCHES, DESTRUCTIVE),
            "idempotentHint": self.effect == READ_ONLY,
            "openWorldHint": self.effect in (LAUNCHES, DESTRUCTIVE),
        }

    def mcp_definition(self) -> dict[str, Any]:
        """The tool as MCP lists it (protocol field names)."""
        return {
            "name": self.name,
            "title": self.title,
            "description": self.description,
            "inputSchema": self.input_schema,
            "annotations": self.annotations(),
        }


# --- handlers ----------------------------------------------------------------------------


def session_config(args: dict[str, Any]) -> tuple[config.SessionConfig, Path | None]:
    """A new session's config and state directory from `run` or `start` arguments."""
    session, state_dir = config.SessionConfig.from_options(
        args["good"],
        args["bad"],
        args.get("command"),
        lambda group: options.from_arguments(group, args),
    )
    return session, Path(state_dir) if state_dir else None


def _state_dir(args: dict[str, Any]) -> Path | None:
    return Path(args["state_dir"]) if args.get("state_dir") else None


def _diff(args: dict[str, Any]) -> Reply:
    from clusterbisect.diff import compare, diff_document
    from clusterbisect.redact import Redactor, register
    from clusterbisect.specs import load_specs

    scope = options.from_arguments(config.ScopeOptions, args)
    good, bad = load_specs([args["good"], args["bad"]])
    register(Redactor.of_specs([good, bad]))
    found = compare(good, bad, ignore=scope.ignore, container=scope.container)
    return Reply(
        diff_document(
            args["good"], args["bad"], good.kind, good.format, found.changes, found.warnings
        )
    )


def _start(args: dict[str, Any]) -> Reply:
    from clusterbisect import stepmode

    document = stepmode.start(*session_config(args))
    full = document["next"].get("probe", {}).get("rendered_file")
    return Reply(stepmode.shown(document, args.get("verbose", False)), full=full)


def _next(args: dict[str, Any]) -> Reply:
    from clusterbisect import stepmode

    bisection = stepmode.open_session(args.get("state_dir"))
    document = stepmode.next_view(bisection, args.get("probe"))
    full = document.get("probe", {}).get("rendered_file")
    return Reply(stepmode.shown(document, args.get("verbose", False)), full=full)


def _record(args: dict[str, Any]) -> Reply:
    from clusterbisect import stepmode
    from clusterbisect.outcome import RunResult

    bisection = stepmode.open_session(args.get("state_dir"))
    observed = ("exit_code", "timed_out", "reason", "infra_error")
    run = None
    if any(k in args for k in observed):
        run = RunResult(
            exit_code=args.get("exit_code"),
            timed_out=args.get("timed_out", False),
            reason=args.get("reason"),
            infra_error=args.get("infra_error"),
            duration_s=args.get("duration_s", 0.0),
        )
    outcome = stepmode.parse_outcome(args["outcome"]) if "outcome" in args else None
    if outcome is None and run is None:
        raise InputError(
            "give `outcome` (pass, fail, unresolved) or what you observed "
            "(`exit_code`, `timed_out`, `reason`, `infra_error`) for the session's "
            "failure signature to classify",
            field="outcome",
        )
    document = stepmode.record(
        bisection,
        outcome,
        probe=args.get("probe"),
        run=run,
        log_file=args.get("log_file"),
        log_text=args.get("log_text"),
        force=args.get("force", False),
    )
    return Reply(stepmode.shown(document, args.get("verbose", False)))


def _exec(args: dict[str, Any]) -> Reply:
    from clusterbisect import stepexec, stepmode

    bisection = stepmode.open_session(args.get("state_dir"))
    document = stepexec.exec_probe(bisection, args.get("probe"), args.get("command"))
    return Reply(stepmode.shown(document, args.get("verbose", False)))


def _status(args: dict[str, Any]) -> Reply:
    from clusterbisect import stepmode

    document = stepmode.status(stepmode.open_session(args.get("state_dir")))
    return Reply(stepmode.shown(document, args.get("verbose", False)))


def _result(args: dict[str, Any]) -> Reply:
    from clusterbisect import report, stepmode

    bisection = stepmode.open_session(args.get("state_dir"))
    document = stepmode.result(bisection)
    full = str(bisection.session.result_path)
    fmt = args.get("format", "json")
    if fmt == "json" or document.get("status") == "in_progress":
        return Reply(document, full=full)
    render = report.render_markdown if fmt == "markdown" else report.render_text
    return Reply(
        {"status": document["status"], "format": fmt, "report": render(document)}, full=full
    )


def _log(args: dict[str, Any]) -> Reply:
    from clusterbisect import stepmode

    session = stepmode.open_state(args.get("state_dir"))
    text = stepmode.log_text(session)
    path = session.write_bisect_log(text)
    return Reply(
        {"state_dir": str(session.state_dir), "log": text, "log_file": str(path)}, full=str(path)
    )


def _replay(args: dict[str, Any]) -> Reply:
    from clusterbisect import steplog, stepmode

    if ("log_file" in args) == ("log_text" in args):
        raise InputError("give exactly one of log_file and log_text", field="log_file")
    if "log_file" in args:
        source = args["log_file"]
        text = steplog.read_log_file(source)
    else:
        source, text = "log_text", args["log_text"]
    document = stepmode.replay(text, source, _state_dir(args))
    return Reply(stepmode.shown(document, args.get("verbose", False)))


def _reset(args: dict[str, Any]) -> Reply:
    from clusterbisect import stepmode

    return Reply(stepmode.reset(args.get("state_dir")))


def _finished(result: dict[str, Any]) -> Reply:
    code = EXIT_OK if result.get("status") in ("found", "dry_run") else EXIT_NO_CULPRIT
    return Reply(result, exit_code=code, full=str(Path(result["state_dir"]) / RESULT_FILE))


def _run(args: dict[str, Any]) -> Reply:
    from clusterbisect import workflow

    backend = args.get("backend", "local")
    needs_command = backends.get(backend).capabilities.needs_command
    if needs_command and not args.get("command") and not args.get("dry_run"):
        raise InputError(
            f"the {backend} backend needs `command`, the probe workload argv", field="command"
        )
    session_config_, state_dir = session_config(args)
    with workflow.new_session(session_config_, state_dir) as bisection:
        if session_config_.dry_run:
            return _finished(workflow.dry_run(bisection))
        return _finished(workflow.run_session(bisection, None))


def _resume(args: dict[str, Any]) -> Reply:
    from clusterbisect import stepmode, workflow

    bisection = stepmode.open_session(args.get("state_dir"))
    budget = options.from_arguments(config.LimitOptions, args)
    return _finished(workflow.resume_session(bisection, None, None, budget))


def _triage(args: dict[str, Any]) -> Reply:
    from clusterbisect.triage import TriageRequest, triage

    kube, ray = bool(args.get("kubernetes")), bool((args.get("ray") or {}).get("address"))
    read = partial(options.from_arguments, arguments=args)
    request = TriageRequest.from_options(args.get("sources") or [], read, kube, ray)
    document = triage(request).to_dict()
    code = EXIT_OK if document["status"] == "suspects_found" else EXIT_NO_CULPRIT
    return Reply(document, exit_code=code, full=document["files"].get("result"))


def _cleanup(args: dict[str, Any]) -> Reply:
    from clusterbisect import stepmode, workflow

    state_dir = None
    if args.get("state_dir"):
        state_dir = stepmode.open_state(args["state_dir"]).state_dir
    elif not args.get("session_id") and not args.get("all"):
        raise InputError(
            "name a session (state_dir or session_id), or set all=true to delete every "
            "clusterbisect probe in the namespace",
            field="all",
        )
    chosen = workflow.cleanup_backend(args.get("backend"), state_dir)
    assert chosen.cleanup_options is not None
    given = options.from_arguments(chosen.cleanup_options, args, flat=True)
    return Reply(workflow.cleanup(chosen.name, args.get("session_id"), given, state_dir))


# --- the tools -----------------------------------------------------------------------------

_OPTIONAL_STATE = obj({"state_dir": STATE_DIR})
VERBOSE = {
    "verbose": {
        "type": "boolean",
        "description": "The full document: every change with its values, the rendered "
        "Job or submission inline, each pending probe's keys, the untestable list.",
    }
}

TOOLS: list[Tool] = [
    Tool(
        "diff",
        "Diff two job specs",
        "List the settings that differ between a working (good) and a failing (bad) job "
        "spec: each change has a stable key (e.g. containers[trainer].env.NCCL_DEBUG), "
        "the kind of change (modified, added, removed) and both values. Secret values are "
        "redacted. Launches nothing.",
        obj({**SPEC_PAIR, **options.schema_properties(config.ScopeOptions)}, ("good", "bad")),
        READ_ONLY,
        _diff,
    ),
    Tool(
        "start",
        "Start a step-by-step bisection",
        "Create a bisection session over the changes between good and bad, make it the "
        "current one, and return the first probe to run (as `next` does). You run each "
        "probe yourself and report it with `record`. Writes only the state directory; "
        "launches nothing.",
        {**START_INPUT, "properties": {**START_INPUT["properties"], **VERBOSE}},
        WRITES_STATE,
        _start,
    ),
    Tool(
        "next",
        "Show the next probe",
        "The next probe of a step-by-step session: the changes to apply to the good spec, "
        "and what to run (for the local backend the environment to set, the variables to "
        "unset and the argv; for Kubernetes the Job manifest; for Ray the job). Secret "
        "values are never shown: `private_file` (mode 0600; do not read it) holds them, "
        "`use` says how to run the probe with it, and `exec` (the `exec` tool) runs a "
        "local probe with them and records its outcome. `pending` lists every probe the "
        "search can use now (they may run in parallel). When the search is complete, "
        "`done` is true and `result` holds the verdict. Launches nothing.",
        obj(
            {
                "state_dir": STATE_DIR,
                "probe": text("Show this pending probe (an id from `pending`), not the first."),
                **VERBOSE,
            }
        ),
        READ_ONLY,
        _next,
    ),
    Tool(
        "record",
        "Record a probe's outcome",
        "Record the outcome of the next probe (or of `probe`, an id from `pending`): "
        "either `outcome` (pass: no failure; fail: the failure under investigation; "
        "unresolved: it could not run, or failed differently), or what you observed "
        "(`exit_code`, `timed_out`, `reason`, with the log) for the session's failure "
        "signature to classify. The log (a file or text) is kept as evidence. Returns "
        "the recorded entry and the next probe (compact; verbose for everything). An "
        "outcome that contradicts what you observed (pass with exit code 1) is refused "
        "unless force. Writes only the state directory.",
        obj(
            {
                "state_dir": STATE_DIR,
                "probe": text("The pending probe this outcome belongs to (default: the first)."),
                "outcome": {
                    "type": "string",
                    "enum": ["pass", "fail", "unresolved", "good", "bad", "skip"],
                    "description": "good/bad/skip are git-bisect aliases of pass/fail/unresolved.",
                },
                "exit_code": {
                    "type": ["integer", "null"],
                    "description": "The workload's exit code.",
                },
                "timed_out": {"type": "boolean"},
                "reason": text("A termination reason, e.g. OOMKilled."),
                "infra_error": text("The probe never ran properly (image pull, scheduling)."),
                "duration_s": {"type": "number", "minimum": 0},
                "log_file": text("A file holding the probe's output, copied as evidence."),
                "log_text": {
                    "type": "string",
                    "maxLength": 4_000_000,
                    "description": "The probe's output as text (instead of log_file).",
                },
                "force": {
                    "type": "boolean",
                    "description": "Keep `outcome` even when what you observed "
                    "contradicts it (refused otherwise).",
                },
                **VERBOSE,
            }
        ),
        WRITES_STATE,
        _record,
    ),
    Tool(
        "exec",
        "Run a probe here and record it",
        "Run a pending probe of a step-by-step session (default: the first) as a process "
        "on this machine with its real environment, secrets included but never shown, "
        "then record what the session's failure signature makes of its exit code and "
        "output (kept as the probe's log). `command` is the argv to run (default: the "
        "session's workload). Returns the recorded entry and the next probe. LAUNCHES A "
        "PROCESS.",
        obj(
            {
                "state_dir": STATE_DIR,
                "probe": text("The pending probe to run (default: the first)."),
                "command": {
                    **strings("The argv to run (default: the session's workload)."),
                    "minItems": 1,
                },
                **VERBOSE,
            }
        ),
        LAUNCHES,
        _exec,
    ),
    Tool(
        "status",
        "Show a session's status",
        "Where a session stands: probes done, pending probes, candidates left, estimated "
        "probes to go; the result when the search is complete. Launches nothing.",
        obj({"state_dir": STATE_DIR, **VERBOSE}),
        READ_ONLY,
        _status,
    ),
    Tool(
        "result",
        "Get a session's result",
        "The result of a session: status (found, no_differences, not_reproducible, "
        "baseline_failed, inconclusive; in_progress if not finished), the culprits with "
        "good and bad values and the probe that proved each, probe_count and rounds. "
        "format=markdown or text returns the rendered report instead. Launches nothing.",
        obj(
            {
                "state_dir": STATE_DIR,
                "format": {
                    "type": "string",
                    "enum": ["json", "markdown", "text"],
                    "default": "json",
                },
            }
        ),
        READ_ONLY,
        _result,
    ),
    Tool(
        "log",
        "Show a session's log",
        "The session's journal as a replayable log, like `git bisect log`: a `start` line "
        "and one `mark` line per probe. Edit a wrong mark and pass the text to `replay`. "
        "Launches nothing.",
        _OPTIONAL_STATE,
        READ_ONLY,
        _log,
    ),
    Tool(
        "replay",
        "Replay a log into a new session",
        "Start a new session from a `log` output and re-apply its marks in order, like "
        "`git bisect replay`; it becomes the current session. Launches nothing.",
        obj(
            {
                "log_file": text("A file holding a `log` output."),
                "log_text": {"type": "string", "minLength": 1, "description": "A `log` output."},
                "state_dir": text("Where the new session lives."),
                **VERBOSE,
            }
        ),
        WRITES_STATE,
        _replay,
    ),
    Tool(
        "reset",
        "End a step-by-step session",
        "End the session, like `git bisect reset`: it is no longer the current one. Its "
        "state directory (journal, logs, result) is kept. Launches nothing.",
        _OPTIONAL_STATE,
        WRITES_STATE,
        _reset,
    ),
    Tool(
        "run",
        "Run a whole bisection",
        "Diff good and bad, then launch probe jobs on the backend (local subprocesses, Ray "
        "jobs or Kubernetes Jobs), baselines first, until the culprit is isolated and "
        "confirmed. Returns the result (status, culprits, probe_count, rounds, state_dir). "
        "With dry_run it only renders the probes. LAUNCHES JOBS.",
        RUN_INPUT,
        LAUNCHES,
        _run,
    ),
    Tool(
        "resume",
        "Finish a session automatically",
        "Continue a session (interrupted `run`, one its budget stopped, or one driven "
        "by hand with start/record) by launching its remaining probes on its backend, "
        "without re-running finished ones. max_probes/max_time give it a new budget "
        "(max_probes counts every probe of the session). Returns the result. LAUNCHES JOBS.",
        obj(
            {
                "state_dir": STATE_DIR,
                **options.schema_properties(config.LimitOptions, only=config.BUDGET),
            }
        ),
        LAUNCHES,
        _resume,
    ),
    Tool(
        "triage",
        "Triage a fleet of jobs",
        "Many jobs, some failed: cluster the failures by signature, rank every setting value "
        "by how it goes with the failure (Fisher's exact test, bundles, interacting pairs) "
        "and choose the pair to bisect, from `sources`, a Kubernetes or a Ray cluster. With "
        "`out`, writes the pair (good.yaml, bad.yaml) and triage.json there for `start` or "
        "`run` (good, bad, priors). Secrets are redacted. Launches nothing.",
        obj(
            {
                "sources": strings(
                    "Exported files or folders: kubectl get jobs,pods -o json|yaml (Kubeflow "
                    "jobs, RayJobs too), ray list jobs --detail --format json."
                ),
                **options.schema_properties(
                    config.TriageSourceOptions,
                    config.TriageOptions,
                    config.ScopeOptions,
                    config.KubeConnection,
                    config.RayConnection,
                ),
            }
        ),
        READ_ONLY,
        _triage,
    ),
    Tool(
        "cleanup",
        "Delete leftover probe jobs",
        "Stop and delete the probes clusterbisect left behind: Kubernetes Jobs, pods and "
        "ConfigMaps found by their labels, or Ray jobs found by their metadata (and a "
        "local Ray a killed run left, with state_dir); those of one session (state_dir "
        "or session_id), or every one with all=true. DESTRUCTIVE.",
        obj(
            {
                "state_dir": text("The session whose probes to delete."),
                "session_id": text("The session id (from a result or the labels)."),
                "all": {"type": "boolean", "description": "Every clusterbisect probe."},
                "backend": {
                    "type": "string",
                    "enum": CLEANABLE,
                    "description": "Whose leftovers to delete (default: the session's, "
                    f"else {backends.CLEANUP_DEFAULT}).",
                },
                **options.schema_properties(*CLEANUP_OPTIONS, flat=True),
            }
        ),
        DESTRUCTIVE,
        _cleanup,
    ),
]

_BY_NAME = {tool.name: tool for tool in TOOLS}


def get_tool(name: str) -> Tool | None:
    return _BY_NAME.get(name)


def available(read_only: bool = False) -> list[Tool]:
    """The tools to offer; with ``read_only``, only those that launch nothing."""
    return [t for t in TOOLS if t.launches_nothing or not read_only]
