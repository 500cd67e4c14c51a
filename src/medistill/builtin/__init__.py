"""Built-in models: trained weights shipped inside the package, each with a model card.

A built-in model is a slim medistill checkpoint (weights stored as float16 to keep the wheel
small; :func:`torch.nn.Module.load_state_dict` casts them back to float32) next to a YAML card
that says what it was trained on, by which teacher, how long, what it measured on held-out data
(with the command), and the licence of the data. ``--model NAME`` accepts a built-in name
anywhere a checkpoint path is accepted; ``register`` / ``evaluate`` without ``--model`` use
:data:`DEFAULT`.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml

from medistill.errors import InputError
from medistill.typing import PathLike

__all__ = [
    "DEFAULT",
    "BuiltinModel",
    "available",
    "builtin",
    "card",
    "pack_checkpoint",
    "resolve_model",
]

#: the built-in model used when ``register`` / ``evaluate`` get no ``--model``.
DEFAULT = "brain"


@dataclass(frozen=True)
class BuiltinModel:
    """One shipped model: its name, weights file and card (both inside the package)."""

    name: str
    weights: Path
    card_path: Path

    def card(self) -> dict[str, Any]:
        """The model card as a dict (parsed YAML)."""
        with open(self.card_path, encoding="utf-8") as fh:
            return yaml.safe_load(fh)


def _folder() -> Path:
    return Path(str(resources.files("medistill.builtin")))


def available() -> dict[str, BuiltinModel]:
    """Every built-in model whose card and weights are both in the package, by name."""
    models = {}
    for card_path in sorted(_folder().glob("*.yaml")):
        with open(card_path, encoding="utf-8") as fh:
            meta = yaml.safe_load(fh) or {}
        weights = card_path.with_name(str(meta.get("weights", "")))
        if meta.get("name") and weights.is_file():
            models[meta["name"]] = BuiltinModel(meta["name"], weights, card_path)
    return models


def builtin(name: str) -> BuiltinModel:
    """Built-in model ``name``.

    Raises:
        InputError: no built-in model of that name.
    """
    models = available()
    if name not in models:
        known = ", ".join(models) or "none"
        raise InputError(f"no built-in model {name!r} (built-in: {known})")
    return models[name]


def card(name: str) -> dict[str, Any]:
    """The card of built-in model ``name`` (:func:`builtin` refuses an unknown name)."""
    return builtin(name).card()


def resolve_model(model: PathLike | None) -> Path:
    """The checkpoint file for ``--model``: ``None`` is :data:`DEFAULT`, a built-in name is its
    shipped weights, anything else is a path (returned as given; the loader checks it).

    Raises:
        InputError: ``None`` while the default model is missing from this installation.
    """
    models = available()
    if model is None:
        if DEFAULT not in models:
            raise InputError(
                f"the built-in model {DEFAULT!r} is missing from this installation: give --model"
            )
        return models[DEFAULT].weights
    text = str(model)
    if text in models and not Path(text).exists():
        return models[text].weights
    return Path(model)


def sha256(path: PathLike) -> str:
    """Hex SHA-256 of a file (the card records its weights' digest)."""
    from medistill.io.atomic import file_sha256

    return file_sha256(path)


def pack_checkpoint(src: PathLike, dst: PathLike, *, dtype: torch.dtype = torch.float16) -> str:
    """Write ``src`` (a medistill checkpoint) to ``dst`` with its floating-point weights cast to
    ``dtype`` and no optimizer or critic state; returns the SHA-256 of ``dst``.

    Raises:
        InputError: ``src`` is not a medistill checkpoint, or a weight is not finite.
    """
    from medistill.io.atomic import atomic_path
    from medistill.train import load_checkpoint

    ckpt = load_checkpoint(src)
    modules = {}
    for name, state in ckpt["modules"].items():
        if name != "model":
            continue
        packed = {}
        for key, value in state.items():
            if value.is_floating_point():
                if not torch.isfinite(value).all():
                    raise InputError(f"{src}: weight {key!r} is not finite")
                value = value.to(dtype)
            packed[key] = value.clone()
        modules[name] = packed
    if "model" not in modules:
        raise InputError(f"{src}: checkpoint has no 'model' weights")
    slim = {k: v for k, v in ckpt.items() if k not in ("modules", "optimizers", "extra")}
    slim["modules"] = modules
    slim["packed_dtype"] = str(dtype).removeprefix("torch.")
    with atomic_path(dst) as tmp:
        torch.save(slim, tmp)
    return sha256(dst)
