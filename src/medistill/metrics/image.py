"""Image-quality metrics for reconstruction: PSNR, SSIM (whole array and fastMRI per slice), NMSE.

Conventions follow fastMRI's evaluation (``fastmri/evaluate.py``) and scikit-image:
``data_range`` defaults to ``target.max()`` (the maximum of the reference volume), SSIM uses a
uniform ``7 x 7`` (``7^3`` in 3-D) window, K1 = 0.01, K2 = 0.03, sample covariance, and averages
the SSIM map over the region left after cropping ``(win_size - 1) // 2`` voxels from each border
(``skimage.metrics.structural_similarity`` with ``data_range`` given and ``win_size=7``). All
arithmetic is float64.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from medistill.errors import InputError
from medistill.metrics._checks import check_same_shape, to_numpy
from medistill.typing import ArrayLike

__all__ = ["psnr", "ssim", "ssim_slices", "nmse"]


def _pair(pred: ArrayLike, target: ArrayLike, fn: str) -> tuple[np.ndarray, np.ndarray]:
    p = to_numpy(pred, fn, "pred")
    t = to_numpy(target, fn, "target")
    check_same_shape(p, t, fn, "pred", "target")
    if p.size == 0:
        raise InputError(f"{fn}: pred and target are empty")
    return p, t


def _data_range(data_range: float | None, target: np.ndarray, fn: str) -> float:
    r = float(target.max()) if data_range is None else float(data_range)
    if not np.isfinite(r) or r <= 0:
        src = "target.max()" if data_range is None else "data_range"
        raise InputError(f"{fn}: {src} must be positive and finite, got {r}")
    return r


def psnr(pred: ArrayLike, target: ArrayLike, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio, ``10 log10(data_range^2 / mean((target - pred)^2))`` in dB.

    Args:
        pred: reconstruction, any shape.
        target: reference, same shape.
        data_range: peak value; default ``target.max()`` (fastMRI convention).

    Returns:
        PSNR in dB; ``inf`` when the images are identical.

    Raises:
        InputError: on shape mismatch or a non-positive ``data_range``.
    """
    fn = "psnr"
    p, t = _pair(pred, target, fn)
    r = _data_range(data_range, t, fn)
    mse = float(np.mean((t - p) ** 2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(r * r / mse))


def ssim(
    pred: ArrayLike,
    target: ArrayLike,
    data_range: float | None = None,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Mean structural similarity of a 2-D or 3-D image pair (scikit-image's definition).

    Local means, variances and covariance over a uniform ``win_size^ndim`` window (sample
    covariance, factor ``N / (N - 1)``), ``C1 = (k1 R)^2``, ``C2 = (k2 R)^2``; the SSIM map is
    averaged after cropping ``(win_size - 1) // 2`` voxels at each border. Equals
    ``skimage.metrics.structural_similarity(target, pred, data_range=R, win_size=win_size)``.
    A 3-D array is treated as one volume (3-D window); for fastMRI's per-slice SSIM use
    :func:`ssim_slices`.

    Args:
        pred: reconstruction, ``(H, W)`` or ``(D, H, W)``.
        target: reference, same shape.
        data_range: ``R``; default ``target.max()``.
        win_size: odd window side, at most the smallest image side.
        k1: constant of the luminance term.
        k2: constant of the contrast-structure term.

    Returns:
        Mean SSIM (at most 1).

    Raises:
        InputError: on shape mismatch, wrong dimensionality, bad window or data range.
    """
    fn = "ssim"
    p, t = _pair(pred, target, fn)
    if p.ndim not in (2, 3):
        raise InputError(f"{fn}: pred must be a 2-D or 3-D image, got shape {tuple(p.shape)}")
    r = _data_range(data_range, t, fn)
    return _ssim(p, t, r, win_size, k1, k2, fn)


def _ssim(
    p: np.ndarray, t: np.ndarray, r: float, win_size: int, k1: float, k2: float, fn: str
) -> float:
    if int(win_size) != win_size or win_size < 1 or win_size % 2 != 1:
        raise InputError(f"{fn}: win_size must be an odd positive integer, got {win_size}")
    win_size = int(win_size)
    if min(p.shape) < win_size:
        raise InputError(f"{fn}: win_size {win_size} exceeds the image extent {tuple(p.shape)}")
    if k1 < 0 or k2 < 0:
        raise InputError(f"{fn}: k1 and k2 must be non-negative, got {k1}, {k2}")

    def box(x: np.ndarray) -> np.ndarray:
        return ndimage.uniform_filter(x, size=win_size, mode="reflect")

    n = win_size**p.ndim
    cov_norm = n / (n - 1) if n > 1 else 1.0
    mu_p, mu_t = box(p), box(t)
    var_p = cov_norm * (box(p * p) - mu_p * mu_p)
    var_t = cov_norm * (box(t * t) - mu_t * mu_t)
    cov = cov_norm * (box(p * t) - mu_p * mu_t)
    c1 = (k1 * r) ** 2
    c2 = (k2 * r) ** 2
    num = (2.0 * mu_p * mu_t + c1) * (2.0 * cov + c2)
    den = (mu_p * mu_p + mu_t * mu_t + c1) * (var_p + var_t + c2)
    s = num / den
    pad = (win_size - 1) // 2
    inner = tuple(slice(pad, dim - pad) for dim in s.shape)
    return float(s[inner].mean())


def ssim_slices(pred: ArrayLike, target: ArrayLike, data_range: float | None = None) -> float:
    """fastMRI SSIM of a volume: mean over slices of the 2-D SSIM of each ``(H, W)`` slice.

    ``data_range`` is shared by all slices and defaults to the maximum of the whole ``target``
    volume (fastMRI ``evaluate.ssim``), window 7, K1 0.01, K2 0.03.

    Args:
        pred: reconstruction, ``(S, H, W)`` (a single ``(H, W)`` image is taken as one slice).
        target: reference, same shape.
        data_range: default ``target.max()`` over the volume.

    Returns:
        Mean of the per-slice SSIM values.

    Raises:
        InputError: on shape mismatch or wrong dimensionality.
    """
    fn = "ssim_slices"
    p, t = _pair(pred, target, fn)
    if p.ndim == 2:
        p, t = p[None], t[None]
    if p.ndim != 3:
        raise InputError(f"{fn}: pred must be (S, H, W), got shape {tuple(p.shape)}")
    r = _data_range(data_range, t, fn)
    values = [_ssim(p[i], t[i], r, 7, 0.01, 0.03, fn) for i in range(p.shape[0])]
    return float(np.mean(values))


def nmse(pred: ArrayLike, target: ArrayLike) -> float:
    """Normalised mean squared error, ``||target - pred||^2 / ||target||^2`` (fastMRI).

    Args:
        pred: reconstruction, any shape.
        target: reference, same shape, not all zero.

    Returns:
        NMSE (dimensionless, 0 for a perfect reconstruction).

    Raises:
        InputError: on shape mismatch or an all-zero target.
    """
    fn = "nmse"
    p, t = _pair(pred, target, fn)
    denom = float(np.sum(t * t))
    if denom == 0.0:
        raise InputError(f"{fn}: target is all zero, NMSE is undefined")
    return float(np.sum((t - p) ** 2) / denom)
