"""Dense voxel displacement fields of affine maps."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from medistill.errors import InputError
from medistill.spatial.grid import identity_grid

__all__ = ["affine_to_disp", "rotation_matrix"]


def affine_to_disp(matrix: Tensor, shape: Sequence[int], center: bool = True) -> Tensor:
    """Displacement field of an affine map given in voxel units.

    The map sends an output-grid voxel ``x`` to the input-grid (moving) position::

        target(x) = A (x - c) + t + c,      u(x) = target(x) - x

    with ``c = (shape - 1) / 2`` (the grid centre) when ``center=True`` and ``c = 0`` (voxel
    ``0``) otherwise. Hence the centre voxel maps to ``c + t`` when ``center=True``, and the
    identity is ``A = I, t = 0``. ``warp(m, affine_to_disp(M, S))`` resamples ``m`` through
    the affine map.

    Args:
        matrix: ``(B, ndim, ndim + 1)`` = ``[A | t]`` (or unbatched ``(ndim, ndim + 1)``),
            rows/columns in spatial-axis order, ``t`` in voxels.
        shape: spatial size ``(D, H, W)`` or ``(H, W)`` of the output grid; ``ndim`` entries.
        center: take coordinates relative to the grid centre (default) or to voxel 0.

    Returns:
        ``(B, ndim, *shape)`` displacement in voxels, dtype and device of ``matrix``.

    Raises:
        InputError: if ``matrix`` is not ``(B, ndim, ndim + 1)`` with ``ndim == len(shape)``.
    """
    if not isinstance(matrix, Tensor) or matrix.dim() not in (2, 3):
        raise InputError(
            "affine_to_disp(): 'matrix' must be a (B, ndim, ndim + 1) tensor, got "
            f"{tuple(matrix.shape) if isinstance(matrix, Tensor) else type(matrix).__name__}"
        )
    mat = matrix if matrix.dim() == 3 else matrix.unsqueeze(0)
    nd = len(shape)
    if tuple(mat.shape[1:]) != (nd, nd + 1) or nd not in (2, 3):
        raise InputError(
            f"affine_to_disp(): 'matrix' must be (B, {nd}, {nd + 1}) for shape {tuple(shape)}, "
            f"got {tuple(matrix.shape)}"
        )
    dtype = mat.dtype if mat.is_floating_point() else torch.get_default_dtype()
    mat = mat.to(dtype)
    grid = identity_grid(shape, dtype=dtype, device=mat.device)  # (nd, *S)
    ctr = torch.zeros(nd, dtype=dtype, device=mat.device)
    if center:
        ctr = ctr + torch.tensor([(s - 1) / 2.0 for s in shape], dtype=dtype, device=mat.device)
    view = (nd,) + (1,) * nd
    rel = grid - ctr.view(view)
    lin, trans = mat[:, :, :nd], mat[:, :, nd]
    target = torch.einsum("bij,j...->bi...", lin, rel)
    target = target + (trans + ctr).view(mat.shape[0], *view)
    return target - grid


def rotation_matrix(rotvec: Tensor) -> Tensor:
    """Rotation matrices from rotation vectors (the exponential of their skew matrices).

    Args:
        rotvec: ``(B, 3)`` axis times angle (radians, right-handed) for 3-D rotations, or
            ``(B, 1)`` angles for 2-D ones (from axis 0 towards axis 1).

    Returns:
        ``(B, 3, 3)`` or ``(B, 2, 2)`` rotation matrices; differentiable.

    Raises:
        InputError: on another shape.
    """
    if not isinstance(rotvec, Tensor) or rotvec.dim() != 2 or rotvec.shape[1] not in (1, 3):
        raise InputError(
            "rotation_matrix(): 'rotvec' must be (B, 3) or (B, 1), got "
            f"{tuple(rotvec.shape) if isinstance(rotvec, Tensor) else type(rotvec).__name__}"
        )
    nd = 3 if rotvec.shape[1] == 3 else 2
    skew = rotvec.new_zeros(rotvec.shape[0], nd, nd)
    if nd == 3:
        wx, wy, wz = rotvec.unbind(1)
        skew[:, 0, 1], skew[:, 0, 2], skew[:, 1, 2] = -wz, wy, -wx
    else:
        skew[:, 0, 1] = -rotvec[:, 0]
    return torch.linalg.matrix_exp(skew - skew.transpose(1, 2))
