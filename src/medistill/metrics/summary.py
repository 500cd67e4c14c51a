"""Summary of per-case metric values: mean and standard deviation ignoring NaN."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from medistill.metrics._common import to_numpy
from medistill.typing import ArrayLike

__all__ = ["summarize"]


def summarize(values: Iterable[float] | ArrayLike) -> tuple[float, float]:
    """Mean and sample standard deviation of the non-NaN values.

    The standard deviation uses ``ddof=1`` (the spread across cases, as in "mean +- sd" tables);
    it is 0 for a single value. ``inf`` values propagate.

    Args:
        values: per-case values (list, numpy array or torch tensor, any shape; flattened).

    Returns:
        ``(mean, sd)``; ``(nan, nan)`` when no value is defined.
    """
    if isinstance(values, (np.ndarray, torch.Tensor)):
        arr = to_numpy(values, "summarize", "values").ravel()
    else:
        arr = np.asarray([float(v) for v in values], dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return float("nan"), float("nan")
    sd = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return float(arr.mean()), sd
