"""The Field value object: unit conversion on an oblique anisotropic grid, mapped points, shape
checks, and registration results carrying their field on the fixed grid."""

from __future__ import annotations

import numpy as np
import pytest

from medistill.errors import InputError
from medistill.io import Grid
from medistill.spatial import Field


def _grid() -> Grid:
    c, s = np.cos(0.4), np.sin(0.4)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) * np.array([2.0, 1.0, 3.0])
    affine[:3, 3] = [5.0, -3.0, 1.0]
    return Grid((6, 7, 8), affine)


def test_voxel_to_mm_uses_the_grids_linear_part_and_round_trips():
    grid = _grid()
    data = np.zeros((3, *grid.shape), np.float32)
    data[0] = 1.0  # one voxel along array axis 0 = 2 mm along the rotated first axis
    field = Field(data, grid)
    mm = field.to("mm")
    assert mm.units == "mm" and mm.grid == grid
    expected = grid.affine[:3, 0]
    assert np.allclose(mm.data[:, 2, 3, 4], expected, atol=1e-6)
    assert np.linalg.norm(mm.data[:, 0, 0, 0]) == pytest.approx(2.0, abs=1e-6)
    assert np.allclose(mm.to("voxel").data, data, atol=1e-6)
    assert field.to("voxel") is field


def test_points_are_the_world_points_of_displaced_voxels():
    grid = _grid()
    rng = np.random.default_rng(0)
    data = rng.normal(size=(3, *grid.shape)).astype(np.float32)
    field = Field(data, grid)
    idx = np.array([[1, 2, 3], [4, 5, 6]])
    expected = grid.index_to_world(idx + data[:, idx[:, 0], idx[:, 1], idx[:, 2]].T)
    assert np.allclose(field.points(idx), expected, atol=1e-5)
    assert np.allclose(field.to("mm").points(idx), expected, atol=1e-4)


def test_bad_fields_are_refused():
    grid = _grid()
    with pytest.raises(InputError, match="does not fit grid"):
        Field(np.zeros((3, 6, 7, 9)), grid)
    with pytest.raises(InputError, match="units"):
        Field(np.zeros((3, 6, 7, 8)), grid, "metre")


def test_registration_carries_its_field_on_the_fixed_grid():
    from medistill.io import Image
    from medistill.spatial.native import register_images

    rng = np.random.default_rng(1)
    data = rng.random((12, 12, 12)).astype(np.float32)
    fixed = Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))
    moving = Image(data, np.diag([2.0, 2.0, 2.0, 1.0]))

    def zero(f, m):
        import torch

        return torch.zeros(1, 3, *f.shape[2:])

    reg = register_images(zero, fixed, moving, shape=(8, 8, 8), initial="none")
    assert reg.field.grid == fixed.grid and reg.field.units == "voxel"
    assert reg.disp_voxel is reg.field.data
    assert np.allclose(reg.disp_voxel, 0.0, atol=1e-5)
