"""The one config loader: layers of options -> a config dataclass, checked by pydantic.

Every command and recipe reads its options the same way, lowest first:

    defaults (the dataclass) < `base` (a preset, from code) < a YAML file < `key=value` overrides < `values`

`key=value` reaches into nested options with dots (`sft.lr=1e-4`, `generation.top_p=0.9`). An override's
text is read against the option it sets: a text option keeps it as written (`out=runs/007`), any other
option reads it as YAML (`true`, `3`, `[0, 1]`, `{a: 1}`). Nested mappings merge key by key.

pydantic (already a dependency of typer and lmms-eval) turns the merged mapping into the dataclass: it
converts what YAML leaves as text (`1e-4`), refuses wrong types and refuses unknown keys by name, at every
depth — a typo must fail before a model loads, not silently train with a default. Ranges are the
dataclasses' own (`errors.Bounded`), checked when the instance is made. OmegaConf would do the same, but
from 2.1 it pins antlr4-python3-runtime 4.9 while lmms-eval's latex2sympy2 pins 4.7.2.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from visrl_bench.core.errors import VisrlError
from visrl_bench.core.io import read_yaml_mapping

T = TypeVar("T")


class _Text(str):
    """An override's value as typed; read once the option it sets is known."""


def parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    """`key=value` strings -> a nested mapping (`a.b=1` -> {"a": {"b": "1"}}), values still unread."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        path = [part.strip() for part in key.split(".")]
        if not sep or not all(path):
            raise VisrlError(f"override {item!r} is not key=value")
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise VisrlError(f"override {item!r}: {part} is set twice, as a value and as a section")
        node[path[-1]] = _Text(value)
    return out


def option_values(items: Sequence[str] | None) -> dict[str, Any]:
    """`key=value` options of a plug-in that has no config class (a task's `-o shuffle=false`) -> a flat
    dict, each value read as YAML; keys are kept whole (`vstar_bench.shuffle` targets one task)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise VisrlError(f"option {item!r} is not key=value")
        out[key.strip()] = _read_text(value, Any)
    return out


def merge(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Later layers win; a mapping merges into a mapping key by key, at every depth."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
                out[key] = merge(out[key], value)
            else:
                out[key] = dict(value) if isinstance(value, Mapping) else value
    return out


def read_scalars(values: Any, hint: Any = Any) -> Any:
    """Read the override texts inside `values` against the type `hint` they will fill (see the module doc);
    texts inside an untyped mapping stay unread until a config that types them loads them."""
    if isinstance(values, _Text):
        return _read_text(values, hint)
    if isinstance(values, Mapping):
        fields = _field_hints(hint)
        if fields is None:
            if hint is Any or _origin(hint) in (dict, Mapping):
                return dict(values)  # e.g. a stage's options: typed by the stage's own config later
            return {k: read_scalars(v) for k, v in values.items()}
        return {k: read_scalars(v, fields.get(k, Any)) for k, v in values.items()}
    return values


def load_config(
    config_class: type[T],
    path: str | Path | None = None,
    overrides: Sequence[str] | None = None,
    *,
    base: Mapping[str, Any] | None = None,
    source: str | None = None,
    prefix: str = "",
    **values: Any,
) -> T:
    """`base` < YAML file at `path` < `overrides` < keyword `values` (None means unset) -> `config_class`.
    Errors name the file (or `source`) and the option: `cfg.yaml: option sft.lr takes a number, got 'x'`;
    `prefix` is where the options sit in a larger config (`"dpo."`), so that errors name them whole."""
    where = source or (str(path) if path else "the command line" if overrides else "config")
    data = merge(
        base,
        read_yaml_mapping(path) if path else None,
        parse_overrides(overrides),
        {k: v for k, v in values.items() if v is not None},
    )
    return validate(config_class, data, where, prefix)


def validate(config_class: type[T], data: Mapping[str, Any], source: str = "config", prefix: str = "") -> T:
    """A merged mapping -> `config_class`, or a VisrlError naming `source` and every bad option (by its
    whole name: `prefix` + its key path)."""
    import pydantic

    data = read_scalars(data, config_class)
    try:
        _refuse_truth_values_as_numbers(data, config_class, "")  # named whole below
        return _adapter(config_class).validate_python(data)
    except pydantic.ValidationError as exc:
        raise VisrlError(f"{source}: {_describe(exc, config_class, prefix)}") from None
    except VisrlError as exc:  # a range check in __post_init__
        message = str(exc)
        if prefix and "option " in message:  # "option lr must be ..." of a nested config: name it whole
            message = message.replace("option ", f"option {prefix}", 1)
        elif prefix:  # a check across options: say which section it is about
            message = f"{prefix.rstrip('.')}: {message}"
        raise VisrlError(f"{source}: {message}") from None


def read_value(hint: Any, value: Any) -> Any:
    """One value read against a type hint, as `validate` reads a config's fields (a hint pydantic cannot
    build a schema for passes the value through); a ValueError whose text is what the option takes
    (`takes true or false`) when it does not fit."""
    import pydantic

    try:
        adapter = pydantic.TypeAdapter(hint)
    except pydantic.PydanticSchemaGenerationError:  # e.g. a torch type: not checked here
        return value
    try:
        return adapter.validate_python(value)
    except pydantic.ValidationError as exc:
        kind = exc.errors(include_url=False)[0]["type"]
        raise ValueError(_PHRASES.get(kind, f"takes {getattr(hint, '__name__', hint)}")) from None


# --- pydantic's side ----------------------------------------------------------------------------------------
_PHRASES = {
    "int_from_float": "takes a whole number",
    "int_parsing": "takes a whole number",
    "int_type": "takes a whole number",
    "float_parsing": "takes a number",
    "float_type": "takes a number",
    "bool_parsing": "takes true or false",
    "bool_type": "takes true or false",
    "string_type": "takes text",
    "list_type": "takes a list",
    "tuple_type": "takes a list",
    "dict_type": "takes a mapping",
    "dataclass_type": "takes a mapping",
}


def _describe(exc: Any, config_class: type, prefix: str = "") -> str:
    unknown, problems = [], []
    for err in exc.errors(include_url=False):
        loc = prefix + ".".join(str(part) for part in err["loc"])
        if err["type"] == "unexpected_keyword_argument":
            unknown.append(loc)
        elif err["type"] == "value_error" and "error" in err.get("ctx", {}):
            problems.append(str(err["ctx"]["error"]))
        elif err["type"] in _PHRASES:
            problems.append(f"option {loc} {_PHRASES[err['type']]}, got {err['input']!r}")
        else:
            problems.append(f"option {loc}: {err['msg']} (got {err['input']!r})")
    if unknown:
        problems.insert(0, f"unknown option(s) {', '.join(unknown)} for {config_class.__name__}")
    return "; ".join(problems)


@functools.cache
def _adapter(config_class: type) -> Any:
    import pydantic

    _forbid_extra(config_class)
    return pydantic.TypeAdapter(config_class)


def _forbid_extra(cls: type) -> None:
    """pydantic ignores unknown keys of a plain dataclass unless the class says otherwise."""
    if not dataclasses.is_dataclass(cls) or "__pydantic_config__" in vars(cls):
        return
    cls.__pydantic_config__ = {"extra": "forbid"}
    for hint in (_field_hints(cls) or {}).values():
        for inner in _flatten(hint):
            _forbid_extra(inner)


# --- type hints -------------------------------------------------------------------------------------
def _origin(hint: Any) -> Any:
    return typing.get_origin(hint) or hint


def _flatten(hint: Any) -> list[Any]:
    args = typing.get_args(hint)
    return [x for a in args for x in _flatten(a)] if args else [hint]


def _field_hints(hint: Any) -> dict[str, Any] | None:
    inner = [h for h in _flatten(hint) if dataclasses.is_dataclass(h)]
    if not inner:
        return None
    return typing.get_type_hints(inner[0])


def _refuse_truth_values_as_numbers(data: Any, hint: Any, prefix: str) -> None:
    """pydantic reads `true` as 1 for a whole-number option (`max_turns: true` would run one crop): a
    number option given true or false is refused by name, at every depth."""
    fields = _field_hints(hint)
    if fields is None or not isinstance(data, Mapping):
        return
    for key, value in data.items():
        inner = fields.get(key)
        if inner is None:
            continue
        numeric = {a for a in _flatten(inner) if a is not type(None)} <= {int, float}
        if isinstance(value, bool) and numeric:
            raise VisrlError(f"option {prefix}{key} takes a number, got {value!r}")
        _refuse_truth_values_as_numbers(value, inner, f"{prefix}{key}.")


def _text_only(hint: Any) -> bool | None:
    """True: a text option; None: text or nothing (`str | None`); False: anything else."""
    if hint is str:
        return True
    if isinstance(hint, types.UnionType) or _origin(hint) is typing.Union:
        parts = typing.get_args(hint)
        if [a for a in parts if a is not type(None)] == [str]:
            return None
    return False


def _read_text(text: str, hint: Any) -> Any:
    import yaml

    kind = _text_only(hint)
    if kind is True:
        return str(text)
    try:
        value = yaml.safe_load(text) if text else ""
    except yaml.YAMLError:
        return str(text)
    if kind is None:  # `leaderboard=null` unsets; any other value is the text as typed (`title=2024`)
        return None if value is None else str(text)
    return value
