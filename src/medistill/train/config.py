"""Dataclass configs that load and save YAML; one place for every default.

A config class is a (nested) dataclass. :func:`load_config` reads a YAML file or a named preset,
applies ``section.key=value`` overrides, and rejects unknown keys with the closest valid name.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from medistill.errors import InputError
from medistill.typing import PathLike

T = TypeVar("T")


def to_dict(config: Any) -> dict:
    """A plain ``dict`` (nested) of a dataclass config, ready for YAML or a checkpoint."""
    return dataclasses.asdict(config)


def _coerce(value: Any, kind: Any, where: str) -> Any:
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise InputError(f"config: {where} must be a mapping, got {value!r}")
        return from_dict(kind, value, where)
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
    """Build ``cls`` from a (nested) dict; unknown keys raise with a closest-match hint."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in (data or {}).items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise InputError(f"config: unknown key {path!r}{hint}")
        kwargs[key] = _coerce(value, hints[key], path)
    return cls(**kwargs)


def preset_files(task: str) -> dict[str, Path]:
    """Preset name -> YAML file shipped with the package in ``medistill/configs/<task>/``."""
    folder = Path(__file__).resolve().parents[1] / "configs" / task
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def _parse_value(text: str) -> Any:
    return yaml.safe_load(text)


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``a.b=value`` strings (YAML values) to a nested dict, in place; returns it."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"config override {item!r} must look like section.key=value")
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _parse_value(value)
    return data


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
                data = _merge(read_yaml(presets[base]), data)
    apply_overrides(data, overrides or [])
    return from_dict(cls, data)


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
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
