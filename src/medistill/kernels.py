"""Low-level numerical kernels shared by :mod:`medistill.io` and :mod:`medistill.spatial`.

Below every other module of the package except :mod:`medistill.errors`: plain tensors in,
plain tensors out, no conventions of ours (those live in :mod:`medistill.spatial`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "affine_grid",
    "affine_linear",
    "axis_filter",
    "box_mean",
    "box_sum",
    "contract_axes",
    "grid_sample",
    "voxel_map_grid",
]


def grid_sample(
    image: Tensor, grid: Tensor, *, mode: str = "bilinear", padding_mode: str = "border"
) -> Tensor:
    """:func:`torch.nn.functional.grid_sample` (``align_corners=True``) that uses every CPU
    thread for a batch of one.

    PyTorch's CPU kernels parallelise over the batch only, so a single image is sampled on
    one core. On the CPU, with a batch of 1 and ``k = torch.get_num_threads() > 1``, the
    output's first spatial axis is cut into ``k`` slabs (the grid padded to a multiple of
    ``k``) that are sampled as a batch of ``k`` from the same (expanded, not copied) image:
    the values are exactly those of one call, and so are the gradients (the image's up
    to the float rounding of summing the slabs' contributions). On 2 threads, 3-D, 3 channels
    (``benchmarks/kernels_ab.py``): forward 1.5x, forward and backward 1.9x faster. Not while
    tracing or exporting to ONNX (the graph would fix the thread count).

    Args:
        image: ``(B, C, *S)`` input, ``S`` of 2 or 3 axes.
        grid: ``(B, *T, ndim)`` normalised coordinates (last component along the last axis).
        mode: ``"bilinear"`` or ``"nearest"``.
        padding_mode: ``"border"``, ``"zeros"`` or ``"reflection"``.

    Returns:
        ``(B, C, *T)`` sampled values.
    """
    k = torch.get_num_threads()
    depth = grid.shape[1]
    exporting = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
    if (
        exporting
        or image.device.type != "cpu"
        or image.shape[0] != 1
        or grid.shape[0] != 1
        or k < 2
    ):
        return F.grid_sample(image, grid, mode=mode, padding_mode=padding_mode, align_corners=True)
    k = min(k, depth)
    pad = -depth % k
    if pad:
        grid = torch.cat([grid, grid.new_zeros(1, pad, *grid.shape[2:])], 1)
    slabs = grid.reshape(k, (depth + pad) // k, *grid.shape[2:])
    out = F.grid_sample(
        image.expand(k, *image.shape[1:]),
        slabs,
        mode=mode,
        padding_mode=padding_mode,
        align_corners=True,
    )
    out = out.movedim(0, 1).reshape(1, image.shape[1], depth + pad, *out.shape[3:])
    return out[:, :, :depth] if pad else out


def affine_linear(
    volume: Tensor, voxel_map: Tensor, dst_shape: tuple[int, ...], *, cval: float = 0.0
) -> Tensor:
    """Linear interpolation of ``volume`` at an affine map of a destination grid's voxels, with
    the semantics of :func:`scipy.ndimage.affine_transform` (``order=1, mode="constant"``): a
    point more than a rounding error outside ``[0, size - 1]`` along any axis gets ``cval``.

    Args:
        volume: ``(*S)`` float32 values (2 or 3 axes, each of size >= 2).
        voxel_map: ``(ndim, ndim + 1)`` float64 map from destination voxel ``y`` to source
            voxel ``M[:, :ndim] y + M[:, ndim]``.
        dst_shape: destination size (each >= 2).

    Returns:
        ``dst_shape`` float32 values.
    """
    grid = voxel_map_grid(voxel_map, dst_shape, tuple(volume.shape), torch.float32)
    out = grid_sample(volume[None, None], grid, mode="bilinear", padding_mode="zeros")[0, 0]
    # 1e-5 voxel: float32 rounding of the coordinates; one component at a time (no reduction)
    limit = 1 + 1e-5 / ((min(volume.shape) - 1) / 2)
    outside = grid[0, ..., 0].abs() > limit
    for c in range(1, volume.dim()):
        outside |= grid[0, ..., c].abs() > limit
    return out.masked_fill_(outside, cval)


def affine_grid(theta: Tensor, size: tuple[int, ...], dtype: torch.dtype | None = None) -> Tensor:
    """:func:`torch.nn.functional.affine_grid` (``align_corners=True``) for one ``(ndim, ndim
    + 1)`` matrix, as a sum of one broadcast term per axis instead of a matrix product at every
    voxel (2.1 vs 2.7 ms for 73 x 74 x 95 points on 2 threads), in the dtype asked for.

    Args:
        theta: ``(ndim, ndim + 1)`` map from normalised output coordinates (``x`` along the last
            axis first, as ``grid_sample`` orders them) to normalised input coordinates.
        size: output spatial size ``(D, H, W)`` or ``(H, W)``.
        dtype: of the computation and the result (default ``theta``'s).

    Returns:
        ``(1, *size, ndim)`` grid on ``theta``'s device.
    """
    nd = len(size)
    theta = theta.to(dtype or theta.dtype)
    grid = theta[:, nd]  # (ndim,): broadcast up one axis at a time, one full-size pass at the end
    for c in range(nd - 1, -1, -1):  # component c of the base grid runs along axis nd - 1 - c
        axis = nd - 1 - c
        n = size[axis]
        base = torch.linspace(-1.0, 1.0, n, dtype=theta.dtype, device=theta.device)
        base = base if n > 1 else torch.zeros_like(base)
        shape = [1] * nd
        shape[axis] = n
        grid = grid + base.view(*shape, 1) * theta[:, c]
    return grid.expand(*size, nd).contiguous()[None]


def voxel_map_grid(
    voxel_map: Tensor,
    dst_shape: tuple[int, ...],
    src_shape: tuple[int, ...],
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The ``grid_sample`` grid (``align_corners=True``) that samples a source grid of
    ``src_shape`` at ``voxel_map @ [y, 1]`` for every destination voxel ``y``.

    Args:
        voxel_map: ``(ndim, ndim + 1)`` map from destination voxel indices to source voxel
            indices (component ``k`` along spatial axis ``k``; float64 recommended).
        dst_shape, src_shape: spatial sizes (``ndim`` entries each).
        dtype: of the grid.

    Returns:
        ``(1, *dst_shape, ndim)`` normalised coordinates in reversed component order.
    """
    nd = len(dst_shape)
    m = voxel_map.to(torch.float64)
    # (size - 1) / 2 per axis (a size-1 axis: 0.5, so that its only voxel maps to 0 and back)
    h_dst = torch.tensor([max(int(n) - 1, 1) / 2.0 for n in dst_shape], dtype=torch.float64)
    h_src = torch.tensor([max(int(n) - 1, 1) / 2.0 for n in src_shape], dtype=torch.float64)
    # affine_grid's base coordinate n of a destination voxel v: v = h (n + 1), except on a
    # size-1 axis, where its only voxel (v = 0) gets n = 0; source: n = v / h - 1.
    centre = torch.where(torch.tensor(dst_shape) > 1, h_dst, torch.zeros_like(h_dst))
    lin = m[:, :nd] * h_dst[None, :] / h_src[:, None]
    off = (m[:, :nd] @ centre + m[:, nd]) / h_src - 1.0
    rev = list(range(nd - 1, -1, -1))  # grid_sample's component order: last axis first
    theta = torch.cat([lin[rev][:, rev], off[rev, None]], dim=1)
    return affine_grid(theta, tuple(int(n) for n in dst_shape), dtype)


def contract_axes(values: Tensor, perm: list[int], weights: list[Tensor]) -> Tensor:
    """Separable linear resampling: the last ``ndim`` axes of ``values`` contracted with one
    ``(dst size, src size)`` interpolation matrix each.

    Args:
        values: ``(*lead, *S_src)`` values (any leading axes).
        perm: for each source axis ``i`` the destination axis it becomes.
        weights: ``weights[i]`` the matrix of source axis ``i`` (dtype and device of ``values``).

    Returns:
        ``(*lead, *S_dst)`` values, the destination axes in their order.
    """
    lead = values.dim() - len(perm)
    out = values
    for w in weights:  # contract the leading source axis; its destination axis goes last
        out = torch.tensordot(out, w, dims=([lead], [1]))
    order = sorted(range(len(perm)), key=lambda i: perm[i])  # source axis of each destination
    return out.permute(*range(lead), *[lead + k for k in order]).contiguous()


def box_sum(x: Tensor, window: int) -> Tensor:
    """Sums over centred boxes of ``window`` voxels along every spatial axis, zero padding.

    Separable: along each axis the sum of ``window`` shifted views of the padded input, so one
    call costs ``ndim * (window - 1)`` additions per voxel. It equals
    ``avg_pool(x, window, stride=1, padding=window // 2) * window ** ndim`` up to float rounding,
    but on the CPU, where PyTorch's 3-D average pooling is slow, it is much faster (64^3, 2
    threads, forward and backward, one run of ``benchmarks/kernels_ab.py``: 5x for a window of
    3, 47x for 9). Half-precision inputs are summed in float32 and returned in their dtype.

    Args:
        x: ``(B, C, *S)`` values, ``S`` of 1 to 3 axes.
        window: odd box size in voxels (>= 1).

    Returns:
        ``(B, C, *S)`` box sums.
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"box_sum(): window must be an odd size >= 1, got {window}")
    if window == 1:
        return x
    if x.dtype in (torch.float16, torch.bfloat16):  # up to 729 terms: sum in float32
        return _BoxSum.apply(x.float(), int(window)).to(x.dtype)
    return _BoxSum.apply(x, int(window))


def axis_filter(x: Tensor, axis: int, weights: Sequence[float], padding: str = "zeros") -> Tensor:
    """Correlate one spatial axis of ``x`` with a centred kernel of odd length, as a weighted sum
    of shifted views of the padded input (on the CPU much faster than a 1-D ``conv3d``, which
    takes PyTorch's slow single-channel path).

    Args:
        x: ``(B, C, *S)`` values.
        axis: tensor axis to filter (``2 <= axis < x.dim()``).
        weights: the kernel, ``2 r + 1`` numbers; ``weights[r]`` weighs the voxel itself.
        padding: ``"zeros"`` or ``"replicate"`` (the border voxel repeated).

    Returns:
        ``(B, C, *S)`` filtered values.
    """
    w = [float(v) for v in weights]
    if len(w) % 2 == 0:
        raise ValueError(f"axis_filter(): the kernel needs an odd length, got {len(w)}")
    r = len(w) // 2
    if r == 0:
        return x * w[0] if w[0] != 1.0 else x
    nd = x.dim() - 2
    pad = [0, 0] * nd  # F.pad lists the last axis first
    k = x.dim() - 1 - axis
    pad[2 * k] = pad[2 * k + 1] = r
    padded = F.pad(x, pad, mode="constant" if padding == "zeros" else padding)
    n = x.shape[axis]
    acc = padded.narrow(axis, 0, n) * w[0] if w[0] != 1.0 else padded.narrow(axis, 0, n).clone()
    for s in range(1, len(w)):
        view = padded.narrow(axis, s, n)
        acc.add_(view) if w[s] == 1.0 else acc.add_(view, alpha=w[s])
    return acc


def _box_sum(x: Tensor, window: int) -> Tensor:
    ones = [1.0] * window
    for axis in range(2, x.dim()):
        x = axis_filter(x, axis, ones)
    return x


class _BoxSum(torch.autograd.Function):
    """Box sums with zero padding are self-adjoint (a symmetric kernel): the gradient is the
    box sum of the incoming gradient, without the copies of autograd's slice backward."""

    @staticmethod
    def forward(ctx, x: Tensor, window: int) -> Tensor:  # type: ignore[override]
        ctx.window = window
        return _box_sum(x, window)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return _box_sum(grad, ctx.window), None


def box_mean(x: Tensor, window: int, *, include_pad: bool = False) -> Tensor:
    """Means over centred boxes of ``window`` voxels (:func:`box_sum` divided by the count).

    ``include_pad=False`` divides by the number of voxels of the box inside the image (as
    ``avg_pool(..., count_include_pad=False)``); ``True`` always by ``window ** ndim``.

    Args:
        x: ``(B, C, *S)`` values.
        window: odd box size in voxels.
        include_pad: count the zero padding at the borders.

    Returns:
        ``(B, C, *S)`` box means.
    """
    if x.dtype in (torch.float16, torch.bfloat16):  # the sums and the division in float32
        return box_mean(x.float(), window, include_pad=include_pad).to(x.dtype)
    total = box_sum(x, window)
    nd = x.dim() - 2
    if include_pad:
        return total / float(window**nd)
    r = window // 2
    inv: Tensor | None = None
    for d, n in enumerate(x.shape[2:]):
        i = torch.arange(n, device=x.device)
        count = (i + r).clamp(max=n - 1) - (i - r).clamp(min=0) + 1
        factor = (1.0 / count.to(x.dtype)).view(*[n if j == d else 1 for j in range(nd)])
        inv = factor if inv is None else inv * factor
    return total * inv
