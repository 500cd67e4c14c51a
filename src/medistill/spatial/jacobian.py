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
    return torch.stack(_gradients("spatial_gradient", disp), dim=2)


def _gradients(fn: str, disp: Tensor) -> tuple[Tensor, ...]:
    """``grads[j][:, k] = d u_k / d x_j``, each ``(B, ndim, *S)`` (no stacked copy)."""
    check_field(fn, "disp", disp)
    nd = disp.dim() - 2
    if any(s < 2 for s in disp.shape[2:]):
        raise InputError(
            f"{fn}(): every spatial size of 'disp' must be >= 2, got {tuple(disp.shape)}"
        )
    return torch.gradient(disp, dim=tuple(range(2, 2 + nd)), edge_order=1)


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
    grads = _gradients("jacobian_det", disp)
    nd = disp.dim() - 2
    # J[r][c] = d(x + u)_r / d x_c; the diagonal gets +1 in place (the gradients are our own)
    jac = [[grads[c][:, r] for c in range(nd)] for r in range(nd)]
    for r in range(nd):
        jac[r][r] += 1.0
    if nd == 2:
        det = jac[0][0] * jac[1][1]
        det -= jac[0][1] * jac[1][0]
    else:
        det = jac[1][1] * jac[2][2]
        det -= jac[1][2] * jac[2][1]
        det *= jac[0][0]
        minor = jac[1][0] * jac[2][2]
        minor -= jac[1][2] * jac[2][0]
        minor *= jac[0][1]
        det -= minor
        minor = jac[1][0] * jac[2][1]
        minor -= jac[1][1] * jac[2][0]
        minor *= jac[0][2]
        det += minor
    return det.unsqueeze(1)
