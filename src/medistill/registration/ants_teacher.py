"""ANTs (antspyx) as a teacher: SyN fields on working-grid pairs, for the teacher-flow cache.

Optional: ``pip install 'medistill[ants]'``. Each pair is registered by ``ants.registration``
(``type_of_transform``, antspyx's defaults otherwise) on images with unit spacing, zero origin and
identity direction, so ANTs' physical points are voxel indices of the working grid. The dense
displacement is read back exactly by pushing the three voxel-index images through the forward
transforms (``ants.apply_transforms``, linear): at fixed voxel ``x`` they give the moving voxel
``T(x)``, so ``u(x) = T(x) - x`` (the project's convention, ``warped(x) = moving(x + u(x))``).
Voxels that ANTs maps outside the grid get ``u = 0``.
"""

from __future__ import annotations

import tempfile

import numpy as np
import torch
from torch import Tensor

from medistill.errors import InputError

__all__ = ["ants_fields", "require_ants"]

_OUTSIDE = -1.0e4


def require_ants():
    """The ``ants`` module, or one clear error naming the extra to install."""
    try:
        import ants
    except ImportError as err:
        raise InputError(
            "distill.teacher 'ants' needs antspyx, which is not installed: "
            "pip install 'medistill[ants]'"
        ) from err
    return ants


def ants_fields(fixed: Tensor, moving: Tensor, *, transform: str = "SyN") -> Tensor:
    """ANTs' displacement for each pair of the batch.

    Args:
        fixed, moving: ``(B, 1, D, H, W)`` images on one working grid.
        transform: ``type_of_transform`` of ``ants.registration`` (``SyN``, ``Affine``, ...).

    Returns:
        ``(B, 3, D, H, W)`` float32 displacement in working-grid voxels (CPU).

    Raises:
        InputError: antspyx missing, or images that are not 3-D batches of one channel.
    """
    ants = require_ants()
    if fixed.dim() != 5 or fixed.shape != moving.shape or fixed.shape[1] != 1:
        raise InputError(
            f"ants_fields(): need (B, 1, D, H, W) fixed and moving, got {tuple(fixed.shape)} and "
            f"{tuple(moving.shape)}"
        )
    shape = tuple(int(s) for s in fixed.shape[2:])
    index = np.indices(shape, dtype=np.float32)
    out = np.zeros((fixed.shape[0], 3, *shape), dtype=np.float32)
    for b in range(fixed.shape[0]):
        f = ants.from_numpy(np.ascontiguousarray(fixed[b, 0].cpu().numpy(), dtype=np.float32))
        m = ants.from_numpy(np.ascontiguousarray(moving[b, 0].cpu().numpy(), dtype=np.float32))
        with tempfile.TemporaryDirectory(prefix="medistill_ants_") as tmp:
            reg = ants.registration(f, m, type_of_transform=transform, outprefix=f"{tmp}/")
            for k in range(3):
                coord = ants.from_numpy(np.ascontiguousarray(index[k]))
                mapped = ants.apply_transforms(
                    f,
                    coord,
                    reg["fwdtransforms"],
                    interpolator="linear",
                    defaultvalue=_OUTSIDE,
                ).numpy()
                disp = mapped - index[k]
                disp[mapped <= _OUTSIDE / 2] = 0.0
                out[b, k] = disp
    return torch.from_numpy(out)
