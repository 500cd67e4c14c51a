"""Voxel coordinate grids and the conversion to ``grid_sample``'s normalised coordinates.

Frames used in :mod:`medistill.spatial`:

- **voxel** coordinates: index ``k`` of a point is its (fractional) position along the tensor's
  spatial axis ``k`` (``(D, H, W)`` order in 3-D, ``(H, W)`` in 2-D); voxel centres are integers
  ``0 .. size_k - 1``. Displacement fields are in voxels of this frame.
- **normalised** coordinates: what :func:`torch.nn.functional.grid_sample` expects with
  ``align_corners=True``: ``-1`` and ``+1`` are the centres of the first and last voxel, and the
  last axis lists the components in *reversed* order (``(W, H, D)``, i.e. ``x`` first).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from torch import Tensor

from medistill.errors import InputError
from medistill.kernels import voxel_map_grid

__all__ = ["identity_grid", "normalized_identity", "normalized_to_voxel", "voxel_to_normalized"]


def _check_shape(fn: str, shape: Sequence[int]) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in shape)
    except (TypeError, ValueError) as err:
        raise InputError(f"{fn}(): 'shape' must be a sequence of ints, got {shape!r}") from err
    if len(sizes) not in (2, 3) or any(s < 1 for s in sizes):
        raise InputError(f"{fn}(): 'shape' must hold 2 or 3 positive sizes, got {tuple(shape)!r}")
    return sizes


def identity_grid(
    shape: Sequence[int],
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Voxel coordinates of every voxel centre of a grid.

    Args:
        shape: spatial size ``(D, H, W)`` or ``(H, W)``.
        dtype: floating dtype of the result (default: ``torch.get_default_dtype()``).
        device: device of the result (default: the current default device).

    Returns:
        Tensor ``(ndim, *shape)``: channel ``k`` holds the index along spatial axis ``k``, in
        voxels (``grid[k][i_0, .., i_{n-1}] = i_k``).

    Raises:
        InputError: if ``shape`` does not hold 2 or 3 positive sizes.

    Example:
        >>> identity_grid((2, 3))[1]
        tensor([[0., 1., 2.],
                [0., 1., 2.]])
    """
    sizes = _check_shape("identity_grid", shape)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    axes = [torch.arange(s, dtype=dtype, device=device) for s in sizes]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0)


def _half_extent(shape: Sequence[int], like: Tensor) -> Tensor:
    # (size - 1) / 2 per axis; a size-1 axis gets 1 so that its only voxel maps to 0 and back
    # (grid_sample with align_corners=True maps any coordinate of a size-1 axis to voxel 0).
    half = [max(int(s) - 1, 1) / 2.0 for s in shape]
    return torch.tensor(half, dtype=like.dtype, device=like.device)


def voxel_to_normalized(coords: Tensor, shape: Sequence[int]) -> Tensor:
    """Convert voxel coordinates to ``grid_sample`` coordinates (``align_corners=True``).

    Args:
        coords: ``(..., ndim)`` voxel coordinates, component ``k`` along spatial axis ``k``.
        shape: spatial size of the image that will be sampled, ``ndim`` entries.

    Returns:
        ``(..., ndim)`` normalised coordinates in reversed component order (last spatial axis
        first), ``2 * x_k / (size_k - 1) - 1``; ready to be used as ``grid`` of
        :func:`torch.nn.functional.grid_sample` with ``align_corners=True``.

    Raises:
        InputError: if the last axis of ``coords`` does not match ``len(shape)``.
    """
    sizes = _check_shape("voxel_to_normalized", shape)
    if coords.shape[-1] != len(sizes):
        raise InputError(
            f"voxel_to_normalized(): 'coords' last axis must be {len(sizes)} (len(shape)), "
            f"got shape {tuple(coords.shape)}"
        )
    half = _half_extent(sizes, coords)
    return (coords / half - 1.0).flip(-1)


def normalized_to_voxel(coords: Tensor, shape: Sequence[int]) -> Tensor:
    """Inverse of :func:`voxel_to_normalized`.

    Args:
        coords: ``(..., ndim)`` ``grid_sample`` coordinates (``align_corners=True``, reversed
            component order).
        shape: spatial size of the sampled image, ``ndim`` entries.

    Returns:
        ``(..., ndim)`` voxel coordinates, component ``k`` along spatial axis ``k``.

    Raises:
        InputError: if the last axis of ``coords`` does not match ``len(shape)``.
    """
    sizes = _check_shape("normalized_to_voxel", shape)
    if coords.shape[-1] != len(sizes):
        raise InputError(
            f"normalized_to_voxel(): 'coords' last axis must be {len(sizes)} (len(shape)), "
            f"got shape {tuple(coords.shape)}"
        )
    half = _half_extent(sizes, coords)
    return (coords.flip(-1) + 1.0) * half


@functools.lru_cache(maxsize=16)
def normalized_identity(
    shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Cached ``grid_sample`` coordinates of the identity, channel-first, and the voxel scale.

    Returns:
        ``base`` ``(1, ndim, *shape)``: normalised coordinates of every voxel centre with the
        components in reversed order (channel 0 = last spatial axis), and ``scale``
        ``(1, ndim, 1, ..)``: normalised units per voxel for those components, so that
        ``torch.addcmul(base, disp.flip(1), scale)`` are the normalised coordinates of
        ``x + disp(x)``. Built outside inference mode so that autograd may use them later.
    """
    sizes = _check_shape("normalized_identity", shape)
    with torch.inference_mode(False), torch.no_grad():
        grid = identity_grid(sizes, dtype=dtype, device=device)
        half = torch.tensor([max(s - 1, 1) / 2.0 for s in sizes], dtype=dtype, device=device)
        half = half.flip(0).view(1, len(sizes), *([1] * len(sizes)))
        base = (grid.flip(0).unsqueeze(0) / half - 1.0).contiguous()
        scale = 1.0 / half
    return base, scale


def affine_sampling_grid(
    voxel_map: Sequence[Sequence[float]] | Tensor,
    dst_shape: Sequence[int],
    src_shape: Sequence[int],
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """The ``grid_sample`` grid (``align_corners=True``) that samples a source grid at
    ``voxel_map @ [y, 1]`` for every destination voxel ``y``, built by
    :func:`medistill.kernels.voxel_map_grid` (no coordinate volume in voxel units, no flips).

    Args:
        voxel_map: ``(ndim + 1, ndim + 1)`` (or ``(ndim, ndim + 1)``) affine from destination
            voxel indices to source voxel indices (component ``k`` along spatial axis ``k``).
        dst_shape: destination spatial size (``ndim`` entries).
        src_shape: source spatial size (``ndim`` entries).
        dtype, device: of the grid (default float32 / CPU).

    Returns:
        ``(1, *dst_shape, ndim)`` normalised coordinates in reversed component order.
    """
    dst = _check_shape("affine_sampling_grid", dst_shape)
    src = _check_shape("affine_sampling_grid", src_shape)
    nd = len(dst)
    if len(src) != nd:
        raise InputError(
            f"affine_sampling_grid(): 'dst_shape' and 'src_shape' differ in length ({nd} vs "
            f"{len(src)})"
        )
    m = torch.as_tensor(voxel_map, dtype=torch.float64)[:nd]
    if tuple(m.shape) != (nd, nd + 1):
        raise InputError(
            f"affine_sampling_grid(): 'voxel_map' must be ({nd}+1, {nd}+1), got {tuple(m.shape)}"
        )
    # float32 unless asked otherwise: ~1e-7 of the half extent, far below grid_sample's own
    return voxel_map_grid(m, tuple(dst), tuple(src), dtype or torch.float32).to(device=device)
