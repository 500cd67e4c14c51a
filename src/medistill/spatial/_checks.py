"""Argument checks shared by :mod:`medistill.spatial` (private)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from medistill.errors import InputError, check_option  # noqa: F401 (re-exported)


def check_tensor(fn: str, name: str, value: object, dims: Iterable[int] = (4, 5)) -> Tensor:
    """Raise unless ``value`` is a tensor whose number of axes is one of ``dims``."""
    dims = tuple(dims)
    if not isinstance(value, Tensor):
        raise InputError(f"{fn}(): '{name}' must be a torch.Tensor, got {type(value).__name__}")
    if value.dim() not in dims:
        raise InputError(
            f"{fn}(): '{name}' must have {' or '.join(map(str, dims))} axes, "
            f"got shape {tuple(value.shape)}"
        )
    return value


def check_field(fn: str, name: str, value: object, ndim: int | None = None) -> Tensor:
    """Raise unless ``value`` is a floating ``(B, ndim, *S)`` displacement field (ndim 2 or 3)."""
    field = check_tensor(fn, name, value, (4, 5) if ndim is None else (ndim + 2,))
    nd = field.dim() - 2
    if field.shape[1] != nd:
        raise InputError(
            f"{fn}(): '{name}' must be a displacement field (B, {nd}, *S) with {nd} channels "
            f"for {nd}-D, got shape {tuple(field.shape)}"
        )
    if not field.is_floating_point():
        raise InputError(f"{fn}(): '{name}' must be floating point, got {field.dtype}")
    return field


def broadcast_batch(fn: str, names: tuple[str, str], a: Tensor, b: Tensor) -> int:
    """The common batch size of ``a`` and ``b`` (equal, or one of them 1), else raise."""
    ba, bb = a.shape[0], b.shape[0]
    if ba == bb or bb == 1:
        return ba
    if ba == 1:
        return bb
    raise InputError(
        f"{fn}(): batch sizes of '{names[0]}' ({ba}) and '{names[1]}' ({bb}) differ "
        "and neither is 1"
    )


def check_same_device(fn: str, names: tuple[str, str], a: Tensor, b: Tensor) -> None:
    """Raise if ``a`` and ``b`` live on different devices."""
    if a.device != b.device:
        raise InputError(f"{fn}(): '{names[0]}' is on {a.device} but '{names[1]}' is on {b.device}")


def floating_dtype(*dtypes: torch.dtype) -> torch.dtype:
    """The promoted floating dtype of the floating entries of ``dtypes`` (default dtype if none)."""
    out: torch.dtype | None = None
    for dt in dtypes:
        if dt.is_floating_point:
            out = dt if out is None else torch.promote_types(out, dt)
    return torch.get_default_dtype() if out is None else out
