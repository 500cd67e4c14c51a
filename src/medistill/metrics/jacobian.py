"""Regularity of a deformation from its Jacobian determinant: folding fraction and SDlogJ.

``jac_det`` arguments are determinant maps, shape ``(*S)`` (``(H, W)`` or ``(D, H, W)``) or
batched ``(1, 1, *S)`` as returned by ``medistill.spatial.jacobian_det`` for one pair. Batches
of more than one sample are refused: compute the metric per pair, then summarise.

``mask`` arguments select the voxels to evaluate (non-zero = inside), shape ``(*S)`` or
``(1, 1, *S)``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medistill.errors import InputError
from medistill.metrics._checks import to_numpy
from medistill.typing import ArrayLike

__all__ = [
    "folding_fraction",
    "sdlogj",
    "jacobian_det_l2r",
    "sdlogj_l2r",
]

_CLIP_LO = 1e-9
_CLIP_HI = 1e9


def _spatial(x: ArrayLike, fn: str, name: str) -> np.ndarray:
    """``(*S)`` or ``(1, 1, *S)`` -> float64 ``(*S)`` with ``S`` 2-D or 3-D."""
    a = to_numpy(x, fn, name)
    if a.ndim in (4, 5):
        if a.shape[0] != 1 or a.shape[1] != 1:
            raise InputError(
                f"{fn}: {name} must be (*S) or (1, 1, *S) for one sample, got {tuple(a.shape)}"
            )
        a = a[0, 0]
    if a.ndim not in (2, 3):
        raise InputError(
            f"{fn}: {name} must be (H, W), (D, H, W) or (1, 1, *S), got {tuple(a.shape)}"
        )
    return a


def _select(values: np.ndarray, mask: ArrayLike | None, fn: str) -> np.ndarray:
    """The values inside ``mask`` (all when None), flattened."""
    if mask is None:
        return values.ravel()
    m = _spatial(mask, fn, "mask")
    if m.shape != values.shape:
        raise InputError(
            f"{fn}: mask has spatial shape {tuple(m.shape)} but the values have "
            f"{tuple(values.shape)}"
        )
    return values[m != 0]


def folding_fraction(jac_det: ArrayLike, mask: ArrayLike | None = None) -> float:
    """Fraction of voxels whose Jacobian determinant is non-positive (folding).

    Args:
        jac_det: determinant map, ``(*S)`` or ``(1, 1, *S)``.
        mask: optional region, same spatial shape; non-zero voxels are counted.

    Returns:
        A fraction in ``[0, 1]`` (callers that report percent multiply by 100); NaN for an empty
        mask.
    """
    fn = "folding_fraction"
    v = _select(_spatial(jac_det, fn, "jac_det"), mask, fn)
    if v.size == 0:
        return float("nan")
    return float(np.count_nonzero(v <= 0) / v.size)


def sdlogj(jac_det: ArrayLike, mask: ArrayLike | None = None) -> float:
    """Standard deviation of the log Jacobian determinant (textbook definition).

    ``std(log(clip(det, 1e-9, 1e9)))`` over the voxels (inside ``mask``), population standard
    deviation (``ddof=0``). Non-positive determinants are clipped to ``1e-9`` (log = -20.7), so
    folding makes the value large rather than NaN.

    Args:
        jac_det: determinant map, ``(*S)`` or ``(1, 1, *S)``.
        mask: optional region, same spatial shape; non-zero voxels are used.

    Returns:
        SDlogJ (dimensionless); NaN for an empty mask.
    """
    fn = "sdlogj"
    v = _select(_spatial(jac_det, fn, "jac_det"), mask, fn)
    if v.size == 0:
        return float("nan")
    return float(np.log(np.clip(v, _CLIP_LO, _CLIP_HI)).std())


def _displacement_3d(disp: ArrayLike, fn: str) -> np.ndarray:
    """``(3, D, H, W)`` or ``(1, 3, D, H, W)`` -> float64 ``(3, D, H, W)``."""
    u = to_numpy(disp, fn, "disp")
    if u.ndim == 5:
        if u.shape[0] != 1:
            raise InputError(f"{fn}: disp must hold one sample (1, 3, D, H, W), got {u.shape}")
        u = u[0]
    if u.ndim != 4 or u.shape[0] != 3:
        raise InputError(
            f"{fn}: disp must be (3, D, H, W) or (1, 3, D, H, W), got {tuple(u.shape)}"
        )
    if min(u.shape[1:]) < 5:
        raise InputError(
            f"{fn}: disp must be at least 5 voxels along each axis, got {tuple(u.shape[1:])}"
        )
    return u


def jacobian_det_l2r(disp: ArrayLike) -> np.ndarray:
    """Jacobian determinant of ``x + u(x)`` computed as the Learn2Reg evaluation does.

    Reproduces the arithmetic of ``jacobian_determinant`` in the Learn2Reg evaluation code
    (repository MDL-UzL/L2R, file ``evaluation/utils.py``): every displacement component is
    differentiated along every axis by central differences (correlation with
    ``[-0.5, 0, 0.5]``, zero padding outside the grid), the identity is added, the 3 x 3
    determinant is taken, and a border of 2 voxels is cropped on each side (which removes the
    voxels whose differences saw the zero padding).

    Args:
        disp: displacement in voxels, ``(3, D, H, W)`` or ``(1, 3, D, H, W)``; channel ``k``
            along array axis ``k`` (the project convention, and Learn2Reg's after its
            ``(D, H, W, 3) -> (3, D, H, W)`` transpose).

    Returns:
        ``(D - 4, H - 4, W - 4)`` float64 determinants.
    """
    u = _displacement_3d(disp, "jacobian_det_l2r")
    # g[i][j] = d u_j / d x_i
    g = np.empty((3, 3) + u.shape[1:], dtype=np.float64)
    for i in range(3):
        kernel_shape = [1, 1, 1]
        kernel_shape[i] = 3
        kernel = np.array([-0.5, 0.0, 0.5]).reshape(kernel_shape)
        for j in range(3):
            g[i, j] = ndimage.correlate(u[j], kernel, mode="constant", cval=0.0)
    for k in range(3):
        g[k, k] += 1.0
    j = g[:, :, 2:-2, 2:-2, 2:-2]
    return (
        j[0, 0] * (j[1, 1] * j[2, 2] - j[1, 2] * j[2, 1])
        - j[1, 0] * (j[0, 1] * j[2, 2] - j[0, 2] * j[2, 1])
        + j[2, 0] * (j[0, 1] * j[1, 2] - j[0, 2] * j[1, 1])
    )


def sdlogj_l2r(disp: ArrayLike, mask: ArrayLike | None = None) -> float:
    """SDlogJ as computed by the Learn2Reg evaluation script (not the textbook value).

    Reproduces the arithmetic of the ``sdlogj`` metric in the Learn2Reg evaluation code
    (repository MDL-UzL/L2R, file ``evaluation/evaluation.py``, with ``jacobian_determinant``
    from ``evaluation/utils.py``; see :func:`jacobian_det_l2r`):
    ``std(log(clip(det + 3, 1e-9, 1e9)))`` over the cropped grid, population standard
    deviation. The ``+ 3`` offset makes it differ from :func:`sdlogj` (it is smaller, and
    foldings with ``-3 < det <= 0`` are not clipped); use it only to compare with Learn2Reg
    leaderboard numbers. With ``mask``, the same 2-voxel border is cropped from it and only its
    non-zero voxels are used (the evaluation's masked variant).

    Args:
        disp: displacement in voxels, ``(3, D, H, W)`` or ``(1, 3, D, H, W)``, channel ``k``
            along array axis ``k``. 3-D only, like the reference.
        mask: optional ``(D, H, W)`` or ``(1, 1, D, H, W)`` region on the full grid.

    Returns:
        Learn2Reg's SDlogJ; NaN for an empty mask.
    """
    fn = "sdlogj_l2r"
    det = jacobian_det_l2r(disp)
    log_det = np.log(np.clip(det + 3.0, _CLIP_LO, _CLIP_HI))
    if mask is not None:
        m = _spatial(mask, fn, "mask")
        full = tuple(s + 4 for s in det.shape)
        if m.shape != full:
            raise InputError(
                f"{fn}: mask has shape {tuple(m.shape)} but disp has spatial shape {full}"
            )
        log_det = log_det[m[2:-2, 2:-2, 2:-2] != 0]
    if log_det.size == 0:
        return float("nan")
    return float(log_det.std())
