"""Dataclass configs that load and save YAML; one place for every default.

A config class is a (nested) dataclass. :func:`load_config` reads a YAML file or a named preset,
applies ``section.key=value`` overrides, and rejects unknown keys with the closest valid name and
values outside a ``Literal`` option type with the allowed values. A renamed key keeps its old
name as an alias (:func:`renamed`): configs and checkpoints written before the rename still load.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from medistill.errors import InputError
from medistill.typing import PathLike

T = TypeVar("T")


def renamed(default: Any, *old_names: str) -> Any:
    """A dataclass field whose key was renamed: YAML files, ``--set`` overrides and checkpoints
    may still use ``old_names``, with the same meaning (``mode: T = renamed("none", "kind")``)."""
    return dataclasses.field(default=default, metadata={"old_names": tuple(old_names)})


def _old_names(f: dataclasses.Field) -> tuple[str, ...]:
    return tuple(f.metadata.get("old_names", ()))


def _spellings(cls: type) -> dict[str, str]:
    """Every accepted key of a config class -> its field name (names and old names)."""
    out = {}
    for f in dataclasses.fields(cls):
        out[f.name] = f.name
        out.update(dict.fromkeys(_old_names(f), f.name))
    return out


def to_dict(config: Any) -> dict:
    """A plain ``dict`` (nested) of a dataclass config, ready for YAML or a checkpoint.

    A renamed key (:func:`renamed`) is written under its name and its old names, so that files
    and checkpoints stay readable by code that knows only the old name.
    """
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        value = to_dict(value) if dataclasses.is_dataclass(value) else copy.deepcopy(value)
        out[f.name] = value
        for old in _old_names(f):
            out[old] = copy.deepcopy(value)
    return out


def _literal(value: Any, kind: Any, where: str) -> Any:
    allowed = typing.get_args(kind)
    for option in allowed:
        if value == option and type(value) is type(option):
            return option
    if isinstance(value, (int, float)) and not isinstance(value, bool) and str(value) in allowed:
        return str(value)  # e.g. precision: 32 written without quotes
    choices = ", ".join(repr(a) for a in allowed)
    raise InputError(f"config: {where} must be one of {choices}, got {value!r}")


def _coerce(value: Any, kind: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    if origin is Literal:
        return _literal(value, kind, where)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise InputError(f"config: {where} must be a mapping, got {value!r}")
        return from_dict(kind, value, where)
    if origin in (types.UnionType, typing.Union):
        options = [a for a in typing.get_args(kind) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(kind)):
            return None
        return _coerce(value, options[0], where) if len(options) == 1 else value
    if origin in (tuple, list) and not isinstance(value, (list, tuple)):
        raise InputError(f"config: {where} must be a list, e.g. [1, 2], got {value!r}")
    if origin in (tuple, list) and isinstance(value, (list, tuple)):
        args = typing.get_args(kind)
        inner = args[0] if args else Any
        items = [_coerce(v, inner, where) for v in value]
        return tuple(items) if origin is tuple else items
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind in (int, float) and isinstance(value, str):
        try:  # YAML reads 1e-4 (no dot) as text
            return kind(value)
        except ValueError as err:
            raise InputError(f"config: {where} must be {kind.__name__}, got {value!r}") from err
    if kind is int and isinstance(value, bool):
        raise InputError(f"config: {where} must be an integer, got {value!r}")
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # e.g. precision: 32 written without quotes
    if kind in (int, str, bool) and not isinstance(value, kind):
        if kind is int and isinstance(value, float) and value.is_integer():
            return int(value)
        raise InputError(f"config: {where} must be {kind.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """Build ``cls`` from a (nested) dict; unknown keys raise with a closest-match hint.

    A renamed key may be given by its old name (errors then name the key as written); given
    under both names, the two values must agree.
    """
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    spellings = _spellings(cls)
    kwargs: dict[str, Any] = {}
    written: dict[str, str] = {}
    for key, value in (data or {}).items():
        path = f"{where}.{key}" if where else key
        if key not in spellings:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise InputError(f"config: unknown key {path!r}{hint}")
        name = spellings[key]
        coerced = _coerce(value, hints[name], path)
        if name in kwargs and kwargs[name] != coerced:
            raise InputError(
                f"config: {path} and {written[name]} are one setting ({key!r} is the old name of "
                f"{name!r}) but differ: {value!r} vs {kwargs[name]!r}"
            )
        kwargs[name] = coerced
        written[name] = path
    return cls(**kwargs)


def preset_files(task: str) -> dict[str, Path]:
    """Preset name -> YAML file shipped with the package in ``medistill/configs/<task>/``."""
    folder = Path(__file__).resolve().parents[1] / "configs" / task
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def _parse_value(text: str, item: str = "") -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise InputError(
            f"config override {item or text!r}: the value is not valid YAML (quote strings "
            "that hold brackets or commas)"
        ) from err


def apply_overrides(data: dict, overrides: list[str], cls: type | None = None) -> dict:
    """Apply ``a.b=value`` strings (YAML values) to a nested dict, in place; returns it.

    With the config class ``cls``, an override of a renamed key replaces the value under any of
    its spellings (``distill.kind=at`` replaces ``distill: {mode: none}``).
    """
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"config override {item!r} must look like section.key=value")
        node, section = data, cls
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            section = _section(section, part)
        _drop_other_spellings(node, parts[-1], section)
        node[parts[-1]] = _parse_value(value, item)
    return data


def _section(cls: type | None, key: str) -> type | None:
    """The dataclass of section ``key`` of config class ``cls`` (``None`` when not one)."""
    if cls is None or not dataclasses.is_dataclass(cls):
        return None
    name = _spellings(cls).get(key)
    if name is None:
        return None
    kind = typing.get_type_hints(cls)[name]
    return kind if dataclasses.is_dataclass(kind) else None


def _drop_other_spellings(node: dict, key: str, cls: type | None) -> None:
    if cls is None or not dataclasses.is_dataclass(cls) or not isinstance(node, dict):
        return
    spellings = _spellings(cls)
    name = spellings.get(key)
    if name is None:
        return
    for other in [k for k in node if k != key and spellings.get(k) == name]:
        del node[other]


def read_yaml(path: PathLike) -> dict:
    """A YAML mapping from a file (empty file -> empty dict)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise InputError(f"{path}: cannot read config ({err.strerror or err})") from err
    except yaml.YAMLError as err:
        raise InputError(f"{path}: invalid YAML ({' '.join(str(err).split())})") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: config must be a YAML mapping")
    return data


def load_config(
    cls: type[T],
    source: PathLike | None,
    *,
    presets: dict[str, PathLike] | None = None,
    overrides: list[str] | None = None,
) -> T:
    """Config from a YAML file or a preset name (``presets`` maps names to files), with overrides.

    A file may name a base preset with ``preset: NAME``; its keys are merged over the preset's.
    """
    presets = presets or {}
    data: dict = {}
    if source is not None:
        text = str(source)
        if text in presets:
            data = read_yaml(presets[text])
        else:
            path = Path(text)
            if not path.exists():
                known = ", ".join(sorted(presets)) or "none"
                raise InputError(f"config {text!r}: no such file or preset (presets: {known})")
            data = read_yaml(path)
            base = data.pop("preset", None)
            if base is not None:
                if base not in presets:
                    raise InputError(f"{path}: unknown preset {base!r}")
                data = _merge(read_yaml(presets[base]), data, cls)
    apply_overrides(data, overrides or [], cls)
    return from_dict(cls, data)


def _merge(base: dict, top: dict, cls: type | None = None) -> dict:
    """``top`` over ``base`` (nested); a renamed key in ``top`` replaces its other spellings."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value, _section(cls, key))
        else:
            _drop_other_spellings(out, key, cls)
            out[key] = value
    return out


def save_config(config: Any, path: PathLike) -> None:
    """Write a dataclass config as YAML (atomically)."""
    from medistill.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(_plain(to_dict(config)), sort_keys=False))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
