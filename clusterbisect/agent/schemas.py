"""The JSON Schema fragments the tools' inputs are made of: objects, strings, the spec
pair, the workload, and a session's input generated from config.py as the CLI's."""

from __future__ import annotations

from typing import Any

from clusterbisect import backends, config, options


def obj(props: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": props,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = list(required)
    return schema


def text(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "description": description, **extra}


def strings(description: str) -> dict[str, Any]:
    return {
        "type": "array",
        "items": {"type": "string", "minLength": 1},
        "description": description,
    }


STATE_DIR = text(
    "The session's state directory. Default: the current session (.clusterbisect/CURRENT "
    "in the working directory, set by `start`)."
)
SPEC = (
    "A job spec file: Kubernetes YAML/JSON (kubectl get -o yaml works), a Ray job, "
    "an env dump or .env file, a pip freeze, or a snapshot JSON."
)

SPEC_PAIR = {
    "good": text("The working job's spec. " + SPEC),
    "bad": text("The failing job's spec, same format as good."),
}

WORKLOAD = {
    "command": {
        **strings(
            'The probe workload as an argv list, e.g. ["python", "train.py"]. Needed '
            "to run probes on the local backend; Kubernetes and Ray take it from the spec."
        ),
        "minItems": 1,
    },
}


def session_input(groups: tuple[type, ...]) -> dict[str, Any]:
    """The input of `start` or `run`: the specs, the workload, and the option groups
    (every backend's options under its name), generated from config.py as the CLI's."""
    properties = {
        **SPEC_PAIR,
        **WORKLOAD,
        **options.schema_properties(*groups, *backends.option_classes()),
    }
    return obj(properties, ("good", "bad"))


RUN_INPUT = session_input(config.RUN_GROUPS)
START_INPUT = session_input(config.START_GROUPS)
