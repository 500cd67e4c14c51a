"""Smooth displacement fields from uniform cubic B-splines (deterministic and random)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from medistill.errors import InputError
from medistill.spatial._checks import check_field

__all__ = ["bspline_disp", "bspline_weights", "random_smooth_disp"]


def bspline_weights(
    size: int,
    control: int,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Interpolation matrix of a uniform cubic B-spline along one axis.

    The ``control`` points are uniformly spaced; points ``1 .. control - 2`` span the grid (point
    ``1`` at voxel ``0``, point ``control - 2`` at voxel ``size - 1``) and points ``0`` and
    ``control - 1`` lie one knot spacing outside it (the ITK ``BSplineTransform`` layout with a
    mesh of ``control - 3`` intervals). Voxel ``x`` has spline parameter
    ``t = 1 + x (control - 3) / (size - 1)`` and is influenced by the four points around it.

    Args:
        size: number of voxels ``>= 1``.
        control: number of control points ``>= 4``.
        dtype: floating dtype (default: ``torch.get_default_dtype()``).
        device: device of the result.

    Returns:
        ``(size, control)`` non-negative weights; every row sums to 1 (partition of unity).
    """
    if control < 4 or size < 1:
        raise InputError(
            f"bspline_weights(): need control >= 4 and size >= 1, got control={control}, "
            f"size={size}"
        )
    dtype = torch.get_default_dtype() if dtype is None else dtype
    x = torch.arange(size, dtype=torch.float64)
    t = 1.0 + x * (control - 3) / max(size - 1, 1)
    i = t.floor().clamp(max=control - 3)
    u = t - i
    basis = torch.stack(
        [
            (1 - u) ** 3 / 6,
            (3 * u**3 - 6 * u**2 + 4) / 6,
            (-3 * u**3 + 3 * u**2 + 3 * u + 1) / 6,
            u**3 / 6,
        ],
        dim=1,
    )
    weights = torch.zeros(size, control, dtype=torch.float64)
    cols = i.long().unsqueeze(1) + torch.arange(-1, 3).unsqueeze(0)
    weights.scatter_(1, cols, basis)
    return weights.to(dtype=dtype, device=device)


def bspline_disp(control: Tensor, shape: Sequence[int]) -> Tensor:
    """Dense displacement field interpolated from B-spline control-point displacements.

    Separable uniform cubic B-spline with the control layout of :func:`bspline_weights` along
    each axis: the ``G_k`` control points span the grid (the outermost ones one knot spacing
    beyond it). Deterministic and differentiable in ``control``. Because the B-spline weights
    are non-negative and sum to 1, every component of the dense field is bounded by the largest
    absolute control value of that component.

    Args:
        control: ``(B, ndim, *G)`` control-point displacements in voxels of the dense grid,
            ``G_k >= 4``.
        shape: dense spatial size, ``ndim`` entries.

    Returns:
        ``(B, ndim, *shape)`` displacement in voxels (dtype/device of ``control``).

    Raises:
        InputError: on a wrong ``control`` shape or ``len(shape) != ndim``.
    """
    check_field("bspline_disp", "control", control)
    nd = control.dim() - 2
    sizes = tuple(int(s) for s in shape)
    if len(sizes) != nd or any(g < 4 for g in control.shape[2:]) or any(s < 1 for s in sizes):
        raise InputError(
            f"bspline_disp(): need 'control' (B, {nd}, *G) with every G >= 4 and 'shape' of "
            f"{nd} positive sizes, got control {tuple(control.shape)} and shape {tuple(shape)}"
        )
    out = control
    for axis, size in enumerate(sizes):
        g = control.shape[2 + axis]
        w = bspline_weights(size, g, dtype=control.dtype, device=control.device)
        # contract the control axis (2 + axis) with w (size, G) and put the result back in place
        out = torch.tensordot(out, w, dims=([2 + axis], [1])).movedim(-1, 2 + axis)
    return out


def _per_axis(name: str, value: float | Sequence[float], nd: int) -> list[float]:
    vals = [float(value)] * nd if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(vals) != nd:
        raise InputError(
            f"random_smooth_disp(): '{name}' must be a number or {nd} numbers, got {value!r}"
        )
    return vals


def random_smooth_disp(
    shape: Sequence[int],
    *,
    batch: int = 1,
    control_points: int | Sequence[int] = 5,
    max_disp: float | Sequence[float] | None = None,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Random smooth displacement: uniform random control values, then :func:`bspline_disp`.

    Control-point displacements of component ``k`` are drawn uniformly in
    ``[-max_disp_k, max_disp_k]`` voxels. By the partition of unity of the B-spline weights the
    dense component ``k`` satisfies ``|u_k(x)| <= max_disp_k`` everywhere, so the vector length
    is at most ``||max_disp||_2``.

    Args:
        shape: dense spatial size ``(D, H, W)`` or ``(H, W)``.
        batch: number of independent fields.
        control_points: control points per axis (``>= 4``), one number or one per axis.
        max_disp: bound per component in voxels, one number or one per axis; default 10 % of
            each axis size (the augmentation of recursive cascaded networks).
        generator: random generator for reproducibility (numbers are drawn on its device).
        dtype: floating dtype (default: ``torch.get_default_dtype()``).
        device: device of the result.

    Returns:
        ``(batch, ndim, *shape)`` displacement in voxels.

    Raises:
        InputError: on inconsistent ``shape``, ``control_points`` or ``max_disp``.
    """
    sizes = tuple(int(s) for s in shape)
    nd = len(sizes)
    if nd not in (2, 3) or batch < 1:
        raise InputError(
            f"random_smooth_disp(): need a 2-D or 3-D 'shape' and batch >= 1, got shape "
            f"{tuple(shape)}, batch {batch}"
        )
    ctrl = [int(c) for c in _per_axis("control_points", control_points, nd)]
    bound = _per_axis("max_disp", [0.1 * s for s in sizes] if max_disp is None else max_disp, nd)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    draw_device = generator.device if generator is not None else device
    rand = torch.rand((batch, nd, *ctrl), generator=generator, dtype=dtype, device=draw_device).to(
        device=device
    )
    scale = torch.tensor(bound, dtype=dtype, device=rand.device).view(1, nd, *([1] * nd))
    return bspline_disp((2.0 * rand - 1.0) * scale, sizes)
