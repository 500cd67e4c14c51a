"""Image similarity losses (lower is better), 2-D and 3-D, batched, differentiable."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from medistill.errors import InputError
from medistill.kernels import box_mean


def _check_pair(fn: str, a: Tensor, b: Tensor) -> None:
    if a.shape != b.shape:
        raise InputError(f"{fn}(): inputs differ in shape, {tuple(a.shape)} vs {tuple(b.shape)}")
    if a.dim() not in (4, 5):
        raise InputError(f"{fn}(): expected (B, C, *S) with 2 or 3 spatial axes, got {a.dim()}-D")


def correlation_loss(fixed: Tensor, warped: Tensor, eps: float = 1e-6) -> Tensor:
    """``1 - Pearson correlation`` over each whole volume, averaged over the batch (RCN / LDR).

    Args:
        fixed, warped: ``(B, C, *S)`` images.

    Returns:
        Scalar in [0, 2]; 0 for images related by a positive affine intensity map.
    """
    _check_pair("correlation_loss", fixed, warped)
    a = fixed.flatten(1).float()
    b = warped.flatten(1).float()
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    corr = (a * b).sum(1) / torch.sqrt((a * a).sum(1) * (b * b).sum(1) + eps)
    return (1 - corr).mean()


def lncc_loss(fixed: Tensor, warped: Tensor, window: int = 9, eps: float = 1e-5) -> Tensor:
    """``1 - mean local squared normalised cross-correlation`` in ``window``-voxel boxes.

    The VoxelMorph form: ``cc = cov^2 / (var_f var_w)`` per voxel from box sums (zero padding).
    Returns a scalar in [0, 1].
    """
    _check_pair("lncc_loss", fixed, warped)
    ndim = fixed.dim() - 2
    pool = F.avg_pool3d if ndim == 3 else F.avg_pool2d
    a, b = fixed.float(), warped.float()

    def mean(x: Tensor) -> Tensor:
        if window % 2:  # separable box sums: much faster than 3-D average pooling on a CPU
            return box_mean(x, window, include_pad=True)
        return pool(x, window, stride=1, padding=window // 2, count_include_pad=True)

    mu_a, mu_b = mean(a), mean(b)
    cov = mean(a * b) - mu_a * mu_b
    var_a = (mean(a * a) - mu_a**2).clamp_min(0)
    var_b = (mean(b * b) - mu_b**2).clamp_min(0)
    cc = cov * cov / (var_a * var_b + eps)
    return 1 - cc.mean()
