"""A displacement field as a value that leaves a task: its data, the grid it lives on, its units.

Inside the package fields are tensors ``(B, ndim, *S)`` in voxels of an implied grid
(``docs/METHODS.md``); where a result leaves a task (registration's ``Registration``, label
transfer's ``Transfer``) the grid and the units travel with the numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medistill.errors import InputError
from medistill.io.geometry import Grid

UNITS = ("voxel", "mm")

__all__ = ["UNITS", "Field"]


@dataclass(frozen=True, eq=False)
class Field:
    """A displacement field on a grid.

    Attributes:
        data: ``(ndim, *grid.shape)`` displacement; channel ``k`` along array axis ``k`` of the
            grid (``units="voxel"``, grid voxels) or along world axis ``k`` (``units="mm"``,
            RAS mm).
        grid: the grid the field is defined on (e.g. the fixed image's own grid).
        units: ``"voxel"`` or ``"mm"``.

    Voxel ``y`` of ``grid`` maps to the world point ``A (y + d_voxel(y)) = A y + d_mm(y)``, with
    ``A`` the grid's affine (the backward-warping convention: the warped image at ``y`` is the
    moving image at that point).
    """

    data: np.ndarray
    grid: Grid
    units: str = "voxel"

    def __post_init__(self) -> None:
        data = np.asarray(self.data)
        expected = (self.grid.ndim, *self.grid.shape)
        if data.shape != expected:
            raise InputError(f"Field: data of shape {data.shape} does not fit grid {expected}")
        if self.units not in UNITS:
            raise InputError(f"Field: units must be one of {UNITS}, got {self.units!r}")
        object.__setattr__(self, "data", data)

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions (2 or 3)."""
        return self.grid.ndim

    def to(self, units: str) -> Field:
        """The same field in ``units`` (``"voxel"`` or ``"mm"``): ``d_mm = A_lin d_voxel`` with
        ``A_lin`` the grid's ``(ndim, ndim)`` linear part."""
        if units not in UNITS:
            raise InputError(f"Field.to(): units must be one of {UNITS}, got {units!r}")
        if units == self.units:
            return self
        nd = self.ndim
        lin = self.grid.affine[:nd, :nd]
        matrix = lin if units == "mm" else np.linalg.inv(lin)
        flat = self.data.reshape(nd, -1).astype(np.float64)
        out = (matrix @ flat).reshape(self.data.shape).astype(self.data.dtype, copy=False)
        return Field(out, self.grid, units)

    def points(self, index: np.ndarray) -> np.ndarray:
        """World points (mm, RAS) that grid voxel indices ``(N, ndim)`` map to (the field is
        interpolated linearly between voxels, nearest value beyond the edge)."""
        coords = np.asarray(index, dtype=np.float64)
        voxel = self.to("voxel").data
        disp = np.stack(
            [ndimage.map_coordinates(c, coords.T, order=1, mode="nearest") for c in voxel], axis=1
        )
        return self.grid.index_to_world(coords + disp)
