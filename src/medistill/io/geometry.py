"""Grids as values: :class:`Grid` (shape + voxel-to-world affine); resampling between grids.

Below :mod:`medistill.io.image` (an :class:`~medistill.io.image.Image` is voxel values on a
``Grid``) and :mod:`medistill.io.grid` (working grids around an image's content).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from medistill.errors import InputError

if TYPE_CHECKING:
    from medistill.io.image import Image


def resample_array(
    data: np.ndarray,
    src_affine: np.ndarray,
    dst_affine: np.ndarray,
    dst_shape: tuple[int, ...],
    *,
    order: int = 1,
    cval: float = 0.0,
) -> np.ndarray:
    """Resample ``data`` (on the grid of ``src_affine``) onto another grid, through world space.

    Args:
        data: ``(X, Y[, Z])`` voxel values on the source grid.
        src_affine, dst_affine: ``(4, 4)`` voxel-to-world matrices (mm) of source and target grids.
        dst_shape: target grid size.
        order: 0 nearest neighbour (labels), 1 linear, 3 cubic.
        cval: value outside the source grid.

    Returns:
        Array of ``dst_shape`` (dtype of ``data`` for order 0, float32 otherwise).
    """
    ndim = data.ndim
    idx = list(range(ndim)) + [3]
    # destination index -> source index
    m = (np.linalg.inv(src_affine) @ dst_affine)[np.ix_(idx, idx)]
    if order == 1 and axis_aligned(m) is not None:
        return separable_linear(data, m, dst_shape, cval=cval)
    if order == 1 and min(data.shape) > 1 and min(dst_shape) > 1:  # oblique: torch, all threads
        import torch

        from medistill.kernels import affine_linear

        volume = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
        out = affine_linear(volume, torch.from_numpy(m[:ndim]), tuple(dst_shape), cval=cval)
        return out.numpy()
    if order == 0:
        out = ndimage.affine_transform(
            data,
            m[:ndim, :ndim],
            offset=m[:ndim, ndim],
            output_shape=tuple(dst_shape),
            order=0,
            mode="constant",
            cval=cval,
        )
        return out.astype(data.dtype, copy=False)
    out = ndimage.affine_transform(
        data.astype(np.float32, copy=False),
        m[:ndim, :ndim],
        offset=m[:ndim, ndim],
        output_shape=tuple(dst_shape),
        order=order,
        mode="constant",
        cval=cval,
        prefilter=order > 1,
    )
    return out.astype(np.float32, copy=False)


def axis_aligned(voxel_map: np.ndarray, tol: float = 1e-9) -> list[int] | None:
    """Whether a voxel-to-voxel map only scales, flips, permutes and shifts axes.

    Args:
        voxel_map: ``(ndim, ndim + 1)`` or ``(ndim + 1, ndim + 1)`` affine from destination
            voxel indices ``y`` to source voxel indices ``s = M[:, :ndim] y + M[:, ndim]``.
        tol: entries below ``tol`` times the largest one count as zero.

    Returns:
        For each source axis ``i`` the destination axis its coordinate depends on (a
        permutation), or None when the map is oblique (some source coordinate depends on
        several destination axes).
    """
    m = np.asarray(voxel_map, dtype=np.float64)
    nd = m.shape[1] - 1
    lin = np.abs(m[:nd, :nd])
    big = lin > tol * lin.max()
    if not (big.sum(0) == 1).all() or not (big.sum(1) == 1).all():
        return None
    return [int(np.flatnonzero(big[i])[0]) for i in range(nd)]


def linear_weights(
    coords: np.ndarray, size: int, *, padding: str = "constant"
) -> tuple[np.ndarray, np.ndarray]:
    """The 1-D linear-interpolation matrix of ``coords`` into an axis of ``size`` voxels.

    Args:
        coords: ``(N,)`` source voxel coordinates (float64).
        size: number of source voxels.
        padding: ``"constant"`` (a coordinate outside ``[0, size - 1]`` gets no weight, as
            :func:`scipy.ndimage.affine_transform` with ``mode="constant"``) or ``"border"``
            (coordinates clamped into the axis, as ``grid_sample``'s border padding).

    Returns:
        ``(N, size)`` float32 weights (rows sum to 1, or to 0 outside) and the ``(N,)`` boolean
        "inside" mask.
    """
    c = np.asarray(coords, dtype=np.float64)
    inside = (c >= 0) & (c <= size - 1) if padding == "constant" else np.ones(c.shape, bool)
    c = np.clip(c, 0, size - 1)
    weights = np.zeros((c.size, size), dtype=np.float64)
    rows = np.arange(c.size)
    if size == 1:
        weights[:, 0] = 1.0
    else:
        low = np.minimum(np.floor(c).astype(np.int64), size - 2)
        frac = c - low
        weights[rows, low] = 1.0 - frac
        weights[rows, low + 1] += frac
    weights[~inside] = 0.0
    return weights.astype(np.float32), inside


def separable_weights(
    voxel_map: np.ndarray,
    dst_shape: tuple[int, ...],
    src_shape: tuple[int, ...],
    *,
    padding: str = "constant",
) -> tuple[list[int], list[np.ndarray], list[np.ndarray]] | None:
    """Linear resampling along an axis-aligned voxel map as one matrix per axis.

    Multilinear interpolation at the points of an axis-aligned map (:func:`axis_aligned`) is a
    product of 1-D interpolations, so it is computed exactly by contracting each source axis
    with a ``(dst size, src size)`` matrix: a few matrix products instead of a gather per
    voxel (several times faster than ``grid_sample`` or ``affine_transform`` on a CPU).

    Returns:
        ``(perm, weights, inside)``: ``perm[i]`` the destination axis of source axis ``i``,
        ``weights[i]`` its ``(dst_shape[perm[i]], src_shape[i])`` matrix
        (:func:`linear_weights`), ``inside[i]`` its inside mask; None for an oblique map.
    """
    perm = axis_aligned(voxel_map)
    if perm is None:
        return None
    m = np.asarray(voxel_map, dtype=np.float64)
    nd = len(perm)
    weights, inside = [], []
    for i, j in enumerate(perm):
        coords = m[i, j] * np.arange(dst_shape[j], dtype=np.float64) + m[i, nd]
        w, ins = linear_weights(coords, int(src_shape[i]), padding=padding)
        weights.append(w)
        inside.append(ins)
    return perm, weights, inside


def separable_linear(
    data: np.ndarray, voxel_map: np.ndarray, dst_shape: tuple[int, ...], *, cval: float = 0.0
) -> np.ndarray:
    """``data`` linearly resampled at an axis-aligned voxel map (:func:`separable_weights`),
    ``cval`` outside: the values of :func:`scipy.ndimage.affine_transform` with ``order=1,
    mode="constant"`` (to float32 rounding), in float32 of shape ``dst_shape``.

    Raises:
        InputError: the map is oblique.
    """
    found = separable_weights(voxel_map, tuple(dst_shape), data.shape, padding="constant")
    if found is None:
        raise InputError("separable_linear(): the voxel map is not axis-aligned")
    import torch

    from medistill.kernels import contract_axes

    perm, weights, inside = found
    values = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
    out = contract_axes(values, perm, [torch.from_numpy(w) for w in weights]).numpy()
    if cval != 0.0:
        nd = len(perm)
        covered = np.ones(out.shape, dtype=bool)
        for i, j in enumerate(perm):
            covered &= inside[i].reshape([-1 if k == j else 1 for k in range(nd)])
        out[~covered] = np.float32(cval)
    return out


@dataclass(frozen=True, eq=False)
class Grid:
    """A regular grid in world space.

    Attributes:
        shape: grid size in voxels, ``(X, Y[, Z])``.
        affine: ``(4, 4)`` float64 voxel-to-world matrix in mm (RAS+, the NIfTI convention); 2-D
            grids use the upper-left block for ``(i, j)`` and keep the third column a unit
            vector, as :class:`~medistill.io.image.Image` does.

    Two grids are equal when their shapes and affines are exactly equal.
    """

    shape: tuple[int, ...]
    affine: np.ndarray

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        affine = np.array(self.affine, dtype=np.float64)  # a copy: a value does not alias
        if len(shape) not in (2, 3) or min(shape) < 1:
            raise InputError(f"Grid: shape must have 2 or 3 sizes >= 1, got {self.shape}")
        if affine.shape != (4, 4):
            raise InputError(f"Grid: affine must be 4x4, got {affine.shape}")
        affine.setflags(write=False)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "affine", affine)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Grid):
            return NotImplemented
        return self.shape == other.shape and bool(np.array_equal(self.affine, other.affine))

    def __hash__(self) -> int:
        return hash((self.shape, self.affine.tobytes()))

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return len(self.shape)

    @property
    def voxel_size(self) -> tuple[float, ...]:
        """Voxel size in mm along each array axis (column norms of the affine)."""
        norms = np.linalg.norm(self.affine[:3, :3], axis=0)
        return tuple(float(s) for s in norms[: self.ndim])

    def index_to_world(self, index: np.ndarray) -> np.ndarray:
        """Voxel indices ``(N, ndim)`` -> world points ``(N, 3)`` in mm (RAS)."""
        index = np.asarray(index, dtype=np.float64)
        pad = np.zeros((index.shape[0], 3))
        pad[:, : index.shape[1]] = index
        return pad @ self.affine[:3, :3].T + self.affine[:3, 3]

    def world_to_index(self, points: np.ndarray) -> np.ndarray:
        """World points ``(N, 3)`` in mm (RAS) -> voxel indices ``(N, ndim)`` (fractional)."""
        points = np.asarray(points, dtype=np.float64)
        inv = np.linalg.inv(self.affine)
        return (points @ inv[:3, :3].T + inv[:3, 3])[:, : self.ndim]

    def translated(self, offset_mm: np.ndarray) -> Grid:
        """The same grid moved by ``offset_mm`` (world RAS, 3 values): voxel ``y`` of the result
        lies at this grid's world point of ``y`` plus ``offset_mm``."""
        affine = self.affine.copy()
        affine[:3, 3] += np.asarray(offset_mm, dtype=np.float64)[:3]
        return Grid(self.shape, affine)

    def sample(
        self, data: np.ndarray, source: Grid, *, order: int = 1, cval: float = 0.0
    ) -> np.ndarray:
        """Values of ``data`` (on the ``source`` grid) at this grid's voxels, through world space
        (:func:`resample_array`: ``order`` 0 nearest for labels, 1 linear, 3 cubic)."""
        return resample_array(data, source.affine, self.affine, self.shape, order=order, cval=cval)

    def resample(
        self, image: Image, *, order: int | None = None, cval: float | None = None
    ) -> Image:
        """``image`` resampled onto this grid (nearest for label maps, linear otherwise).

        Voxels outside ``image`` get ``cval`` (default 0 for labels, the image minimum otherwise).
        """
        from medistill.io.image import Image

        if image.ndim != self.ndim:
            raise InputError(
                f"{image.source}: a {image.ndim}-D image cannot go on a {self.ndim}-D grid"
            )
        if order is None:
            order = 0 if image.is_label else 1
        if cval is None:
            cval = 0.0 if image.is_label else float(image.data.min())
        data = self.sample(image.data, image.grid, order=order, cval=cval)
        return Image(data, self.affine.copy(), image.is_label, f"{image.source}@working")

    def to_original(
        self,
        data: np.ndarray,
        original: Image,
        *,
        is_label: bool = False,
        order: int | None = None,
        cval: float = 0.0,
    ) -> Image:
        """Bring an array on this grid back onto ``original``'s grid (shape and affine exactly)."""
        from medistill.io.image import Image

        data = np.asarray(data)
        if tuple(data.shape) != self.shape:
            raise InputError(
                f"to_original(): array of shape {data.shape} is not on grid {self.shape}"
            )
        if order is None:
            order = 0 if is_label else 1
        out = original.grid.sample(data, self, order=order, cval=cval)
        return Image(out, original.affine.copy(), is_label, original.source)
