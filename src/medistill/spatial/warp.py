"""Backward warping of images, label maps and point sampling with voxel displacement fields.

Convention (``docs/METHODS.md``): a displacement field ``u`` is ``(B, ndim, *S)``, channel ``k``
is the displacement along spatial axis ``k`` in voxels, and warping is backward:
``warped(x) = moving(x + u(x))`` with (bi/tri)linear interpolation between voxel centres
(``grid_sample(..., align_corners=True)``) and border padding for images.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from medistill.errors import InputError
from medistill.kernels import grid_sample
from medistill.spatial._checks import (
    broadcast_batch,
    check_field,
    check_option,
    check_same_device,
    check_tensor,
    floating_dtype,
)
from medistill.spatial.grid import identity_grid, normalized_identity, voxel_to_normalized

__all__ = [
    "MODES",
    "PADDINGS",
    "SpatialTransformer",
    "resample",
    "sample_at_points",
    "warp",
    "warp_labels",
]

MODES = ("linear", "nearest")
"""Interpolation modes: ``linear`` (bi/trilinear) and ``nearest`` (nearest voxel centre)."""
PADDINGS = ("border", "zeros", "reflection")
"""Values outside the grid: nearest border voxel, zero, or mirrored (``grid_sample`` modes)."""
_GRID_SAMPLE_MODE = {"linear": "bilinear", "nearest": "nearest"}


def resample(
    image: Tensor,
    coords: Tensor,
    *,
    mode: str = "linear",
    padding: str = "border",
    normalized: bool = False,
) -> Tensor:
    """Sample an image at arbitrary voxel coordinates.

    Args:
        image: ``(B, C, *S)`` image, ``S`` = ``(D, H, W)`` or ``(H, W)``. Integer images are
            allowed with ``mode="nearest"`` (the result keeps their dtype).
        coords: ``(B', ndim, *T)`` absolute voxel coordinates into ``image`` (channel ``k`` along
            spatial axis ``k``); ``T`` may differ from ``S``. ``B'`` equals ``B`` or one of the
            two is 1 (broadcast).
        mode: ``"linear"`` or ``"nearest"``.
        padding: ``"border"``, ``"zeros"`` or ``"reflection"``.
        normalized: ``coords`` are already ``grid_sample`` coordinates (reversed component order,
            ``align_corners=True``), channel-first; used by :func:`warp` to skip a conversion.

    Returns:
        ``(max(B, B'), C, *T)`` sampled values, in the promoted floating dtype of ``image`` and
        ``coords`` (or ``image``'s integer dtype for nearest sampling of integer images).

    Raises:
        InputError: on wrong shapes, devices, mode or padding.
    """
    fn = "resample"
    check_tensor(fn, "image", image)
    nd = image.dim() - 2
    check_field(fn, "coords", coords, nd)
    mode = check_option(fn, "mode", mode, MODES)
    padding = check_option(fn, "padding", padding, PADDINGS)
    check_same_device(fn, ("image", "coords"), image, coords)
    batch = broadcast_batch(fn, ("image", "coords"), image, coords)

    integer = not image.is_floating_point()
    if integer and mode != "nearest":
        raise InputError(
            f"{fn}(): 'image' has integer dtype {image.dtype}; use mode='nearest' or "
            "warp_labels() for label maps"
        )
    dtype = floating_dtype(image.dtype, coords.dtype)
    img = image.to(dtype)
    crd = coords.to(dtype)
    if img.shape[0] != batch:
        img = img.expand(batch, *img.shape[1:])
    if crd.shape[0] != batch:
        crd = crd.expand(batch, *crd.shape[1:])
    if normalized:
        grid = crd.movedim(1, -1)
    else:
        grid = voxel_to_normalized(crd.movedim(1, -1), image.shape[2:])
    out = grid_sample(img, grid, mode=_GRID_SAMPLE_MODE[mode], padding_mode=padding)
    if integer:
        out = out.round().to(image.dtype)
    return out


def _check_pair(fn: str, image: Tensor, disp: Tensor, image_name: str = "image") -> int:
    """Validate an image/field pair for warping; return ndim."""
    check_tensor(fn, image_name, image)
    nd = image.dim() - 2
    check_tensor(fn, "disp", disp)
    if disp.dim() != image.dim():
        raise InputError(
            f"{fn}(): 'disp' must be (B, {nd}, *S) for the {nd}-D '{image_name}' of shape "
            f"{tuple(image.shape)}, got shape {tuple(disp.shape)}"
        )
    check_field(fn, "disp", disp, nd)
    check_same_device(fn, (image_name, "disp"), image, disp)
    broadcast_batch(fn, (image_name, "disp"), image, disp)
    if tuple(disp.shape[2:]) != tuple(image.shape[2:]):
        raise InputError(
            f"{fn}(): spatial size of 'disp' {tuple(disp.shape[2:])} differs from that of "
            f"'{image_name}' {tuple(image.shape[2:])}"
        )
    return nd


def warp(image: Tensor, disp: Tensor, mode: str = "linear", padding: str = "border") -> Tensor:
    """Backward-warp an image with a voxel displacement field: ``out(x) = image(x + disp(x))``.

    Args:
        image: ``(B, C, *S)`` moving image, ``S`` = ``(D, H, W)`` or ``(H, W)``.
        disp: ``(B, ndim, *S)`` displacement in voxels, channel ``k`` along spatial axis ``k``;
            a batch of 1 broadcasts over the image batch (and vice versa).
        mode: ``"linear"`` (bi/trilinear, differentiable in ``image`` and ``disp``) or
            ``"nearest"``.
        padding: ``"border"`` (default), ``"zeros"`` or ``"reflection"``.

    Returns:
        ``(B, C, *S)`` warped image (dtype: promoted floating dtype of ``image`` and ``disp``).

    Raises:
        InputError: (a ``ValueError``) naming the argument on an ndim, channel, batch or
            spatial-size mismatch, a device mismatch, or an unknown ``mode``/``padding``.

    Example:
        >>> img = torch.arange(5.0).view(1, 1, 1, 5)
        >>> warp(img, torch.tensor([0.0, 1.0]).view(1, 2, 1, 1).expand(1, 2, 1, 5))
        tensor([[[[1., 2., 3., 4., 4.]]]])
    """
    _check_pair("warp", image, disp)
    mode = check_option("warp", "mode", mode, MODES)
    padding = check_option("warp", "padding", padding, PADDINGS)
    # grid_sample coordinates in one fused pass: normalised identity (cached) + scaled disp
    dtype = floating_dtype(image.dtype, disp.dtype)
    base, scale = normalized_identity(tuple(disp.shape[2:]), dtype, disp.device)
    coords = torch.addcmul(base, disp.to(dtype).flip(1), scale)
    return resample(image, coords, mode=mode, padding=padding, normalized=True)


def _label_values(fn: str, labels: Tensor, values: Sequence[float] | Tensor | None) -> Tensor:
    if values is None:
        return torch.unique(labels)
    vals = torch.as_tensor(values, device=labels.device).to(labels.dtype).reshape(-1)
    if vals.numel() == 0:
        raise InputError(f"{fn}(): 'values' must hold at least one label value, got none")
    return vals


def warp_labels(
    labels: Tensor,
    disp: Tensor,
    values: Sequence[float] | Tensor | None = None,
    soft: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Warp a label map by linear interpolation of its one-hot encoding, then argmax.

    Each label value ``v`` gives a binary mask ``labels == v`` that is warped linearly (border
    padding, backward as in :func:`warp`); each output voxel takes the value whose warped mask
    is largest (ties: the first value in ``values``). Voxels whose label is not in ``values``
    belong to no mask.

    Args:
        labels: ``(B, 1, *S)`` label map, any integer dtype or a float dtype holding integers.
        disp: ``(B, ndim, *S)`` displacement in voxels (batch 1 broadcasts).
        values: label values to encode (default: the sorted values present in ``labels``).
        soft: return the warped one-hot probabilities instead of the hard labels.

    Returns:
        ``soft=False``: ``(B, 1, *S)`` warped labels, same dtype as ``labels``, values taken from
        ``values``. ``soft=True``: a tuple ``(probs, values)`` with ``probs`` ``(B, L, *S)``
        (floating, ``probs[:, i]`` = warped mask of ``values[i]``) and ``values`` ``(L,)``.

    Raises:
        InputError: on wrong shapes (see :func:`warp`), more than one label channel, or
            non-integer values in a floating label map.
    """
    fn = "warp_labels"
    _check_pair(fn, labels, disp, "labels")
    if labels.shape[1] != 1:
        raise InputError(
            f"{fn}(): 'labels' must have one channel (B, 1, *S), got shape {tuple(labels.shape)}"
        )
    if labels.is_floating_point() and not torch.equal(labels, labels.round()):
        raise InputError(f"{fn}(): 'labels' ({labels.dtype}) must hold integer values")
    vals = _label_values(fn, labels, values)
    nd = labels.dim() - 2
    coords = identity_grid(disp.shape[2:], dtype=disp.dtype, device=disp.device) + disp
    view = (1, -1) + (1,) * nd

    def probs(chunk: Tensor) -> Tensor:
        onehot = (labels == chunk.view(view)).to(disp.dtype)
        return resample(onehot, coords, mode="linear", padding="border")

    if soft:
        return probs(vals), vals
    chunk = 8  # bounds memory at 8 one-hot channels for label maps with many labels
    best, arg = probs(vals[:chunk]).max(dim=1, keepdim=True)
    for start in range(chunk, vals.numel(), chunk):
        cmax, carg = probs(vals[start : start + chunk]).max(dim=1, keepdim=True)
        better = cmax > best
        best = torch.where(better, cmax, best)
        arg = torch.where(better, carg + start, arg)
    return vals[arg]


def sample_at_points(field: Tensor, points: Tensor) -> Tensor:
    """Linearly interpolate a field at points given in voxel coordinates (border padding).

    For landmark errors: with a displacement ``u`` from :func:`warp`'s convention, a fixed-image
    landmark ``p`` maps to ``p + sample_at_points(u, p)`` in the moving image.

    Args:
        field: ``(B, C, *S)`` field (an image or a displacement), ``S`` = ``(D, H, W)``/``(H, W)``.
        points: ``(B, N, ndim)`` voxel coordinates, component ``k`` along spatial axis ``k``
            (batch 1 broadcasts, as does a field batch of 1).

    Returns:
        ``(B, N, C)`` interpolated values.

    Raises:
        InputError: on wrong shapes or devices.
    """
    fn = "sample_at_points"
    check_tensor(fn, "field", field)
    nd = field.dim() - 2
    check_tensor(fn, "points", points, (3,))
    if points.shape[-1] != nd or not points.is_floating_point():
        raise InputError(
            f"{fn}(): 'points' must be floating (B, N, {nd}) for a {nd}-D field, "
            f"got shape {tuple(points.shape)} ({points.dtype})"
        )
    check_same_device(fn, ("field", "points"), field, points)
    broadcast_batch(fn, ("field", "points"), field, points)
    coords = points.transpose(1, 2).reshape(points.shape[0], nd, points.shape[1], *([1] * (nd - 1)))
    out = resample(field, coords, mode="linear", padding="border")
    return out.reshape(out.shape[0], out.shape[1], -1).transpose(1, 2)


class SpatialTransformer(nn.Module):
    """Module form of :func:`warp` (no parameters).

    Args:
        mode: ``"linear"`` or ``"nearest"``.
        padding: ``"border"``, ``"zeros"`` or ``"reflection"``.

    Shapes: ``forward(image (B, C, *S), disp (B, ndim, *S) in voxels) -> (B, C, *S)``.
    """

    def __init__(self, mode: str = "linear", padding: str = "border") -> None:
        super().__init__()
        self.mode = check_option("SpatialTransformer", "mode", mode, MODES)
        self.padding = check_option("SpatialTransformer", "padding", padding, PADDINGS)

    def forward(self, image: Tensor, disp: Tensor) -> Tensor:
        """Warp ``image`` by ``disp``: ``out(x) = image(x + disp(x))``."""
        return warp(image, disp, mode=self.mode, padding=self.padding)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, padding={self.padding!r}"
