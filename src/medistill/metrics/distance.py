"""Distances: 95th-percentile Hausdorff distance of label maps, landmark registration error.

HD95 definition used (MONAI's ``compute_hausdorff_distance(percentile=95)``, checked against its
source, MONAI 1.6):

- the surface of a binary mask is the set of its voxels that have at least one face neighbour
  (6-neighbourhood in 3-D, 4 in 2-D) outside the mask or outside the grid (mask XOR its binary
  erosion);
- for every surface voxel of ``pred`` the exact Euclidean distance to the nearest surface voxel of
  ``target`` (voxel centres, each axis scaled by ``spacing``), and the same from ``target`` to
  ``pred``;
- HD95 = max(P95(pred -> target), P95(target -> pred)): the larger of the two *directed* 95th
  percentiles, each with linear interpolation between order statistics (``torch.quantile``).

This is the definition of the Learn2Reg evaluation (DeepMind ``surface_distance``
``compute_robust_hausdorff``: max of the two directed percentiles) except that DeepMind weights
each surface element by its area and takes the nearest-rank percentile; it is not MedPy's
``hd95``, which takes one percentile of the pooled distances of both directions. Distances are
computed in float32 by MONAI (relative error about 1e-7).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from medistill.errors import InputError
from medistill.metrics._checks import (
    check_same_shape,
    check_spacing,
    nanmean,
    resolve_labels,
    to_label_array,
    to_numpy,
)
from medistill.typing import ArrayLike

__all__ = ["hd95", "mean_hd95", "tre", "mean_tre"]


def _hd95_binary(p: np.ndarray, t: np.ndarray, spacing: np.ndarray | None) -> float:
    """HD95 of two non-empty boolean masks of shape ``(*S)`` via MONAI."""
    from monai.metrics import compute_hausdorff_distance

    y_pred = torch.from_numpy(np.ascontiguousarray(p))[None, None]
    y = torch.from_numpy(np.ascontiguousarray(t))[None, None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = compute_hausdorff_distance(
            y_pred,
            y,
            include_background=True,
            distance_metric="euclidean",
            percentile=95,
            directed=False,
            spacing=None if spacing is None else spacing.tolist(),
        )
    return float(value.reshape(-1)[0])


def hd95(
    pred: ArrayLike,
    target: ArrayLike,
    labels: Iterable[int] | None = None,
    spacing: Sequence[float] | None = None,
) -> dict[int, float]:
    """95th-percentile symmetric Hausdorff distance per label (definition: see the module doc).

    Args:
        pred: predicted (e.g. warped moving) label map, shape ``(H, W)`` or ``(D, H, W)``,
            integer or integer-valued float (numpy array or torch tensor).
        target: reference label map, same shape.
        labels: label values to evaluate; default: the non-zero values present in ``target``.
        spacing: voxel size along each array axis (mm), one value per axis. ``None``: distances
            in voxels.

    Returns:
        ``{label: hd95}`` in voxels (``spacing=None``) or mm. NaN for a label absent from both
        maps; ``inf`` for a label present in exactly one of them.

    Raises:
        InputError: on shape mismatch, non-integer labels, a map that is not 2-D or 3-D, or a
            bad ``spacing``.
    """
    fn = "hd95"
    p = to_label_array(pred, fn, "pred")
    t = to_label_array(target, fn, "target")
    check_same_shape(p, t, fn, "pred", "target")
    if p.ndim not in (2, 3):
        raise InputError(f"{fn}: pred must be a 2-D or 3-D label map, got shape {tuple(p.shape)}")
    sp = check_spacing(spacing, p.ndim, fn)
    out: dict[int, float] = {}
    for lab in resolve_labels(labels, t, fn):
        pm = p == lab
        tm = t == lab
        has_p, has_t = bool(pm.any()), bool(tm.any())
        if not has_p and not has_t:
            out[lab] = float("nan")
        elif not (has_p and has_t):
            out[lab] = float("inf")
        else:
            out[lab] = _hd95_binary(pm, tm, sp)
    return out


def mean_hd95(
    pred: ArrayLike,
    target: ArrayLike,
    labels: Iterable[int] | None = None,
    spacing: Sequence[float] | None = None,
    *,
    finite_only: bool = False,
) -> float:
    """Mean of :func:`hd95` over labels.

    NaN labels (absent from both maps) are skipped; an ``inf`` label (present in only one map)
    makes the mean ``inf``, or is skipped too with ``finite_only`` (the convention of the
    evaluation summaries). NaN when no label is defined.
    """
    values = hd95(pred, target, labels, spacing).values()
    if finite_only:
        values = [v for v in values if np.isfinite(v)]
    return nanmean(values)


def tre(
    fixed_points: ArrayLike,
    mapped_points: ArrayLike,
    spacing: Sequence[float] | None = None,
    affine: ArrayLike | None = None,
) -> np.ndarray:
    """Per-landmark target registration error (Euclidean distance).

    Both point sets are in voxel coordinates of the same (fixed) grid, e.g. the fixed landmarks
    and the moving landmarks mapped into the fixed grid (or, equivalently for the metric, fixed
    landmarks mapped by the deformation and the moving landmarks). The difference vector is
    converted to mm with ``spacing`` (per-axis scaling) or with the linear part of a voxel-to-world
    ``affine`` (its translation cancels); with neither, the distance is in voxels.

    A landmark with any coordinate equal to -1 in either set (the RCN data convention for a
    missing landmark) gets NaN.

    Args:
        fixed_points: ``(N, ndim)`` voxel coordinates.
        mapped_points: ``(N, ndim)`` voxel coordinates.
        spacing: voxel size along each axis in mm (``ndim`` values).
        affine: voxel-to-world matrix, ``(ndim + 1, ndim + 1)`` or ``(4, 4)`` (NIfTI; for 2-D
            points its upper-left ``2 x 2`` block is used). Not together with ``spacing``.

    Returns:
        ``(N,)`` float64 distances (mm when ``spacing`` or ``affine`` is given, else voxels),
        NaN for missing landmarks.

    Raises:
        InputError: on bad shapes, or when both ``spacing`` and ``affine`` are given.
    """
    fn = "tre"
    f = to_numpy(fixed_points, fn, "fixed_points")
    m = to_numpy(mapped_points, fn, "mapped_points")
    if f.ndim != 2:
        raise InputError(f"{fn}: fixed_points must have shape (N, ndim), got {tuple(f.shape)}")
    check_same_shape(m, f, fn, "mapped_points", "fixed_points")
    ndim = f.shape[1]
    if spacing is not None and affine is not None:
        raise InputError(f"{fn}: give spacing or affine, not both")
    diff = m - f
    if affine is not None:
        a = to_numpy(affine, fn, "affine")
        if a.ndim != 2 or a.shape[0] != a.shape[1] or a.shape[0] < ndim + 1:
            raise InputError(
                f"{fn}: affine must be a square ({ndim + 1}, {ndim + 1}) or (4, 4) matrix, "
                f"got {tuple(a.shape)}"
            )
        diff = diff @ a[:ndim, :ndim].T
    else:
        sp = check_spacing(spacing, ndim, fn)
        if sp is not None:
            diff = diff * sp
    dist = np.sqrt(np.sum(diff * diff, axis=1))
    missing = np.any(f == -1, axis=1) | np.any(m == -1, axis=1)
    dist[missing] = np.nan
    return dist


def mean_tre(
    fixed_points: ArrayLike,
    mapped_points: ArrayLike,
    spacing: Sequence[float] | None = None,
    affine: ArrayLike | None = None,
) -> float:
    """Mean of :func:`tre` over the landmarks that are not missing; NaN when all are missing."""
    return nanmean(tre(fixed_points, mapped_points, spacing, affine))
