"""Overlap of label maps: Dice and Jaccard per label, and their means over labels.

Conventions (the same for every function here):

- ``pred`` and ``target`` are label maps of equal shape (any number of dimensions, e.g.
  ``(D, H, W)``), integer dtype or floating dtype holding integer values (numpy arrays or torch
  tensors). ``target`` is the reference (in registration: the fixed image's labels; ``pred`` the
  warped moving labels).
- ``labels=None`` evaluates the non-zero label values present in ``target`` (background 0 is
  never included by default; a label found only in ``pred`` is not evaluated unless listed).
  Pass ``labels`` explicitly to fix the label set across cases (e.g. all 56 LPBA40 structures).
- A label absent from both ``pred`` and ``target`` gives NaN (the overlap is undefined); a label
  present in only one of them gives 0. The means skip NaN labels and are NaN when every label
  is NaN or no label is evaluated.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from medistill.metrics._checks import (
    check_same_shape,
    nanmean,
    resolve_labels,
    to_label_array,
)
from medistill.typing import ArrayLike

__all__ = ["dice", "jaccard", "mean_dice", "mean_jaccard"]


def _counts(values: np.ndarray) -> dict[int, int]:
    """Number of voxels of each value in an int64 array."""
    if values.size == 0:
        return {}
    lo, hi = int(values.min()), int(values.max())
    if hi - lo < 1 << 22:
        bins = np.bincount((values - lo).ravel())
        nz = np.flatnonzero(bins)
        return {int(v) + lo: int(bins[v]) for v in nz}
    uniq, cnt = np.unique(values, return_counts=True)
    return {int(u): int(c) for u, c in zip(uniq, cnt, strict=True)}


def _overlap_counts(
    pred: ArrayLike, target: ArrayLike, labels: Iterable[int] | None, fn: str
) -> tuple[list[int], dict[int, int], dict[int, int], dict[int, int]]:
    """Labels to evaluate and, per label, voxel counts in pred, in target and in both."""
    p = to_label_array(pred, fn, "pred")
    t = to_label_array(target, fn, "target")
    check_same_shape(p, t, fn, "pred", "target")
    labs = resolve_labels(labels, t, fn)
    n_pred = _counts(p)
    n_target = _counts(t)
    n_both = _counts(t[p == t])
    return labs, n_pred, n_target, n_both


def dice(
    pred: ArrayLike, target: ArrayLike, labels: Iterable[int] | None = None
) -> dict[int, float]:
    """Dice coefficient per label, ``2 |P ∩ T| / (|P| + |T|)``.

    Args:
        pred: predicted (e.g. warped moving) label map, any shape.
        target: reference label map, same shape as ``pred``.
        labels: label values to evaluate; default: the non-zero values present in ``target``.

    Returns:
        ``{label: dice}`` in ``[0, 1]``, in the order of ``labels`` (ascending by default);
        NaN for a label absent from both maps.

    Raises:
        InputError: when the shapes differ or a map holds non-integer values.
    """
    labs, n_p, n_t, n_b = _overlap_counts(pred, target, labels, "dice")
    out: dict[int, float] = {}
    for lab in labs:
        denom = n_p.get(lab, 0) + n_t.get(lab, 0)
        out[lab] = float("nan") if denom == 0 else 2.0 * n_b.get(lab, 0) / denom
    return out


def jaccard(
    pred: ArrayLike, target: ArrayLike, labels: Iterable[int] | None = None
) -> dict[int, float]:
    """Jaccard index (intersection over union) per label, ``|P ∩ T| / |P ∪ T|``.

    Args:
        pred: predicted (e.g. warped moving) label map, any shape.
        target: reference label map, same shape as ``pred``.
        labels: label values to evaluate; default: the non-zero values present in ``target``.

    Returns:
        ``{label: jaccard}`` in ``[0, 1]``; NaN for a label absent from both maps.

    Raises:
        InputError: when the shapes differ or a map holds non-integer values.
    """
    labs, n_p, n_t, n_b = _overlap_counts(pred, target, labels, "jaccard")
    out: dict[int, float] = {}
    for lab in labs:
        inter = n_b.get(lab, 0)
        union = n_p.get(lab, 0) + n_t.get(lab, 0) - inter
        out[lab] = float("nan") if union == 0 else inter / union
    return out


def mean_dice(pred: ArrayLike, target: ArrayLike, labels: Iterable[int] | None = None) -> float:
    """Mean of :func:`dice` over labels, NaN labels (absent from both maps) skipped.

    Returns:
        The mean Dice in ``[0, 1]``, or NaN when no label has a defined Dice.
    """
    return nanmean(dice(pred, target, labels).values())


def mean_jaccard(pred: ArrayLike, target: ArrayLike, labels: Iterable[int] | None = None) -> float:
    """Mean of :func:`jaccard` over labels, NaN labels (absent from both maps) skipped.

    Returns:
        The mean Jaccard index in ``[0, 1]``, or NaN when no label has a defined value.
    """
    return nanmean(jaccard(pred, target, labels).values())
