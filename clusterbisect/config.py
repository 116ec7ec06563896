"""The options of the tool, declared once.

Each group of options is a dataclass. The metadata of its fields (:func:`option`)
generates both the click options of the commands (:func:`click_options`) and the JSON
Schema properties of the agent tools (:func:`schema_properties`), and turns what
either side received back into the typed dataclass (:func:`from_params`,
:func:`from_arguments`). So ``run`` on the command line, the ``run`` tool of ``call``
and MCP accept the same options, with the same ranges.

The groups:

- :class:`SessionOptions`: the backend and the state directory of a new session;
- :class:`ScopeOptions`: which changes are searched (``--ignore``, ``--container``);
- :class:`SignatureOptions`: what the failure looks like;
- :class:`LimitOptions`: per-probe timeout and the whole run's budget;
- :class:`SearchOptions`: the search strategy and its parallelism;
- :class:`DryRunOptions`: render the probes without launching them (``run`` only);
- one per backend: :class:`LocalOptions`, :class:`RayOptions`,
  :class:`KubernetesOptions` (its connection part, :class:`KubeConnection`, is what
  ``cleanup`` takes). The backend registry (:mod:`clusterbisect.backends`) names them.

:class:`SessionConfig` is a session's whole configuration, as stored in its state
directory: the inputs, the workload, and one instance of each group.

To add an option, add a field with :func:`option` metadata to its group: every command
and tool that takes the group gets it. This module imports neither a backend nor the
search: the CLI imports it at start-up.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from clusterbisect.errors import InputError
from clusterbisect.outcome import FailureSignature

G = TypeVar("G")

# --- option metadata ----------------------------------------------------------------

_META = "clusterbisect.option"


@dataclass(frozen=True)
class Option:
    """How one field shows on the command line and in the tools' JSON Schemas."""

    help: str
    flags: tuple[str, ...] = ()  # CLI spellings; default ``--field-name``
    metavar: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = None  # the value must be above this
    choices: tuple[str, ...] | Callable[[], tuple[str, ...]] = ()
    flag_value: str | None = None  # a choice option that may be given bare (--dry-run)
    directory: bool = False  # the CLI checks the path is not a file
    pattern: str | None = None  # the schema's pattern (the dataclass checks it itself)
    regex: bool = False  # the value is a regular expression (schema format "regex")
    envvar: str | None = None  # the CLI reads this variable when the option is absent
    shell_words: bool = False  # a list given as one shell-quoted string on the CLI
    show_default: bool = False
    cli: bool = True  # on the command line
    tool: bool = True  # in the tools' schemas

    def choice_list(self) -> tuple[str, ...]:
        return self.choices() if callable(self.choices) else self.choices


def option(default: Any = None, *, factory: Callable[[], Any] | None = None, **meta: Any) -> Any:
    """A dataclass field that is a user option; ``meta`` are :class:`Option` fields."""
    metadata = {_META: Option(**meta)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class OptionField:
    """One option of a group, resolved: its dataclass field, type and metadata."""

    group: type
    name: str
    kind: type  # bool, int, float, str or list (of str)
    optional: bool
    default: Any
    meta: Option

    @property
    def param(self) -> str:
        """The click parameter name: unique across the groups of one command."""
        return getattr(self.group, "PARAM_PREFIX", "") + self.name

    @property
    def flags(self) -> tuple[str, ...]:
        return self.meta.flags or ("--" + self.param.replace("_", "-"),)


def fields_of(group: type) -> list[OptionField]:
    """The option fields of a group (fields without :func:`option` metadata are not
    options: a backend's tuning, say)."""
    hints = typing.get_type_hints(group)
    found = []
    for item in dataclasses.fields(group):
        meta = item.metadata.get(_META)
        if meta is None:
            continue
        kind, optional = _kind(hints[item.name])
        if item.default is not dataclasses.MISSING:
            default = item.default
        elif item.default_factory is not dataclasses.MISSING:
            default = item.default_factory()
        else:
            default = None
        found.append(OptionField(group, item.name, kind, optional, default, meta))
    return found


def _kind(hint: Any) -> tuple[type, bool]:
    """``(base type, optional)`` of a field's annotation."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        base, _ = _kind(inner[0])
        return base, True
    if origin in (list, tuple):
        return list, False
    return hint, False


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
        help="Leave out settings whose key matches GLOB (fnmatch; repeatable).",
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

    def failure_signature(self) -> FailureSignature:
        """The classifier these options describe."""
        return FailureSignature(
            self.fail_on, self.fail_exit_code, self.fail_reason, self.hang_is_failure
        )

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
    max_probes: int | None = option(metavar="N", minimum=1, help="Stop after this many probes.")
    max_time: float | None = option(
        metavar="SECONDS", exclusive_minimum=0, help="Stop after this many seconds."
    )


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


@dataclass
class LocalOptions(BackendOptions):
    """The local backend: probes are processes on this machine."""

    clean_env: bool = option(
        False, help="Local: start probes from a minimal environment, not the caller's."
    )


@dataclass
class RayOptions(BackendOptions):
    """The Ray backend: where the jobs go and what each asks for (flags override the spec)."""

    SCHEMA_GROUP: ClassVar[str | None] = "ray"
    PARAM_PREFIX: ClassVar[str] = "ray_"

    address: str | None = option(
        flags=("--ray-address",),
        metavar="URL",
        envvar="RAY_ADDRESS",
        help="Ray: an existing cluster's Jobs API (default: a local Ray for the session).",
    )
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
    probe: str | None = option(
        flags=("--probe",),
        metavar="NAME",
        pattern=PROBE_NAME,
        help="Kubernetes: run probes/NAME.py from a ConfigMap.",
    )

    def __post_init__(self) -> None:
        if self.probe is not None and not re.match(PROBE_NAME, self.probe):
            raise InputError(f"not a probe name: {self.probe!r}", field="--probe")


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
    backend_options: BackendOptions = field(default_factory=LocalOptions)
    dry_run: str | None = None

    GROUPS: ClassVar[dict[str, type]] = {
        "scope": ScopeOptions,
        "signature": SignatureOptions,
        "limits": LimitOptions,
        "search": SearchOptions,
    }

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
        config.validate()
        return config, where.state_dir

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in ``session.json`` (and in a ``log``'s start line)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SessionConfig:
        """Read :meth:`to_dict`'s form, or the flat form of sessions made before the
        option groups. Raises ``TypeError``/``KeyError``/``ValueError`` on anything else."""
        data = dict(data)
        if "scope" not in data:
            data = _from_flat(data)
        from clusterbisect import backends

        backend = str(data.get("backend", "local"))
        options_class = backends.get(backend).options
        for name, group in cls.GROUPS.items():
            data[name] = group(**(data.get(name) or {}))
        data["backend_options"] = options_class(**(data.get("backend_options") or {}))
        return cls(**data)


def _from_flat(data: dict[str, Any]) -> dict[str, Any]:
    """The grouped form of a config written before the groups (a flat SessionConfig)."""
    strategy = dict(data.pop("strategy_options", None) or {})
    backend_options = dict(data.pop("backend_options", None) or {})
    dry_run = backend_options.pop("dry_run", None)
    if data.pop("clean_env", False) and data.get("backend", "local") == "local":
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


# --- the command line -------------------------------------------------------------------


def click_options(*groups: type) -> Callable[[Any], Any]:
    """A decorator adding the CLI options of ``groups`` to a click command."""
    import click

    def decorate(func: Any) -> Any:
        for group in reversed(groups):
            for item in reversed(fields_of(group)):
                if item.meta.cli:
                    func = click.option(*item.flags, item.param, **_click_settings(item))(func)
        return func

    return decorate


def _click_settings(item: OptionField) -> dict[str, Any]:
    import click

    meta = item.meta
    settings: dict[str, Any] = {"help": meta.help}
    if meta.metavar:
        settings["metavar"] = meta.metavar
    if meta.envvar:
        settings["envvar"] = meta.envvar
    if meta.show_default:
        settings["show_default"] = True
    if item.kind is bool:
        settings.update(is_flag=True, default=bool(item.default))
        return settings
    if item.kind is list and not meta.shell_words:
        settings["multiple"] = True
        return settings
    if meta.choice_list():
        settings["type"] = click.Choice(list(meta.choice_list()))
        if meta.flag_value is not None:
            settings.update(is_flag=False, flag_value=meta.flag_value)
    elif item.kind in (int, float):
        settings["type"] = _click_number(item)
    elif meta.directory:
        settings["type"] = click.Path(file_okay=False)
    if item.default is not None and item.kind is not list:
        settings["default"] = item.default
    return settings


def _click_number(item: OptionField) -> Any:
    import click

    meta = item.meta
    low = meta.exclusive_minimum if meta.exclusive_minimum is not None else meta.minimum
    if low is None and meta.maximum is None:
        return item.kind
    opened = meta.exclusive_minimum is not None
    if item.kind is int:
        as_int = [None if v is None else int(v) for v in (low, meta.maximum)]
        return click.IntRange(as_int[0], as_int[1], min_open=opened)
    return click.FloatRange(low, meta.maximum, min_open=opened)


def from_params(group: type[G], params: Mapping[str, Any]) -> G:
    """The typed group from click's keyword arguments (only the group's own keys)."""
    values: dict[str, Any] = {}
    for item in fields_of(group):
        if item.param not in params:
            continue
        value = params[item.param]
        if item.kind is list:
            if isinstance(value, str):
                value = shlex.split(value)
            elif value is not None:
                value = list(value)
        if value is None and not item.optional:
            continue
        values[item.name] = value
    return group(**values)


# --- the tools' JSON Schemas --------------------------------------------------------------


def schema_properties(*groups: type, flat: bool = False) -> dict[str, Any]:
    """The JSON Schema properties of ``groups``; a backend's options are one object
    property named after it (its ``SCHEMA_GROUP``), or top level without one or with
    ``flat``."""
    properties: dict[str, Any] = {}
    for group in groups:
        fields = {i.name: _schema(i) for i in fields_of(group) if i.meta.tool}
        name = None if flat else getattr(group, "SCHEMA_GROUP", None)
        if name:
            properties[name] = {
                "type": "object",
                "properties": fields,
                "additionalProperties": False,
                "description": (group.__doc__ or "").strip().splitlines()[0],
            }
        else:
            properties.update(fields)
    return properties


def _schema(item: OptionField) -> dict[str, Any]:
    meta = item.meta
    schema: dict[str, Any]
    if item.kind is list:
        schema = {"type": "array", "items": {"type": "string", "minLength": 1}}
    elif item.kind is bool:
        schema = {"type": "boolean"}
    elif item.kind is int:
        schema = {"type": "integer"}
    elif item.kind is float:
        schema = {"type": "number"}
    else:
        schema = {"type": "string", "minLength": 1}
    if meta.choice_list():
        schema = {"type": "string", "enum": list(meta.choice_list())}
    bounds = {
        "minimum": meta.minimum,
        "maximum": meta.maximum,
        "exclusiveMinimum": meta.exclusive_minimum,
        "pattern": meta.pattern,
        "format": "regex" if meta.regex else None,
    }
    schema.update({k: v for k, v in bounds.items() if v is not None})
    if item.default not in (None, False, []):
        schema["default"] = item.default
    schema["description"] = meta.help
    return schema


def from_arguments(group: type[G], arguments: Mapping[str, Any], *, flat: bool = False) -> G:
    """The typed group from a tool's (schema-validated) arguments (``flat``: a backend's
    options at the top level, as :func:`schema_properties` put them)."""
    name = None if flat else getattr(group, "SCHEMA_GROUP", None)
    source = arguments.get(name) or {} if name else arguments
    names = {i.name for i in fields_of(group) if i.meta.tool}
    return group(**{k: v for k, v in source.items() if k in names})


def narrow(options: Any, group: type[Any]) -> Any:
    """The ``group`` part of ``options`` (a subclass instance, or one with more fields):
    the connection part of a backend's options, say."""
    names = {f.name for f in dataclasses.fields(group)}
    return group(**{k: v for k, v in dataclasses.asdict(options).items() if k in names})
