"""Typed configs: dataclasses filled from YAML files and ``key=value`` command-line overrides.

Every stage has one dataclass whose fields carry their defaults and a one-line comment.
``load_config(WorldConfig, "recipes/world/default.yaml", ["num_train=500", "seed=3"])``
reads the YAML (optional), applies the overrides (dotted keys reach nested dataclasses; values
are parsed as YAML, so ``x=[1, 2]`` is a list), and checks every key and type, naming the
file or the override on error. Unknown keys are errors, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from vlalign.errors import UserError

T = TypeVar("T")


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                values: dict[str, Any] | None = None, label: str = "defaults") -> T:
    """Build ``cls`` from a YAML file (or its defaults), then ``values``, then ``key=value`` overrides.

    ``values`` maps dotted keys to Python values: what a command's flags (shorthands for
    config fields) were given; a ``--set`` of the same key wins over them. Errors name the file,
    or ``label`` (the command) when there is none.
    """
    data: dict[str, Any] = {}
    where = label
    if path is not None:
        path = Path(path)
        where = str(path)
        if not path.is_file():
            raise UserError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            line = getattr(getattr(err, "problem_mark", None), "line", None)
            at = f" line {line + 1}" if line is not None else ""
            raise UserError(f"{path}{at}: not valid YAML ({getattr(err, 'problem', err)})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise UserError(f"{path}: expected a mapping of config fields, got {type(loaded).__name__}")
        data = loaded or {}
    for key, value in (values or {}).items():
        _put(data, key, value, f"--{key.replace('_', '-')}")
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"override {item!r}: expected key=value")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _put(data, key, value, f"override {item!r}")
    return _build(cls, data, where)


def _put(data: dict[str, Any], key: str, value: Any, what: str) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"{what}: {part} is not a section")
    node[parts[-1]] = value


def config_from_dict(cls: type[T], data: dict[str, Any], where: str) -> T:
    """Build ``cls`` from plain data (what :func:`config_to_dict` saved); errors name ``where``."""
    return _build(cls, data, where)


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain-data copy of a config, for saving next to what it produced."""
    return dataclasses.asdict(config)


def _build(cls: type[T], data: dict[str, Any], where: str, prefix: str = "") -> T:
    if not isinstance(data, dict):
        raise UserError(f"{where}: {prefix.rstrip('.') or 'config'} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(f"{where}: unknown field {prefix}{unknown[0]} (known: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, where, prefix + name)
    try:
        config = cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise UserError(f"{where}: {err}") from None
    validate = getattr(config, "validate", None)
    if validate is not None:
        try:
            validate()
        except ValueError as err:
            raise UserError(f"{where}: {err}") from None
    return config


def _coerce(hint: Any, value: Any, where: str, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where, key + ".")
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where, key)
            except UserError as err:
                errors.append(err)
        raise errors[0]
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise UserError(f"{where}: field {key} must be a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(inner, v, where, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        # YAML 1.1 reads "5e-5" (no dot) as a string; a number is what was meant
        try:
            return float(value)
        except ValueError:
            pass
    if hint in (int, float, str, bool):
        if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
            return value
        raise UserError(f"{where}: field {key} must be {hint.__name__}, got {value!r}")
    return value
