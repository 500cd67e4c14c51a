"""The :class:`Image` container: a voxel array and its voxel-to-world affine."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import nibabel as nib
import numpy as np

from medistill.errors import InputError
from medistill.io.geometry import Grid


@dataclass
class Image:
    """A 2-D or 3-D scalar image on a regular grid.

    Attributes:
        data: voxel values, shape ``(X, Y)`` or ``(X, Y, Z)`` (array axis ``k`` is voxel index
            ``k`` of the affine; no channel axis). Intensity images are ``float32``; label maps are
            an integer dtype.
        affine: ``(4, 4)`` float64 map from voxel indices ``(i, j, k, 1)`` to world coordinates in
            mm, RAS+ (the NIfTI convention). 2-D images use the upper-left block for ``(i, j)``
            and keep the third column as a unit vector.
        is_label: whether ``data`` is a label map (nearest / one-hot resampling, integer values).
        source: where it was read from, for messages.
    """

    data: np.ndarray
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    is_label: bool = False
    source: str = "<array>"

    def __post_init__(self) -> None:
        self.data = np.asarray(self.data)
        self.affine = np.asarray(self.affine, dtype=np.float64)
        if self.data.ndim not in (2, 3):
            raise InputError(
                f"{self.source}: expected a 2-D or 3-D image, got shape {tuple(self.data.shape)}"
            )
        if self.affine.shape != (4, 4):
            raise InputError(f"{self.source}: affine must be 4x4, got {self.affine.shape}")
        if not np.all(np.isfinite(self.affine)) or abs(np.linalg.det(self.affine[:3, :3])) < 1e-12:
            raise InputError(f"{self.source}: the voxel-to-world affine is singular or not finite")

    # ------------------------------------------------------------------ geometry
    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return int(self.data.ndim)

    @property
    def shape(self) -> tuple[int, ...]:
        """Grid size in voxels, ``(X, Y[, Z])``."""
        return tuple(int(s) for s in self.data.shape)

    @property
    def grid(self) -> Grid:
        """The image's grid as a value (shape and a copy of the affine)."""
        return Grid(self.shape, self.affine)

    @property
    def spacing(self) -> tuple[float, ...]:
        """Voxel size in mm along each array axis (column norms of the affine)."""
        return self.grid.voxel_size

    @property
    def origin(self) -> tuple[float, ...]:
        """World position (mm, RAS) of the centre of voxel ``(0, 0, 0)``."""
        return tuple(float(v) for v in self.affine[:3, 3])

    @property
    def orientation(self) -> str:
        """Orientation codes of the array axes, e.g. ``'RAS'`` or ``'LIA'`` (``'RA'`` in 2-D)."""
        return "".join(nib.aff2axcodes(self.affine))[: self.ndim]

    def with_data(self, data: np.ndarray, *, is_label: bool | None = None) -> Image:
        """A copy on the same grid with other voxel values."""
        return replace(
            self, data=np.asarray(data), is_label=self.is_label if is_label is None else is_label
        )

    def labels(self) -> np.ndarray:
        """Sorted label values present, background 0 excluded (label maps only)."""
        values = np.unique(self.data)
        return values[values != 0]

    def index_to_world(self, index: np.ndarray) -> np.ndarray:
        """Voxel indices ``(N, ndim)`` -> world points ``(N, 3)`` in mm (RAS)."""
        return self.grid.index_to_world(index)

    def world_to_index(self, points: np.ndarray) -> np.ndarray:
        """World points ``(N, 3)`` in mm (RAS) -> voxel indices ``(N, ndim)`` (fractional)."""
        return self.grid.world_to_index(points)
