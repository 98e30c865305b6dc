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
    config fields) were given; a ``--set`` of the same key wins over them. An error names where the
    value came from: the ``--set KEY=VALUE`` override, the flag (``--key``), or the file; an error
    about no one value (a missing required field) names the file, or ``label`` (the command) when
    there is none.
    """
    data: dict[str, Any] = {}
    origins: dict[str, str] = {}  # dotted key -> where its value came from
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
        origins.update(dict.fromkeys(_keys(data), where))
    for key, value in (values or {}).items():
        _put(data, key, value, f"--{key.replace('_', '-')}", origins)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set {item}: expected key=value")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _put(data, key, value, f"--set {item}", origins)
    return _build(cls, data, where, origins=origins)


def _keys(data: dict[str, Any], prefix: str = "") -> list[str]:
    """Every dotted key of nested mappings, sections included."""
    keys = []
    for key, value in data.items():
        keys.append(prefix + str(key))
        if isinstance(value, dict):
            keys.extend(_keys(value, f"{prefix}{key}."))
    return keys


def _put(data: dict[str, Any], key: str, value: Any, what: str, origins: dict[str, str]) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"{what}: {part} is not a section")
    node[parts[-1]] = value
    for stale in [k for k in origins if k.startswith(key + ".")]:
        del origins[stale]
    origins[key] = what


def _origin(origins: dict[str, str] | None, key: str, default: str) -> str:
    """Where ``key``'s value (or the section holding it) came from; ``default`` when not recorded."""
    parts = key.split(".")
    for i in range(len(parts), 0, -1):
        found = (origins or {}).get(".".join(parts[:i]))
        if found is not None:
            return found
    return default


def _mentioned(origins: dict[str, str] | None, message: str, prefix: str, default: str) -> str:
    """The origins of the fields a cross-field error names (``beta and lr must be positive``), else ``default``."""
    import re

    named = [origin for key, origin in (origins or {}).items()
             if key.startswith(prefix) and re.search(rf"\b{re.escape(key[len(prefix):])}\b", message)]
    return ", ".join(dict.fromkeys(named)) or default


def config_from_dict(cls: type[T], data: dict[str, Any], where: str) -> T:
    """Build ``cls`` from plain data (what :func:`config_to_dict` saved); errors name ``where``."""
    return _build(cls, data, where)


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain-data copy of a config, for saving next to what it produced."""
    return dataclasses.asdict(config)


def _build(cls: type[T], data: dict[str, Any], where: str, prefix: str = "",
           origins: dict[str, str] | None = None) -> T:
    if not isinstance(data, dict):
        raise UserError(f"{where}: {prefix.rstrip('.') or 'config'} must be a mapping")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(f"{_origin(origins, prefix + unknown[0], where)}: unknown field {prefix}{unknown[0]} "
                        f"(known: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, _origin(origins, prefix + name, where), prefix + name, origins)
    try:
        config = cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise UserError(f"{_mentioned(origins, str(err), prefix, where)}: {err}") from None
    validate = getattr(config, "validate", None)
    if validate is not None:
        try:
            validate()
        except ValueError as err:
            raise UserError(f"{_mentioned(origins, str(err), prefix, where)}: {err}") from None
    return config


def _coerce(hint: Any, value: Any, where: str, key: str, origins: dict[str, str] | None = None) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where, key + ".", origins)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where, key, origins)
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
