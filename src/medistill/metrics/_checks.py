"""Private helpers shared by the metric modules: input conversion and checks."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import torch

from medistill.errors import InputError
from medistill.typing import ArrayLike


def to_numpy(x: ArrayLike, fn: str, name: str) -> np.ndarray:
    """Return ``x`` (numpy array or torch tensor, any device) as a float64 numpy array.

    Args:
        x: the input.
        fn: the public function's name, for messages.
        name: the argument's name, for messages.

    Raises:
        InputError: when ``x`` is neither an array nor a tensor, or not numeric.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.is_complex():
            raise InputError(f"{fn}: {name} must be real, got a complex tensor")
        return x.to(torch.float64).numpy()
    arr = np.asarray(x)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise InputError(f"{fn}: {name} must be a numeric array or tensor, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise InputError(f"{fn}: {name} must be real, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def to_label_array(x: ArrayLike, fn: str, name: str) -> np.ndarray:
    """Return a label map as an int64 numpy array.

    Integer and boolean dtypes are taken as they are; floating dtypes must hold integer values
    only (no NaN, no fractions), as after nearest-neighbour resampling.

    Raises:
        InputError: for non-integer values.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_):
        return arr.astype(np.int64, copy=False)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.array_equal(arr, np.round(arr)):
            raise InputError(
                f"{fn}: {name} must be a label map with integer values, got non-integer "
                f"{arr.dtype} values"
            )
        return arr.astype(np.int64)
    raise InputError(f"{fn}: {name} must be an integer label map, got dtype {arr.dtype}")


def check_same_shape(a: np.ndarray, b: np.ndarray, fn: str, name_a: str, name_b: str) -> None:
    """Raise :class:`InputError` naming ``name_a`` when the two shapes differ."""
    if a.shape != b.shape:
        raise InputError(
            f"{fn}: {name_a} has shape {tuple(a.shape)} but {name_b} has shape {tuple(b.shape)}; "
            "they must match"
        )


def resolve_labels(labels: Iterable[int] | None, target: np.ndarray, fn: str) -> list[int]:
    """The labels to evaluate: ``labels`` as ints, or the non-zero values present in ``target``."""
    if labels is None:
        values = np.unique(target)
        return [int(v) for v in values if v != 0]
    out: list[int] = []
    for v in labels:
        fv = float(v)
        if not np.isfinite(fv) or fv != round(fv):
            raise InputError(f"{fn}: labels must be integers, got {v!r}")
        out.append(int(round(fv)))
    return out


def check_spacing(spacing: Sequence[float] | None, ndim: int, fn: str) -> np.ndarray | None:
    """Return the per-axis spacing as a float64 array of length ``ndim`` (or None)."""
    if spacing is None:
        return None
    sp = np.asarray(spacing, dtype=np.float64).reshape(-1)
    if sp.size != ndim:
        raise InputError(
            f"{fn}: spacing must give one value per spatial axis ({ndim}), got {sp.size}"
        )
    if not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise InputError(f"{fn}: spacing must be positive and finite, got {tuple(sp.tolist())}")
    return sp


def nanmean(values: Iterable[float]) -> float:
    """Mean of the non-NaN values (``inf`` propagates); NaN when there are none, no warning."""
    arr = np.asarray(list(values), dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return float("nan")
    return float(arr.mean())
