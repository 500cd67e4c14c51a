"""The Grid value object: equality by value, no aliasing, world maps, resampling through world
space with a known translation, and WorkingGrid / Image.grid being Grids."""

from __future__ import annotations

import numpy as np
import pytest

from medistill.errors import InputError
from medistill.io import Grid, Image, WorkingGrid


def _oblique(spacing=(1.5, 2.0, 2.5)) -> np.ndarray:
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot * np.asarray(spacing)
    affine[:3, 3] = [-20.0, 7.0, 3.0]
    return affine


def test_grid_is_a_value_and_does_not_alias_its_affine():
    affine = _oblique()
    grid = Grid((4, 5, 6), affine)
    affine[0, 3] = 99.0  # the caller's array changes; the grid does not
    assert grid.affine[0, 3] == -20.0
    with pytest.raises(ValueError):
        grid.affine[0, 0] = 1.0  # read-only
    same = Grid([4, 5, 6], _oblique())
    assert same == grid and hash(same) == hash(grid)
    assert Grid((4, 5, 6), np.eye(4)) != grid and Grid((4, 5, 7), _oblique()) != grid
    assert grid.voxel_size == pytest.approx((1.5, 2.0, 2.5))
    with pytest.raises(InputError, match="affine must be 4x4"):
        Grid((4, 5, 6), np.eye(3))


def test_world_maps_round_trip_and_image_grid():
    image = Image(np.zeros((4, 5, 6), np.float32), _oblique())
    grid = image.grid
    assert grid == Grid(image.shape, image.affine)
    idx = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [3.5, 4.0, 5.5]])
    world = grid.index_to_world(idx)
    assert np.allclose(world[0], [-20.0, 7.0, 3.0])
    assert np.allclose(grid.world_to_index(world), idx)
    assert np.allclose(image.index_to_world(idx), world)
    moved = grid.translated([1.0, -2.0, 0.5])
    assert np.allclose(moved.index_to_world(idx) - world, [1.0, -2.0, 0.5])


def test_sample_through_world_space_follows_a_known_translation():
    data = np.zeros((20, 20, 20), np.float32)
    data[10, 10, 10] = 1.0
    source = Grid(data.shape, np.diag([2.0, 2.0, 2.0, 1.0]))
    # a grid whose voxel y lies 4 mm (2 source voxels) further along x
    target = source.translated([4.0, 0.0, 0.0])
    out = target.sample(data, source, order=0)
    assert out[8, 10, 10] == 1.0 and out.sum() == 1.0
    image = Image(data, source.affine)
    assert np.array_equal(target.resample(image, order=0).data, out)


def test_working_grid_is_a_grid():
    image = Image(np.ones((10, 12, 14), np.float32), np.diag([1.0, 1.0, 1.0, 1.0]))
    grid = WorkingGrid.around(image, 8)
    assert isinstance(grid, Grid) and grid.ndim == 3
    assert grid.voxel_size == pytest.approx((grid.spacing,) * 3)
