"""Intensity normalisation to [0, 1]: robust percentile clipping and CT window/level."""

from __future__ import annotations

import numpy as np

from medistill.errors import InputError


def normalize_percentile(
    data: np.ndarray,
    lower: float = 0.5,
    upper: float = 99.5,
    *,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Clip to the ``[lower, upper]`` percentiles (of ``mask`` voxels if given), scale to [0, 1].

    Args:
        data: intensities, any shape.
        lower, upper: percentiles in [0, 100], ``lower < upper``.
        mask: optional boolean array of ``data``'s shape selecting the voxels for the percentiles.

    Returns:
        float32 array of ``data``'s shape in [0, 1]; a constant image gives all zeros.
    """
    if not 0 <= lower < upper <= 100:
        raise InputError(
            f"normalize_percentile(): need 0 <= lower < upper <= 100, got {lower}, {upper}"
        )
    data = np.asarray(data, dtype=np.float32)
    sample = data[mask.astype(bool)] if mask is not None else data
    if sample.size == 0:
        raise InputError("normalize_percentile(): mask selects no voxels")
    lo, hi = np.percentile(sample, [lower, upper])
    if hi <= lo:
        return np.zeros_like(data)
    return ((np.clip(data, lo, hi) - lo) / (hi - lo)).astype(np.float32)


def ct_window(data: np.ndarray, width: float = 290.0, level: float = 120.0) -> np.ndarray:
    """Map Hounsfield units through a window to [0, 1] (defaults: the liver window W 290, L 120).

    Values below ``level - width / 2`` become 0, above ``level + width / 2`` become 1.
    """
    if width <= 0:
        raise InputError(f"ct_window(): width must be positive, got {width}")
    lo = level - width / 2.0
    return np.clip((np.asarray(data, dtype=np.float32) - lo) / width, 0.0, 1.0).astype(np.float32)
