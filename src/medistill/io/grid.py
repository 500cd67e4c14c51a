"""Working grids: fixed-shape, RAS-oriented, isotropic grids around the content of an image.

Networks run on a working grid (e.g. 64^3 or 128^3); results go back to each image's own grid with
the exact map kept here (both affines are stored, so nothing is approximated but the interpolation).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from medistill.errors import InputError
from medistill.io.geometry import Grid, resample_array
from medistill.io.image import Image

log = logging.getLogger(__name__)


def content_threshold(p1: float, p99: float) -> float:
    """The intensity above which a voxel counts as content: 5 % of the way from the 1st to the
    99th percentile (background of MRI at 0 and of CT at -1000 HU are both excluded)."""
    return p1 + 0.05 * (p99 - p1)


def content_box(image: Image, threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Index bounding box ``(lo, hi)`` (inclusive) of the voxels above ``threshold``.

    The default threshold is 0 for label maps and, for intensity images, 5 % of the way from the
    1st to the 99th percentile (background of MRI at 0 and of CT at -1000 HU are both excluded).
    The whole grid is used when nothing passes.
    """
    data = image.data
    if threshold is None:
        if image.is_label:
            threshold = 0
        else:
            threshold = content_threshold(*np.percentile(data, [1, 99]))
    mask = data > threshold
    if not mask.any():
        return np.zeros(image.ndim, int), np.asarray(image.shape) - 1
    lo, hi = [], []
    for axis in range(mask.ndim):  # projections: much faster than np.nonzero of the mask
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        lo.append(hit[0])
        hi.append(hit[-1])
    return np.array(lo), np.array(hi)


def content_bounds_mm(
    image: Image, threshold: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """World bounding box (mm, RAS) ``(low, high)`` of the corners of the content's voxels."""
    lo, hi = content_box(image, threshold)
    corners = (
        np.array(
            np.meshgrid(*[[a - 0.5, b + 0.5] for a, b in zip(lo, hi, strict=True)], indexing="ij")
        )
        .reshape(image.ndim, -1)
        .T
    )
    world = image.index_to_world(corners)[:, : image.ndim]
    return world.min(0), world.max(0)


@dataclass(frozen=True, eq=False)
class WorkingGrid(Grid):
    """A :class:`~medistill.io.geometry.Grid` on which networks run: fixed size, axes along
    R, A, S, isotropic voxels, placed around an image's content (:meth:`around`).

    Attributes:
        shape: grid size in voxels, e.g. ``(64, 64, 64)``.
        affine: ``(4, 4)`` voxel-to-world matrix in mm (RAS+ axis order, isotropic spacing).
    """

    @property
    def spacing(self) -> float:
        """Isotropic voxel size in mm."""
        return float(np.linalg.norm(self.affine[:3, 0]))

    @classmethod
    def around(
        cls,
        image: Image,
        shape: tuple[int, ...] | int,
        *,
        margin: float = 0.1,
        spacing: float | None = None,
        threshold: float | None = None,
    ) -> WorkingGrid:
        """The grid of ``shape`` centred on the content of ``image``, axes along R, A, S.

        Args:
            image: reference image (e.g. the fixed image of a registration pair).
            shape: grid size (an int means the same size along every axis).
            margin: extra extent on each side as a fraction of the content's extent.
            spacing: voxel size in mm; default the smallest isotropic size that fits the content
                plus margin into ``shape`` along every axis.
            threshold: content threshold (see :func:`content_box`).
        """
        if isinstance(shape, int):
            shape = (shape,) * image.ndim
        shape = tuple(int(s) for s in shape)
        if len(shape) != image.ndim or min(shape) < 2:
            raise InputError(
                f"WorkingGrid.around(): shape {shape} does not fit a {image.ndim}-D image"
            )
        wlo, whi = content_bounds_mm(image, threshold)
        extent = (whi - wlo) * (1 + 2 * margin)
        if spacing is None:
            spacing = float(np.max(extent / np.asarray(shape)))
        if spacing <= 0:
            raise InputError("WorkingGrid.around(): content has zero extent")
        centre = (wlo + whi) / 2
        affine = np.eye(4)
        affine[: image.ndim, : image.ndim] = np.eye(image.ndim) * spacing
        affine[: image.ndim, 3] = centre - spacing * (np.asarray(shape) - 1) / 2
        if image.ndim == 2:
            affine[2, 3] = image.affine[2, 3]
        return cls(shape, affine)

    @classmethod
    def with_spacing(
        cls,
        image: Image,
        spacing: float,
        *,
        margin: float = 0.1,
        multiple: int = 1,
        max_size: int = 256,
        threshold: float | None = None,
    ) -> WorkingGrid:
        """The grid of voxel size ``spacing`` (mm) around the content of ``image``, axes R, A, S.

        Each size is the content's extent plus ``margin`` on each side divided by ``spacing``,
        rounded up to a multiple of ``multiple``; if a size would exceed ``max_size`` the
        spacing grows until every size fits (``max_size`` is rounded down to ``multiple``).
        """
        wlo, whi = content_bounds_mm(image, threshold)
        extent = np.maximum((whi - wlo) * (1 + 2 * margin), 1e-6)
        limit = max(multiple, (int(max_size) // multiple) * multiple)
        spacing = max(float(spacing), float(np.max(extent)) / limit)
        sizes = np.ceil(extent / spacing / multiple - 1e-9).astype(int) * multiple
        shape = tuple(int(min(max(s, 2 * multiple), limit)) for s in sizes)
        return cls.around(image, shape, margin=margin, spacing=spacing, threshold=threshold)


def to_working_grid(
    image: Image,
    shape: tuple[int, ...] | int,
    *,
    margin: float = 0.1,
    spacing: float | None = None,
    threshold: float | None = None,
    reference: Image | None = None,
    order: int | None = None,
) -> tuple[Image, WorkingGrid]:
    """Resample ``image`` onto a working grid around the content of ``reference`` (default itself).

    See :meth:`WorkingGrid.around` for ``margin``, ``spacing`` and ``threshold`` and
    :meth:`WorkingGrid.resample` for ``order``. Returns the resampled image and its grid.
    """
    grid = WorkingGrid.around(
        reference or image, shape, margin=margin, spacing=spacing, threshold=threshold
    )
    return grid.resample(image, order=order), grid


def grid_mismatch_mm(a: Image, b: Image) -> float:
    """Largest distance (mm) between the world positions of corresponding grid corners."""
    corners = np.array(np.meshgrid(*[[0, s - 1] for s in a.shape], indexing="ij"))
    corners = corners.reshape(a.ndim, -1).T
    return float(
        np.max(np.linalg.norm(a.index_to_world(corners) - b.index_to_world(corners), axis=1))
    )


def check_same_grid(
    reference: Image,
    other: Image,
    *,
    atol_mm: float = 1e-3,
    header_tolerance: float = 0.05,
    max_shift_mm: float = 10.0,
) -> Image:
    """Check that ``other`` lies on ``reference``'s grid; return it on exactly that grid.

    Accepted: equal shapes and grid corners within ``atol_mm`` (the affine of ``reference`` is then
    used). Also accepted, with a logged warning: equal shapes, the same orientation codes and voxel
    sizes within ``header_tolerance`` (relative) and grid corners at most ``max_shift_mm``
    apart, i.e. headers that differ by what looks like a rounding
    (a map shifted farther is a map of another place and is refused). World space decides in
    that case: ``other`` is resampled through its own header onto
    ``reference``'s grid (nearest neighbour for label maps). The OASIS tissue maps in the test data
    are such a case (spacing 0.98 x 0.97 x 1 mm and 3 / 6 mm of origin shift against a 1 mm image):
    placed through their own header they cover the brain exactly (Dice 1.0 with the image's
    non-zero voxels), laid voxel-for-voxel they do not (0.96).

    Raises:
        InputError: different shapes, orientations or spacings, or corners too far apart (one
            line naming both files).
    """
    if reference.shape != other.shape:
        raise InputError(
            f"{other.source}: grid {other.shape} differs from "
            f"{reference.source} grid {reference.shape}"
        )
    mismatch = grid_mismatch_mm(reference, other)
    if mismatch <= atol_mm:
        return Image(other.data, reference.affine.copy(), other.is_label, other.source)
    rel = np.abs(np.asarray(other.spacing) / np.asarray(reference.spacing) - 1)
    near = mismatch <= max_shift_mm  # a rounding, not a map of another place
    if reference.orientation == other.orientation and np.all(rel <= header_tolerance) and near:
        log.warning(
            "%s: header differs from %s by up to %.2f mm at the grid corners (spacing %s vs %s); "
            "same shape and orientation, so accepted and resampled through its own header onto "
            "the grid of %s",
            other.source,
            reference.source,
            mismatch,
            tuple(round(s, 4) for s in other.spacing),
            tuple(round(s, 4) for s in reference.spacing),
            reference.source,
        )
        order = 0 if other.is_label else 1
        data = resample_array(
            other.data, other.affine, reference.affine, reference.shape, order=order, cval=0.0
        )
        return Image(data, reference.affine.copy(), other.is_label, other.source)
    raise InputError(
        f"{other.source}: grid does not match {reference.source} "
        f"(corners up to {mismatch:.1f} mm apart, "
        f"orientation {other.orientation} vs {reference.orientation}, spacing "
        f"{tuple(round(s, 3) for s in other.spacing)} vs "
        f"{tuple(round(s, 3) for s in reference.spacing)})"
    )
