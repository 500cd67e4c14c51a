"""Spatial derivatives and Jacobian determinants of voxel displacement fields."""

from __future__ import annotations

import torch
from torch import Tensor

from medistill.errors import InputError
from medistill.spatial._checks import check_field

__all__ = ["jacobian_det", "spatial_gradient"]


def spatial_gradient(disp: Tensor) -> Tensor:
    """Derivatives of every displacement component along every spatial axis.

    Central differences ``(u[i+1] - u[i-1]) / 2`` in the interior and one-sided differences at
    the border (:func:`torch.gradient` with unit spacing, ``edge_order=1``); exact for fields
    that are linear in the voxel coordinates.

    Args:
        disp: ``(B, ndim, *S)`` displacement in voxels, every spatial size ``>= 2``.

    Returns:
        ``(B, ndim, ndim, *S)`` with ``[:, k, j] = d u_k / d x_j`` (dimensionless,
        voxels per voxel).

    Raises:
        InputError: on a wrong shape or a spatial size below 2.
    """
    check_field("spatial_gradient", "disp", disp)
    nd = disp.dim() - 2
    if any(s < 2 for s in disp.shape[2:]):
        raise InputError(
            f"spatial_gradient(): every spatial size of 'disp' must be >= 2, got "
            f"{tuple(disp.shape)}"
        )
    grads = torch.gradient(disp, dim=tuple(range(2, 2 + nd)), edge_order=1)
    return torch.stack(grads, dim=2)


def jacobian_det(disp: Tensor) -> Tensor:
    """Determinant of the Jacobian of the map ``x -> x + u(x)``.

    ``J = I + grad u`` with :func:`spatial_gradient` (central differences inside, one-sided at
    the border). Values ``<= 0`` mark folding; an affine field gives ``det(A)`` everywhere.

    Args:
        disp: ``(B, ndim, *S)`` displacement in voxels (2-D or 3-D), spatial sizes ``>= 2``.

    Returns:
        ``(B, 1, *S)`` determinant per voxel (dtype of ``disp``).

    Raises:
        InputError: on a wrong shape or a spatial size below 2.
    """
    g = spatial_gradient(disp)
    nd = disp.dim() - 2

    def j(r: int, c: int) -> Tensor:
        return g[:, r, c] + 1.0 if r == c else g[:, r, c]

    if nd == 2:
        det = j(0, 0) * j(1, 1) - j(0, 1) * j(1, 0)
    else:
        det = (
            j(0, 0) * (j(1, 1) * j(2, 2) - j(1, 2) * j(2, 1))
            - j(0, 1) * (j(1, 0) * j(2, 2) - j(1, 2) * j(2, 0))
            + j(0, 2) * (j(1, 0) * j(2, 1) - j(1, 1) * j(2, 0))
        )
    return det.unsqueeze(1)
