"""Image and label terms of optimisation registration, one value per pair of the batch.

Every function takes ``(B, C, *S)`` tensors and returns a ``(B,)`` loss (lower is better), so
that pairs optimised together in one batch do not influence each other.
"""

from __future__ import annotations

import torch
from torch import Tensor

from medistill.errors import InputError
from medistill.kernels import box_mean

__all__ = ["LocalNCC", "image_loss", "lncc", "mse", "mutual_information", "ncc", "soft_dice"]


def ncc(fixed: Tensor, warped: Tensor, eps: float = 1e-6) -> Tensor:
    """``1 - Pearson correlation`` over each whole image: ``(B,)`` in [0, 2]."""
    a = fixed.flatten(1)
    b = warped.flatten(1)
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return 1 - (a * b).sum(1) / torch.sqrt((a * a).sum(1) * (b * b).sum(1) + eps)


def _box(x: Tensor, window: int) -> Tensor:
    """Mean over ``window``-voxel boxes (zero padding not counted)."""
    return box_mean(x, window, include_pad=False)


class LocalNCC:
    """``1 - mean local squared correlation`` against one fixed image: ``(B,)`` in [0, 1].

    The fixed image's box means and variances are computed once (they do not change while the
    moving image is warped); each call needs three box filters of the warped image.
    """

    def __init__(self, fixed: Tensor, window: int = 3, eps: float = 1e-5) -> None:
        self.fixed, self.window, self.eps = fixed, int(window), eps
        self.mu_f = _box(fixed, self.window)
        self.var_f = (_box(fixed * fixed, self.window) - self.mu_f * self.mu_f).clamp_min(0)

    def __call__(self, warped: Tensor) -> Tensor:
        w = self.window
        mu_w = _box(warped, w)
        cov = _box(self.fixed * warped, w) - self.mu_f * mu_w
        var_w = (_box(warped * warped, w) - mu_w * mu_w).clamp_min(0)
        cc = cov * cov / (self.var_f * var_w + self.eps)
        return 1 - cc.flatten(1).mean(1)


def lncc(fixed: Tensor, warped: Tensor, window: int = 3, eps: float = 1e-5) -> Tensor:
    """``1 - mean local squared correlation`` in ``window``-voxel boxes: ``(B,)`` in [0, 1]."""
    return LocalNCC(fixed, window, eps)(warped)


def mse(fixed: Tensor, warped: Tensor) -> Tensor:
    """Mean squared intensity difference: ``(B,)``."""
    return (fixed - warped).pow(2).flatten(1).mean(1)


def mutual_information(
    fixed: Tensor, warped: Tensor, bins: int = 32, max_voxels: int = 32768
) -> Tensor:
    """Negative normalised mutual information with Parzen (Gaussian) windows: ``(B,)``.

    Intensities are expected in [0, 1]. Returns ``-(H(f) + H(w)) / H(f, w)`` shifted by 2 so
    that it lies in [0, 1] (0: one image is a function of the other). A fixed, evenly spaced
    subset of at most ``max_voxels`` voxels is used (deterministic).
    """
    a = fixed.flatten(1)
    b = warped.flatten(1)
    step = max(1, a.shape[1] // max_voxels)
    a, b = a[:, ::step], b[:, ::step]
    centres = torch.linspace(0, 1, bins, dtype=a.dtype, device=a.device)
    sigma = 1.0 / (bins - 1)

    def weights(x: Tensor) -> Tensor:  # (B, N, bins), rows sum to 1
        w = torch.exp(-0.5 * ((x.clamp(0, 1)[..., None] - centres) / sigma) ** 2)
        return w / (w.sum(-1, keepdim=True) + 1e-12)

    wa, wb = weights(a), weights(b)
    joint = torch.einsum("bni,bnj->bij", wa, wb) / a.shape[1]
    pa, pb = joint.sum(2), joint.sum(1)

    def entropy(p: Tensor) -> Tensor:
        return -(p * torch.log(p + 1e-10)).flatten(1).sum(1)

    nmi = (entropy(pa) + entropy(pb)) / (entropy(joint) + 1e-10)
    return 2 - nmi


def soft_dice(fixed_onehot: Tensor, warped_onehot: Tensor, eps: float = 1e-5) -> Tensor:
    """``1 - mean soft Dice`` over the label channels present in the fixed map: ``(B,)``."""
    dims = tuple(range(2, fixed_onehot.dim()))
    inter = (fixed_onehot * warped_onehot).sum(dims)
    total = fixed_onehot.sum(dims) + warped_onehot.sum(dims)
    present = (fixed_onehot.sum(dims) > 0).to(fixed_onehot.dtype)
    dice = (2 * inter + eps) / (total + eps)
    return 1 - (dice * present).sum(1) / present.sum(1).clamp_min(1)


def image_loss(
    name: str, fixed: Tensor, warped: Tensor, *, window: int = 3, bins: int = 32
) -> Tensor:
    """The image term ``name`` (``ncc``, ``lncc``, ``mse`` or ``mi``): ``(B,)``."""
    if name == "ncc":
        return ncc(fixed, warped)
    if name == "lncc":
        return lncc(fixed, warped, window)
    if name == "mse":
        return mse(fixed, warped)
    if name == "mi":
        return mutual_information(fixed, warped, bins)
    raise InputError(f"similarity must be ncc, lncc, mse or mi, got {name!r}")
