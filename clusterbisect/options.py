"""Option metadata, and what it generates: click options and JSON Schema properties.

An option group is a dataclass whose fields carry :func:`option` metadata (the groups
themselves are in ``config.py``). From one declaration:

- :func:`click_options` adds the CLI options of some groups to a click command, and
  :func:`from_params` reads click's keyword arguments back into a group;
- :func:`schema_properties` gives the JSON Schema properties of the tools' inputs, and
  :func:`from_arguments` reads a tool's (validated) arguments back into a group.

A field's type decides the rest: ``bool`` is a flag, ``int``/``float`` a number (with
the metadata's range on both sides), ``str`` a string, ``list[str]`` a repeatable
option (or one shell-quoted string with ``shell_words``) and an array.
"""

from __future__ import annotations

import dataclasses
import math
import shlex
import types
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

G = TypeVar("G")

# --- metadata ----------------------------------------------------------------

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


# --- the command line -------------------------------------------------------------------


def click_options(*groups: type, only: Collection[str] | None = None) -> Callable[[Any], Any]:
    """A decorator adding the CLI options of ``groups`` (those named in ``only``, when
    given) to a click command."""
    import click

    def decorate(func: Any) -> Any:
        for group in reversed(groups):
            for item in reversed(fields_of(group)):
                if item.meta.cli and (only is None or item.name in only):
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
    opened = meta.exclusive_minimum is not None
    if item.kind is int:
        if low is None and meta.maximum is None:
            return int
        as_int = [None if v is None else int(v) for v in (low, meta.maximum)]
        return click.IntRange(as_int[0], as_int[1], min_open=opened)

    class FiniteRange(click.FloatRange):
        """A JSON number: "nan" and "inf" parse as floats, but no schema accepts them."""

        def convert(self, value: Any, param: Any, ctx: Any) -> Any:
            number = super().convert(value, param, ctx)
            if not math.isfinite(number):
                self.fail(f"{value!r} is not a finite number.", param, ctx)
            return number

    return FiniteRange(low, meta.maximum, min_open=opened)


def check(options: Any) -> None:
    """Raise ``InputError`` unless every option of ``options`` (a group instance) has
    its declared type and range: what the CLI and the schemas check on the way in,
    checked again on what was stored (``session.json``, a log's start line)."""
    from clusterbisect.errors import InputError

    for item in fields_of(type(options)):
        value = getattr(options, item.name)
        problem = _type_problem(item, value) if value is not None or not item.optional else None
        if problem is None and value is not None:
            problem = _range_problem(item, value)
        if problem:
            raise InputError(f"{problem}, got {value!r}", field=item.name)


def _type_problem(item: OptionField, value: Any) -> str | None:
    if item.kind is list:
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        return None if ok else "expected a list of strings"
    if item.kind is bool:
        return None if isinstance(value, bool) else "expected true or false"
    if item.kind in (int, float):
        wanted = (int,) if item.kind is int else (int, float)
        if isinstance(value, bool) or not isinstance(value, wanted):
            return f"expected {'an integer' if item.kind is int else 'a number'}"
        return None if math.isfinite(value) else "expected a finite number"
    return None if isinstance(value, str) else "expected a string"


def _range_problem(item: OptionField, value: Any) -> str | None:
    meta = item.meta
    if meta.choice_list() and value not in meta.choice_list():
        return f"expected one of {', '.join(meta.choice_list())}"
    if item.kind not in (int, float):
        return None
    if meta.minimum is not None and value < meta.minimum:
        return f"expected at least {meta.minimum:g}"
    if meta.maximum is not None and value > meta.maximum:
        return f"expected at most {meta.maximum:g}"
    if meta.exclusive_minimum is not None and value <= meta.exclusive_minimum:
        return f"expected more than {meta.exclusive_minimum:g}"
    return None


def cli_words(options: Any) -> list[str]:
    """The command-line words that give ``options`` (a group instance): one flag per
    option that differs from its default, as a user would type it."""
    words: list[str] = []
    for item in fields_of(type(options)):
        value = getattr(options, item.name)
        if not item.meta.cli or value == item.default or value is None:
            continue
        flag = next((f for f in item.flags if f.startswith("--")), item.flags[0])
        if item.kind is bool:
            words.append(flag)
        elif item.kind is list and item.meta.shell_words:
            words += [flag, shlex.join(value)]
        elif item.kind is list:
            for element in value:
                words += [flag, str(element)]
        else:
            words += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    return words


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


def schema_properties(
    *groups: type, flat: bool = False, only: Collection[str] | None = None
) -> dict[str, Any]:
    """The JSON Schema properties of ``groups`` (of the fields named in ``only``, when
    given); a backend's options are one object property named after it (its
    ``SCHEMA_GROUP``), or top level without one or with ``flat``."""
    properties: dict[str, Any] = {}
    for group in groups:
        fields = {
            i.name: _schema(i)
            for i in fields_of(group)
            if i.meta.tool and (only is None or i.name in only)
        }
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
