"""The options of the tool, declared once.

Each group of options is a dataclass. The metadata of its fields (``options.option``)
generates both the click options of the commands and the JSON Schema properties of
the agent tools, and turns what either side received back into the typed dataclass
(``options.py``). So ``run`` on the command line, the ``run`` tool of ``call`` and MCP
accept the same options, with the same ranges.

The groups:

- :class:`SessionOptions`: the backend and the state directory of a new session;
- :class:`ScopeOptions`: which changes are searched (``--ignore``, ``--container``);
- :class:`SignatureOptions`: what the failure looks like;
- :class:`LimitOptions`: per-probe timeout and the whole run's budget;
- :class:`SearchOptions`: the search strategy and its parallelism;
- :class:`DryRunOptions`: render the probes without launching them (``run`` only);
- one per backend: :class:`LocalOptions`, :class:`RayOptions`,
  :class:`KubernetesOptions` (their connection parts, :class:`RayConnection` and
  :class:`KubeConnection`, are what ``cleanup`` and ``triage`` take). The backend
  registry (:mod:`clusterbisect.backends`) names them;
- ``triage``'s: :class:`TriageSourceOptions` (which jobs of a cluster, how old, their
  logs) and :class:`TriageOptions` (the failure to explain, the report, the pair).

:class:`SessionConfig` is a session's whole configuration, as stored in its state
directory: the inputs, the workload, and one instance of each group.

To add an option, add a field with ``option(...)`` metadata to its group: every command
and tool that takes the group gets it. This module imports neither a backend nor the
search: the CLI imports it at start-up.

It is over 600 lines by design: every option of every command (the session's, the
backends', triage's) is declared here and nowhere else, so that one file shows them all.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from clusterbisect.durations import DURATION, parse_duration
from clusterbisect.errors import InputError
from clusterbisect.options import option
from clusterbisect.outcome import FailureSignature

# --- the groups -------------------------------------------------------------------------


def _backend_names() -> tuple[str, ...]:
    from clusterbisect import backends

    return tuple(backends.BACKENDS)


@dataclass
class SessionOptions:
    """Where a new session's probes run and where it keeps its state."""

    backend: str = option(
        "local",
        choices=_backend_names,
        show_default=True,
        help="Where probes run. local: a subprocess on this machine (only environment "
        "variables are testable); ray: Ray jobs; kubernetes: Jobs.",
    )
    state_dir: str | None = option(
        directory=True,
        help="Where the new session lives (default: a new .clusterbisect/ID).",
    )


@dataclass
class ScopeOptions:
    """Which changes between the good and the bad spec are searched."""

    ignore: list[str] = option(
        factory=list,
        metavar="GLOB",
        help="Leave out settings whose key matches GLOB: `*` and `?` are wildcards, "
        "brackets are literal as in the keys, e.g. 'containers[trainer].env.*' (repeatable).",
    )
    container: str | None = option(
        metavar="NAME", help="Only this container's settings (and the pod-level ones)."
    )


@dataclass
class SignatureOptions:
    """What counts as *the* failure (see ``outcome.FailureSignature``)."""

    fail_on: str | None = option(
        metavar="REGEX",
        regex=True,
        help="A regular expression: a probe fails only if its output matches.",
    )
    fail_exit_code: int | None = option(
        metavar="CODE", help="A probe fails only with this exit code."
    )
    fail_reason: str | None = option(
        metavar="REASON",
        help="A probe fails only with this termination reason, e.g. OOMKilled.",
    )
    hang_is_failure: bool = option(
        False, help="A probe that times out shows the failure (needs --timeout)."
    )
    fail_on_exit: str | None = option(
        choices=("any", "nonzero"),
        help="With --fail-on: a match is the failure with any exit code (any), or only "
        "with a non-zero exit (nonzero). Default: any, until the good baseline exits 0 "
        "with the text in its output; then nonzero, with a note.",
    )
    # Why fail_on_exit was chosen for the user (a note for the report); not an option.
    decided: str | None = None

    def failure_signature(self) -> FailureSignature:
        """The classifier these options describe."""
        return FailureSignature(
            self.fail_on,
            self.fail_exit_code,
            self.fail_reason,
            self.hang_is_failure,
            fail_on_exit=self.fail_on_exit or "any",
        )

    def decide_exit_rule(self, probe_id: str, exit_code: int | None, output: str) -> bool:
        """The good baseline ran: if it exited 0 with output the ``fail_on`` regex
        matches, and the user did not choose ``fail_on_exit``, a probe fails only with
        a non-zero exit from now on (the text alone is in passing runs too). True when
        this changed the signature."""
        if self.fail_on_exit is not None or not self.fail_on or exit_code != 0:
            return False
        if not self.failure_signature().text_matches(output):
            return False
        self.fail_on_exit = "nonzero"
        self.decided = (
            f"the good baseline ({probe_id}) exited 0 with output matching /{self.fail_on}/, "
            "so a probe fails only with a non-zero exit and that text "
            "(--fail-on-exit any counts the text alone)"
        )
        return True

    def validate(self) -> None:
        if self.fail_on:
            try:
                re.compile(self.fail_on)
            except re.error as err:
                raise InputError(
                    f"not a valid regular expression: {err}", field="fail_on"
                ) from None


@dataclass
class LimitOptions:
    """How long a probe may run, and how much the whole run may spend."""

    timeout: float | None = option(
        metavar="SECONDS", exclusive_minimum=0, help="Per-probe timeout in seconds."
    )
    max_probes: int | None = option(
        metavar="N",
        minimum=1,
        help="Stop after this many probes (all of the session's, those run before a "
        "resume included).",
    )
    max_time: float | None = option(
        metavar="SECONDS",
        exclusive_minimum=0,
        help="Stop after this many seconds (of this run or resume).",
    )


# The limits a `resume` may change: the budget of a run that was stopped by it.
BUDGET = ("max_probes", "max_time")


@dataclass
class SearchOptions:
    """The search strategy: deterministic bisection unless the evidence says flaky."""

    parallel: int = option(
        1,
        metavar="K",
        minimum=1,
        maximum=256,
        show_default=True,
        help="Probes run at the same time (a round).",
    )
    flaky: bool = option(False, help="Use the flake-aware strategy from the start.")
    confidence: float = option(
        0.99,
        metavar="C",
        minimum=0.5,
        maximum=0.99999,
        show_default=True,
        help="Flaky: stop when the best candidate is this likely.",
    )
    baseline_runs: int = option(
        1,
        metavar="N",
        minimum=1,
        maximum=100,
        show_default=True,
        help="Run each baseline N times; if they disagree, switch to the flaky strategy.",
    )
    repro_rate: float | None = option(
        metavar="P",
        minimum=0.01,
        maximum=1.0,
        help="Flaky: how often the bad spec fails, if known (else learned).",
    )
    background_rate: float | None = option(
        metavar="Q",
        minimum=0.0,
        maximum=0.99,
        help="Flaky: how often the good spec fails, if known (else learned).",
    )
    priors: str | None = option(
        metavar="FILE",
        help="A triage result (clusterbisect triage --json, or its triage.json): try the "
        "changes it ranks likeliest first.",
    )

    def validate(self) -> None:
        p, q = self.repro_rate, self.background_rate
        if p is not None and q is not None and q >= p:
            raise InputError(
                f"must be below the reproduction rate {p:g}, got {q:g}", field="background_rate"
            )

    def strategy_name(self) -> str:
        """``flaky`` from the start, or ``auto``: bisection that switches when the
        evidence contradicts itself."""
        return "flaky" if self.flaky else "auto"


@dataclass
class DryRunOptions:
    """Render the probes without launching anything."""

    dry_run: str | None = option(
        choices=("client", "server"),
        flag_value="client",
        help="Render the probes without launching them (server: check them with the "
        "Kubernetes API).",
    )


# --- backend options --------------------------------------------------------------------


@dataclass
class BackendOptions:
    """Base of a backend's user options. ``SCHEMA_GROUP`` is the property that holds
    them in the tools' schemas (None: at the top level); ``PARAM_PREFIX`` keeps their
    click parameter names apart from the other groups'."""

    SCHEMA_GROUP: ClassVar[str | None] = None
    PARAM_PREFIX: ClassVar[str] = ""

    def pin(self) -> None:
        """Fix, when a session is created, what depends on where the command runs
        (a relative path, the current directory), so a resume elsewhere means the same."""


@dataclass
class LocalOptions(BackendOptions):
    """The local backend: probes are processes on this machine."""

    clean_env: bool = option(
        False, help="Local: start probes from a minimal environment, not the caller's."
    )
    venv_python: str | None = option(
        metavar="PYTHON",
        help="Local, pip freeze specs: the interpreter each probe's virtual environment "
        "is made with (default: the workload's python, else python3 on PATH).",
    )
    pip_installer: str | None = option(
        choices=("uv", "pip"),
        help="Local, pip freeze specs: install each probe's pins with uv (the default "
        "when installed: clusterbisect[pip]) or with pip.",
    )


@dataclass
class RayConnection(BackendOptions):
    """How to reach a Ray cluster's Jobs API (what ``cleanup --backend ray`` and
    ``triage`` need)."""

    SCHEMA_GROUP: ClassVar[str | None] = "ray"
    PARAM_PREFIX: ClassVar[str] = "ray_"

    address: str | None = option(
        flags=("--ray-address",),
        metavar="URL",
        envvar="RAY_ADDRESS",
        help="Ray: an existing cluster's Jobs API: where probes run (default: a local "
        "Ray for the session); triage reads its jobs.",
    )


@dataclass
class RayOptions(RayConnection):
    """The Ray backend: where the jobs go, what each asks for (flags override the spec),
    the directory shipped with them and the local Ray's GPUs."""

    entrypoint_num_cpus: float | None = option(
        flags=("--entrypoint-num-cpus",), metavar="N", minimum=0, help="Ray: CPUs per probe job."
    )
    entrypoint_num_gpus: float | None = option(
        flags=("--entrypoint-num-gpus",), metavar="N", minimum=0, help="Ray: GPUs per probe job."
    )
    entrypoint_memory: int | None = option(
        flags=("--entrypoint-memory",),
        metavar="BYTES",
        minimum=0,
        help="Ray: memory (bytes) per probe job.",
    )
    working_dir: str | None = option(
        flags=("--working-dir",),
        metavar="DIR",
        directory=True,
        help="Ray: the directory shipped as each job's working_dir when the spec sets "
        "none (default: the current directory).",
    )
    num_gpus: int | None = option(
        flags=("--ray-num-gpus",),
        metavar="N",
        minimum=0,
        help="Ray: GPUs of the local Ray started for the session (default: the machine's, "
        "as Ray detects them).",
    )

    def pin(self) -> None:
        """The working_dir as an absolute path: the current directory by default."""
        import os

        path = os.path.abspath(self.working_dir or os.getcwd())
        if not os.path.isdir(path):
            raise InputError(f"not a directory: {path}", field="--working-dir")
        self.working_dir = path


PROBE_NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$"


@dataclass
class KubeConnection(BackendOptions):
    """How to reach a Kubernetes cluster, as kubectl does."""

    SCHEMA_GROUP: ClassVar[str | None] = "kubernetes"
    PARAM_PREFIX: ClassVar[str] = "kube_"

    kubeconfig: str | None = option(
        flags=("--kubeconfig",), metavar="FILE", help="Kubernetes: path of a kubeconfig file."
    )
    context: str | None = option(
        flags=("--context",), metavar="NAME", help="Kubernetes: kubeconfig context."
    )
    namespace: str | None = option(
        flags=("-n", "--namespace"),
        metavar="NS",
        help="Kubernetes: namespace (default: the context's).",
    )


@dataclass
class KubernetesOptions(KubeConnection):
    """The Kubernetes backend: the connection, and what to change in every probe Job."""

    command: list[str] | None = option(
        flags=("--command",),
        metavar="'CMD ARG...'",
        shell_words=True,
        help="Kubernetes: replace the main container's command.",
    )
    args: list[str] | None = option(
        flags=("--args",),
        metavar="'ARG...'",
        shell_words=True,
        help="Kubernetes: replace the main container's args.",
    )
    template: str | None = option(
        flags=("--template",),
        metavar="NAME",
        help="Kubernetes: the pod template probes run: a replica type, task, replicated "
        "job, worker group or leader/worker (default: the coordinator, chief, master or "
        "launcher, else the first worker).",
    )
    probe: str | None = option(
        flags=("--probe",),
        metavar="NAME",
        pattern=PROBE_NAME,
        help="Kubernetes: run probes/NAME.py from a ConfigMap.",
    )
    pip_image: str | None = option(
        flags=("--pip-image",),
        metavar="IMAGE",
        help="Kubernetes, pip freeze specs: the image probes run in (python3 with venv "
        "and pip); an init container installs each probe's pins before the command.",
    )
    allow_shared_volumes: bool = option(
        False,
        flags=("--allow-shared-volumes",),
        help="Kubernetes: mount the job's persistent volumes (PVCs, NFS, hostPath) in "
        "probes as they are, writable (default: read-only).",
    )
    scratch_volumes: bool = option(
        False,
        flags=("--scratch-volumes",),
        help="Kubernetes: give probes an empty directory in place of each persistent "
        "volume (default: mount them read-only).",
    )
    admission_labels: list[str] = option(
        factory=list,
        flags=("--admission-label",),
        metavar="KEY",
        help="Kubernetes: also copy this label of the job (a glob) onto probe Jobs "
        "(repeatable); kueue.x-k8s.io/queue-name and kueue.x-k8s.io/priority-class "
        "always are.",
    )

    def __post_init__(self) -> None:
        if self.probe is not None and not re.match(PROBE_NAME, self.probe):
            raise InputError(f"not a probe name: {self.probe!r}", field="--probe")
        if self.allow_shared_volumes and self.scratch_volumes:
            raise InputError(
                "choose one of --allow-shared-volumes and --scratch-volumes",
                field="--scratch-volumes",
            )


# --- triage -------------------------------------------------------------------------------


@dataclass
class TriageSourceOptions:
    """Which jobs triage reads: a live cluster's selection (kubectl's), their age, logs."""

    all_namespaces: bool = option(
        False, flags=("-A", "--all-namespaces"), help="Read the Jobs of every namespace."
    )
    selector: str | None = option(
        flags=("-l", "--selector"),
        metavar="SELECTOR",
        help="Only the Jobs with these labels (kubectl's label selector, e.g. team=ml).",
    )
    since: str | None = option(
        metavar="DURATION",
        pattern=DURATION,
        help="Only the jobs created in the last DURATION (90s, 30m, 2h, 1d, 1h30m).",
    )
    logs: int = option(
        0,
        metavar="N",
        minimum=0,
        maximum=10000,
        help="Read the last N log lines of each failed job (from a cluster or Ray).",
    )
    page_size: int = 500  # list calls return at most this many objects (not an option)

    def since_seconds(self) -> float | None:
        """``since`` in seconds (None: every job); ``InputError`` when it is no duration."""
        return parse_duration(self.since) if self.since else None

    def validate(self) -> None:
        self.since_seconds()
        if self.logs < 0:
            raise InputError(f"expected 0 or more lines, got {self.logs}", field="--logs")
        if self.page_size < 1:
            raise InputError(f"expected at least 1, got {self.page_size}", field="page_size")


@dataclass
class TriageOptions:
    """How triage analyses the jobs, and where it writes the pair."""

    signature: str | None = option(
        metavar="REGEX",
        regex=True,
        help="Explain the failures whose signature or text matches (default: the most "
        "common failure).",
    )
    workload_label: str | None = option(
        metavar="LABEL",
        help="The label naming a job's workload (default: app.kubernetes.io/name, app, "
        "workload, then the name's stem).",
    )
    top: int = option(20, metavar="N", minimum=1, show_default=True, help="Suspects reported.")
    out: str | None = option(
        metavar="DIR",
        directory=True,
        help="Write the pair (good.yaml, bad.yaml: real values, mode 0600) and the "
        "redacted result (triage.json) into DIR.",
    )
    # The analysis's own tuning (not options).
    min_jobs: int = 2  # a value held by fewer jobs is not tested
    interaction_top: int = 5  # the top suspects checked in pairs
    alpha: float = 0.05  # the family-wise error rate of "significant" (Bonferroni)

    def validate(self) -> None:
        if self.signature:
            try:
                re.compile(self.signature)
            except re.error as err:
                raise InputError(
                    f"invalid regular expression {self.signature!r}: {err}", field="--signature"
                ) from None
        if self.top < 1:
            raise InputError(f"expected at least 1, got {self.top}", field="--top")
        if self.min_jobs < 1:
            raise InputError(f"expected at least 1, got {self.min_jobs}", field="min_jobs")
        if not 0 < self.alpha < 1:
            raise InputError(f"expected a number between 0 and 1, got {self.alpha}", field="alpha")


S = TypeVar("S", bound=BackendOptions)


def with_tuning(options: BackendOptions | None, settings: type[S]) -> S:
    """``options`` with a backend's tuning: ``settings`` is a subclass of the backend's
    options class whose extra fields (poll intervals, grace periods...) are not user
    options. Options that already are settings are returned as they are."""
    if isinstance(options, settings):
        return options
    return settings(**(dataclasses.asdict(options) if options is not None else {}))


# --- a session's whole configuration ------------------------------------------------

# The groups `start` takes (and its tool), and `run` (which can also dry-run); both take
# every backend's options too (``backends.option_classes()``).
START_GROUPS: tuple[type, ...] = (
    SessionOptions,
    ScopeOptions,
    SignatureOptions,
    LimitOptions,
    SearchOptions,
)
RUN_GROUPS: tuple[type, ...] = (*START_GROUPS, DryRunOptions)


@dataclass
class SessionConfig:
    """Everything needed to recompute the changes and rerun the search.

    ``good``/``bad`` are the stored copies (relative to the state directory), set when
    the session is created; ``good_source``/``bad_source`` are what the user gave.
    """

    good_source: str
    bad_source: str
    good: str = ""
    bad: str = ""
    backend: str = "local"
    command: list[str] | None = None
    scope: ScopeOptions = field(default_factory=ScopeOptions)
    signature: SignatureOptions = field(default_factory=SignatureOptions)
    limits: LimitOptions = field(default_factory=LimitOptions)
    search: SearchOptions = field(default_factory=SearchOptions)
    # The backend's options (its class in the registry); default: that class's defaults.
    backend_options: BackendOptions = field(default_factory=BackendOptions)
    dry_run: str | None = None
    # The priors' weights by change key, read from ``search.priors`` when the session
    # is made (so a resume replays the same search without the file).
    prior_weights: dict[str, float] = field(default_factory=dict)

    GROUPS: ClassVar[dict[str, type]] = {
        "scope": ScopeOptions,
        "signature": SignatureOptions,
        "limits": LimitOptions,
        "search": SearchOptions,
    }

    def __post_init__(self) -> None:
        if type(self.backend_options) is BackendOptions:
            from clusterbisect import backends

            self.backend_options = backends.get(self.backend).options()

    def validate(self) -> None:
        """Checks that span groups; each group checks its own fields."""
        from clusterbisect import backends

        backends.get(self.backend)  # an unknown backend is bad input
        self.signature.validate()
        self.search.validate()
        if self.signature.hang_is_failure and not self.limits.timeout:
            raise InputError("hang_is_failure needs a timeout", field="timeout")

    @classmethod
    def from_options(
        cls,
        good: str,
        bad: str,
        command: Iterable[str] | None,
        read: Callable[[type[Any]], Any],
    ) -> tuple[SessionConfig, str | None]:
        """A new session's config, and where it should live, from the options of
        ``run`` or ``start``: ``read(Group)`` gives each group, typed (from click's
        parameters with :func:`from_params`, or a tool's arguments with
        :func:`from_arguments`). Validated."""
        from clusterbisect import backends

        where: SessionOptions = read(SessionOptions)
        config = cls(
            good_source=good,
            bad_source=bad,
            backend=where.backend,
            command=list(command or ()) or None,
            scope=read(ScopeOptions),
            signature=read(SignatureOptions),
            limits=read(LimitOptions),
            search=read(SearchOptions),
            backend_options=read(backends.get(where.backend).options),
            dry_run=read(DryRunOptions).dry_run,
        )
        config.backend_options.pin()
        config.validate()
        return config, where.state_dir

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in ``session.json`` (and in a ``log``'s start line)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SessionConfig:
        """Read :meth:`to_dict`'s form, or the flat form of sessions made before the
        option groups. Raises ``TypeError``/``KeyError``/``ValueError`` on anything else."""
        from clusterbisect import backends

        flat = "scope" not in data
        data = _from_flat(dict(data)) if flat else dict(data)
        options_class = backends.get(str(data.get("backend", "local"))).options
        for name, group in cls.GROUPS.items():
            data[name] = group(**(data.get(name) or {}))
        stored = dict(data.get("backend_options") or {})
        if flat:  # the flat form kept clean_env for every backend; only some have it
            known = {f.name for f in dataclasses.fields(options_class)}
            stored = {k: v for k, v in stored.items() if k in known}
        data["backend_options"] = options_class(**stored)
        config = cls(**data)
        config.check_types()
        return config

    def check_types(self) -> None:
        """Every field as declared (a stored config may have been edited by hand)."""
        from clusterbisect.options import check

        for name in ("good_source", "bad_source", "good", "bad", "backend"):
            if not isinstance(getattr(self, name), str):
                raise InputError(f"expected a string, got {getattr(self, name)!r}", field=name)
        command = self.command
        if command is not None and not (
            isinstance(command, list) and all(isinstance(w, str) for w in command)
        ):
            raise InputError(f"expected a list of strings, got {command!r}", field="command")
        for group in (self.scope, self.signature, self.limits, self.search, self.backend_options):
            check(group)


def _from_flat(data: dict[str, Any]) -> dict[str, Any]:
    """The grouped form of a config written before the groups (a flat SessionConfig)."""
    strategy = dict(data.pop("strategy_options", None) or {})
    backend_options = dict(data.pop("backend_options", None) or {})
    dry_run = backend_options.pop("dry_run", None)
    if data.pop("clean_env", False):
        backend_options["clean_env"] = True
    return {
        "good_source": data.pop("good_source"),
        "bad_source": data.pop("bad_source"),
        "good": data.pop("good", ""),
        "bad": data.pop("bad", ""),
        "backend": data.pop("backend", "local"),
        "command": data.pop("command", None),
        "scope": {"ignore": data.pop("ignore", []), "container": data.pop("container", None)},
        "signature": data.pop("signature", None) or {},
        "limits": {
            "timeout": data.pop("timeout_s", None),
            "max_probes": data.pop("max_probes", None),
            "max_time": data.pop("max_time_s", None),
        },
        "search": {
            "parallel": data.pop("parallel", 1),
            "flaky": data.pop("strategy", "auto") == "flaky",
            "confidence": strategy.get("confidence", 0.99),
            "baseline_runs": strategy.get("baseline_runs", 1),
            "repro_rate": strategy.get("p"),
            "background_rate": strategy.get("q"),
        },
        "backend_options": backend_options,
        "dry_run": dry_run if dry_run in ("client", "server") else None,
    }
