"""Regularisation and distillation losses on displacement fields ``(B, ndim, *S)`` in voxels."""

from __future__ import annotations

from torch import Tensor

from medistill.errors import InputError


def _check_field(fn: str, disp: Tensor) -> int:
    ndim = disp.dim() - 2
    if ndim not in (2, 3) or disp.shape[1] != ndim:
        raise InputError(f"{fn}(): expected a field (B, ndim, *S), got {tuple(disp.shape)}")
    return ndim


def smoothness_loss(disp: Tensor) -> Tensor:
    """Mean squared forward differences of each component along each axis (voxel units).

    RCN applies it to each cascade's own increment. Zero for any constant field.
    """
    ndim = _check_field("smoothness_loss", disp)
    total = disp.new_zeros(())
    for axis in range(2, 2 + ndim):
        total = total + disp.diff(dim=axis).float().square().mean()
    return total / ndim


def flow_l1_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean absolute difference (voxels) between student and teacher fields: plain distillation."""
    _check_field("flow_l1_loss", student)
    if student.shape != teacher.shape:
        raise InputError(
            f"flow_l1_loss(): fields differ in shape, "
            f"{tuple(student.shape)} vs {tuple(teacher.shape)}"
        )
    return (student.float() - teacher.float()).abs().mean()
