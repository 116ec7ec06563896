"""The options model: the CLI and the tools accept the same options, with the same ranges.

The click commands and the tool schemas are both generated from config.py; these tests
compare the *generated artefacts* (the real ``run``/``start`` click commands, the real
tool input schemas) with each other, so an option added by hand on one side only, or a
range that differs, fails here.
"""

from __future__ import annotations

import json
from typing import Any

import click
import pytest
from click.testing import CliRunner

from clusterbisect import backends
from clusterbisect.agent import dispatch
from clusterbisect.agent.tools import get_tool
from clusterbisect.cli import cli as cli_group
from clusterbisect.config import (
    RUN_GROUPS,
    START_GROUPS,
    KubeConnection,
    KubernetesOptions,
    LocalOptions,
    RayConnection,
    ScopeOptions,
    SessionConfig,
    TriageOptions,
    TriageSourceOptions,
)
from clusterbisect.errors import InputError
from clusterbisect.options import fields_of, from_arguments, from_params

# Parameters of the commands that are not session options: the positional arguments
# (in the schema too) and what only a terminal needs.
# Not session options: the inputs, and how the reply is shown (verbose is on both sides).
CLI_ONLY = {"good", "bad", "command", "as_json", "quiet", "verbose"}
POSITIONAL = {"good", "bad", "command", "verbose"}


def schema_leaves(schema: dict[str, Any]) -> dict[tuple[str, ...], dict[str, Any]]:
    """Every option of a tool's input schema by its path (a backend's under its name)."""
    leaves = {}
    for name, prop in schema["properties"].items():
        if prop.get("type") == "object":
            for inner, leaf in prop["properties"].items():
                leaves[(name, inner)] = leaf
        else:
            leaves[(name,)] = prop
    return leaves


def click_bounds(param: click.Parameter) -> dict[str, Any]:
    """A click parameter's type and range, in JSON Schema words."""
    kind = param.type
    if param.multiple:
        return {"type": "array"}
    if isinstance(kind, click.types.BoolParamType):
        return {"type": "boolean"}
    if isinstance(kind, click.Choice):
        return {"enum": list(kind.choices)}
    if isinstance(kind, click.IntRange | click.FloatRange):
        bounds: dict[str, Any] = {
            "type": "integer" if isinstance(kind, click.IntRange) else "number"
        }
        if kind.min is not None:
            bounds["exclusiveMinimum" if kind.min_open else "minimum"] = kind.min
        if kind.max is not None:
            bounds["maximum"] = kind.max
        return bounds
    names = {click.INT: "integer", click.FLOAT: "number"}
    return {"type": names.get(kind, "string")}


def schema_bounds(leaf: dict[str, Any], shell_words: bool) -> dict[str, Any]:
    """The same view of a schema property (a shell-quoted CLI string is an array here)."""
    if "enum" in leaf:
        return {"enum": leaf["enum"]}
    if leaf["type"] == "array" and shell_words:
        return {"type": "string"}
    keys = ("type", "minimum", "maximum", "exclusiveMinimum")
    return {k: leaf[k] for k in keys if k in leaf}


def pairs(groups: tuple[type, ...]) -> list[tuple[str, tuple[str, ...], bool]]:
    """(click parameter, schema path, shell words) of every option of ``groups``."""
    found = []
    for group in (*groups, *backends.option_classes()):
        section = getattr(group, "SCHEMA_GROUP", None)
        for item in fields_of(group):
            path = (section, item.name) if section else (item.name,)
            found.append((item.param, path, item.meta.shell_words))
    return found


@pytest.mark.parametrize(("command", "groups"), [("run", RUN_GROUPS), ("start", START_GROUPS)])
def test_the_cli_and_the_tool_take_the_same_options_with_the_same_ranges(
    command: str, groups: tuple[type, ...]
) -> None:
    params = {p.name: p for p in cli_group.commands[command].params}
    tool = get_tool(command)
    assert tool is not None
    leaves = schema_leaves(tool.input_schema)
    paired = pairs(groups)
    for param, path, shell_words in paired:
        assert param in params, f"--{param} is missing from `{command}`"
        assert path in leaves, f"{'.'.join(path)} is missing from the {command} tool"
        assert click_bounds(params[param]) == schema_bounds(leaves[path], shell_words), param
    # Nothing on one side only.
    assert set(params) - {p for p, _, _ in paired} <= CLI_ONLY
    assert {path for path in leaves if path[0] not in POSITIONAL} == {p for _, p, _ in paired}


def test_call_run_takes_the_flake_rates_the_cli_takes() -> None:
    tool = get_tool("run")
    assert tool is not None
    arguments = {"good": "g", "bad": "b", "repro_rate": 0.5, "background_rate": 0.1}
    assert dispatch.validate(tool, arguments) == arguments
    config, _ = SessionConfig.from_options(
        "g", "b", None, lambda group: from_arguments(group, arguments)
    )
    assert (config.search.repro_rate, config.search.background_rate) == (0.5, 0.1)
    with pytest.raises(dispatch.SchemaError):
        dispatch.validate(tool, {**arguments, "repro_rate": 1.5})
    with pytest.raises(InputError, match="below the reproduction rate"):
        SessionConfig.from_options(
            "g", "b", None, lambda group: from_arguments(group, {**arguments, "repro_rate": 0.05})
        )


@pytest.mark.parametrize("value", ["0", "-5", "nan", "inf", "-inf"])
@pytest.mark.parametrize("name", ["timeout", "max_time"])
def test_a_non_positive_or_non_finite_limit_is_refused_by_both(value: str, name: str) -> None:
    flag = "--" + name.replace("_", "-")
    result = CliRunner().invoke(cli_group, ["run", "g", "b", flag, value, "--", "true"])
    assert result.exit_code == 2 and flag in result.output
    tool = get_tool("run")
    assert tool is not None
    arguments = {"good": "g", "bad": "b", name: float(value)}
    with pytest.raises(InputError, match=name):  # NaN passes JSON Schema's ranges: checked first
        dispatch.check_arguments(arguments)
        dispatch.validate(tool, arguments)


def test_kubernetes_command_is_shell_words_on_the_cli_and_a_list_in_the_tool() -> None:
    params = {"kube_command": "python -c 'print(1)'", "kube_args": None, "kube_probe": None}
    assert from_params(KubernetesOptions, params).command == ["python", "-c", "print(1)"]
    arguments = {"kubernetes": {"command": ["python", "-c", "print(1)"]}}
    assert from_arguments(KubernetesOptions, arguments).command == ["python", "-c", "print(1)"]


def test_a_session_config_round_trips_through_its_stored_form() -> None:
    config, _ = SessionConfig.from_options(
        "good.yaml",
        "bad.yaml",
        ["python", "train.py"],
        lambda group: from_arguments(
            group,
            {
                "backend": "kubernetes",
                "fail_on": "CUDA",
                "timeout": 30,
                "parallel": 3,
                "flaky": True,
                "kubernetes": {"namespace": "ml", "command": ["sh"]},
                "dry_run": "server",
            },
        ),
    )
    again = SessionConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert isinstance(again.backend_options, KubernetesOptions)
    assert again.backend_options.namespace == "ml" and again.dry_run == "server"


def test_the_flat_config_of_older_sessions_is_still_read() -> None:
    flat = {
        "good": "inputs/good.env",
        "bad": "inputs/bad.env",
        "good_source": "good.env",
        "bad_source": "bad.env",
        "backend": "local",
        "command": ["python", "w.py"],
        "signature": {"fail_on": "boom", "fail_exit_code": None, "fail_reason": None},
        "parallel": 2,
        "timeout_s": 9.0,
        "ignore": ["X*"],
        "container": None,
        "clean_env": True,
        "max_probes": 5,
        "max_time_s": None,
        "strategy": "flaky",
        "strategy_options": {"confidence": 0.95, "baseline_runs": 2, "p": 0.5},
        "backend_options": {},
    }
    config = SessionConfig.from_dict(flat)
    assert config.scope.ignore == ["X*"] and config.signature.fail_on == "boom"
    assert (config.limits.timeout, config.limits.max_probes) == (9.0, 5)
    search = config.search
    assert (search.parallel, search.flaky, search.confidence, search.baseline_runs) == (
        2,
        True,
        0.95,
        2,
    )
    assert search.repro_rate == 0.5 and search.background_rate is None
    assert config.backend_options == LocalOptions(clean_env=True)
    kube = SessionConfig.from_dict(
        {**flat, "backend": "kubernetes", "backend_options": {"dry_run": "client", "probe": "p"}}
    )
    assert kube.dry_run == "client" and isinstance(kube.backend_options, KubernetesOptions)


def test_an_unknown_backend_is_bad_input_naming_the_choices() -> None:
    with pytest.raises(InputError, match="expected one of local, ray, kubernetes"):
        backends.get("slurm")


TRIAGE_GROUPS = (
    TriageSourceOptions,
    TriageOptions,
    ScopeOptions,
    KubeConnection,
    RayConnection,
)


def test_triage_and_its_tool_take_the_same_options_with_the_same_ranges() -> None:
    params = {p.name: p for p in cli_group.commands["triage"].params}
    tool = get_tool("triage")
    assert tool is not None and tool.effect == "read_only"
    leaves = schema_leaves(tool.input_schema)
    for group in TRIAGE_GROUPS:
        section = getattr(group, "SCHEMA_GROUP", None)
        for item in fields_of(group):
            path = (section, item.name) if section else (item.name,)
            assert item.param in params, f"--{item.param} is missing from `triage`"
            assert path in leaves, f"{'.'.join(path)} is missing from the triage tool"
            assert click_bounds(params[item.param]) == schema_bounds(leaves[path], False)
    # The tool has the sources and these groups only (it launches nothing: no --bisect).
    expected = {
        (getattr(g, "SCHEMA_GROUP", None), i.name)
        if getattr(g, "SCHEMA_GROUP", None)
        else (i.name,)
        for g in TRIAGE_GROUPS
        for i in fields_of(g)
    }
    assert set(leaves) - {("sources",)} == expected
    # The command also takes every option of `run`, for --bisect.
    assert {param for param, _, _ in pairs(RUN_GROUPS)} <= set(params)
