"""Resampling displacement fields onto grids of another size (same extent)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from medistill.errors import InputError
from medistill.spatial._checks import check_field

__all__ = ["resize_disp", "upsample_disp"]


def resize_disp(disp: Tensor, shape: Sequence[int]) -> Tensor:
    """Resample a voxel displacement field onto a grid of another size covering the same extent.

    Both grids span the same physical extent with ``align_corners=True`` semantics: the first
    and last voxel centres coincide, so old voxel coordinate ``x_k`` is new coordinate
    ``x_k * (new_k - 1) / (old_k - 1)``. The field is linearly interpolated onto the new grid
    (exact for fields linear in the coordinates) and channel ``k`` is multiplied by
    ``(new_k - 1) / (old_k - 1)`` so that it stays a displacement in the *new* voxel units:
    a point that maps to ``p`` keeps mapping to (the new coordinates of) ``p``.

    Args:
        disp: ``(B, ndim, *S)`` displacement in voxels of the old grid, every size ``>= 2``.
        shape: new spatial size, ``ndim`` entries, every size ``>= 2``.

    Returns:
        ``(B, ndim, *shape)`` displacement in voxels of the new grid. Differentiable.

    Raises:
        InputError: on a wrong shape or a size below 2.
    """
    check_field("resize_disp", "disp", disp)
    nd = disp.dim() - 2
    old = tuple(int(s) for s in disp.shape[2:])
    new = tuple(int(s) for s in shape)
    if len(new) != nd or any(s < 2 for s in old + new):
        raise InputError(
            f"resize_disp(): need 'shape' of {nd} sizes >= 2 and 'disp' sizes >= 2, got shape "
            f"{tuple(shape)} for disp {tuple(disp.shape)}"
        )
    mode = "bilinear" if nd == 2 else "trilinear"
    out = disp if new == old else F.interpolate(disp, size=new, mode=mode, align_corners=True)
    ratios = [(n - 1) / (o - 1) for n, o in zip(new, old, strict=True)]
    scale = torch.tensor(ratios, dtype=disp.dtype, device=disp.device)
    return out * scale.view(1, nd, *([1] * nd))


def upsample_disp(disp: Tensor, factor: int | Sequence[int] = 2) -> Tensor:
    """Resize a field to ``size * factor`` per axis with :func:`resize_disp`.

    Note the values are scaled by ``(size * factor - 1) / (size - 1)`` (e.g. ``127 / 63`` for
    64 -> 128), not by ``factor``: the grids share their corner voxel centres.

    Args:
        disp: ``(B, ndim, *S)`` displacement in voxels.
        factor: integer factor, one or one per axis.

    Returns:
        ``(B, ndim, *(S * factor))`` displacement in voxels of the new grid.

    Raises:
        InputError: on a wrong shape or factor.
    """
    check_field("upsample_disp", "disp", disp)
    nd = disp.dim() - 2
    factors = [int(factor)] * nd if isinstance(factor, int) else [int(f) for f in factor]
    if len(factors) != nd or any(f < 1 for f in factors):
        raise InputError(
            f"upsample_disp(): 'factor' must be a positive int or {nd} of them, got {factor!r}"
        )
    return resize_disp(disp, [s * f for s, f in zip(disp.shape[2:], factors, strict=True)])
