"""Tests of medistill.spatial.bspline."""

from __future__ import annotations

import pytest
import torch

from medistill.errors import InputError
from medistill.spatial import bspline_disp, bspline_weights, random_smooth_disp


def test_weights_partition_of_unity_and_knots():
    w = bspline_weights(9, 6, dtype=torch.float64)
    assert w.shape == (9, 6)
    assert (w >= 0).all() and torch.allclose(w.sum(1), torch.ones(9, dtype=torch.float64))
    # voxel 0 sits on control point 1: weights 1/6, 4/6, 1/6 on points 0, 1, 2
    assert torch.allclose(w[0, :3], torch.tensor([1, 4, 1], dtype=torch.float64) / 6)
    assert torch.allclose(w[-1, -3:], torch.tensor([1, 4, 1], dtype=torch.float64) / 6)


@pytest.mark.parametrize(("shape", "grid"), [((13, 17), (4, 6)), ((8, 9, 10), (5, 4, 6))])
def test_constant_control_gives_constant_field(shape, grid, device):
    nd = len(shape)
    values = torch.tensor([1.5, -2.0, 0.25][:nd], dtype=torch.float64, device=device)
    control = values.view(1, nd, *([1] * nd)).expand(2, nd, *grid)
    dense = bspline_disp(control, shape)
    assert dense.shape == (2, nd, *shape) and dense.device.type == device.type
    assert torch.allclose(dense, values.view(1, nd, *([1] * nd)).expand_as(dense))


@pytest.mark.parametrize(("shape", "grid"), [((13, 17), (4, 6)), ((8, 9, 10), (5, 4, 7))])
def test_linear_control_reproduces_linear_field_spanning_the_grid(shape, grid):
    # cubic B-splines reproduce linear functions: control value i (its index) along axis k gives
    # the spline parameter t = 1 + x (G - 3) / (S - 1), i.e. points 1 .. G-2 span voxels 0 .. S-1
    nd = len(shape)
    control = torch.zeros(1, nd, *grid, dtype=torch.float64)
    for k in range(nd):
        view = [1] * nd
        view[k] = grid[k]
        control[0, k] = torch.arange(grid[k], dtype=torch.float64).view(view)
    dense = bspline_disp(control, shape)
    for k in range(nd):
        view = [1] * nd
        view[k] = shape[k]
        x = torch.arange(shape[k], dtype=torch.float64).view(view)
        t = 1 + x * (grid[k] - 3) / (shape[k] - 1)
        assert torch.allclose(dense[0, k], t.expand(shape), atol=1e-12)


def test_magnitude_bound_per_axis(gen):
    bound = (1.0, 2.5, 4.0)
    disp = random_smooth_disp((12, 14, 16), batch=4, max_disp=bound, generator=gen)
    assert disp.shape == (4, 3, 12, 14, 16) and disp.dtype == torch.get_default_dtype()
    for k, m in enumerate(bound):
        peak = disp[:, k].abs().max()
        assert peak <= m + 1e-6
        assert peak > 0.3 * m  # the bound is not vacuous
    default = random_smooth_disp((20, 30), generator=gen)  # 10 % of each size
    assert default[:, 0].abs().max() <= 2.0 + 1e-6 and default[:, 1].abs().max() <= 3.0 + 1e-6


def test_seeded_generator_is_deterministic():
    def draw(seed):
        g = torch.Generator().manual_seed(seed)
        return random_smooth_disp((10, 11, 12), batch=2, max_disp=3.0, generator=g)

    assert torch.equal(draw(7), draw(7))
    assert not torch.allclose(draw(7), draw(8))
    a = random_smooth_disp((10, 11), max_disp=2.0, dtype=torch.float64)
    assert a.dtype == torch.float64


def test_gradient_flows_to_control():
    control = torch.randn(1, 2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c: bspline_disp(c, (7, 8)), (control,))


def test_errors():
    with pytest.raises(InputError, match=">= 4"):
        bspline_disp(torch.zeros(1, 2, 3, 5), (8, 8))
    with pytest.raises(InputError, match="'max_disp'"):
        random_smooth_disp((8, 8), max_disp=(1.0, 2.0, 3.0))
