"""Tests of medistill.spatial.resize."""

from __future__ import annotations

import pytest
import torch

from medistill.errors import InputError
from medistill.spatial import identity_grid, resize_disp, upsample_disp


def linear_field(shape, w, b):
    nd = len(shape)
    grid = identity_grid(shape, dtype=torch.float64)
    return (torch.einsum("ij,j...->i...", w, grid) + b.view(nd, *([1] * nd)))[None]


@pytest.mark.parametrize(
    ("old", "new"),
    [((9, 13), (17, 25)), ((9, 13), (5, 20)), ((5, 6, 7), (9, 11, 13)), ((9, 8, 7), (5, 4, 3))],
)
def test_linear_field_keeps_mapping_the_same_points(old, new, gen, device):
    # old coordinate x <-> new coordinate y = r x, r_k = (new_k - 1) / (old_k - 1);
    # x maps to x + u(x), so y must map to r (x + u(x)): v(y) = r * u(y / r)
    nd = len(old)
    w = 0.1 * torch.randn(nd, nd, generator=gen, dtype=torch.float64)
    b = torch.randn(nd, generator=gen, dtype=torch.float64)
    u = linear_field(old, w, b)
    v = resize_disp(u.to(device), new).cpu()
    assert v.shape == (1, nd, *new)
    r = torch.tensor(
        [(n - 1) / (o - 1) for n, o in zip(new, old, strict=True)], dtype=torch.float64
    )
    y = identity_grid(new, dtype=torch.float64)
    x = y / r.view(nd, *([1] * nd))
    expected = r.view(nd, *([1] * nd)) * (
        torch.einsum("ij,j...->i...", w, x) + b.view(nd, *([1] * nd))
    )
    assert torch.allclose(v[0], expected, atol=1e-10)
    # physical check at one voxel: the target of old voxel 0 is the target of new voxel 0
    origin = (0,) * nd
    assert torch.allclose(v[(0, slice(None), *origin)], r * u[(0, slice(None), *origin)])


def test_upsample_disp_factor_and_scaling():
    u = torch.ones(2, 3, 4, 5, 6, dtype=torch.float64)
    up = upsample_disp(u)
    assert up.shape == (2, 3, 8, 10, 12)
    scale = torch.tensor([7 / 3, 9 / 4, 11 / 5], dtype=torch.float64).view(1, 3, 1, 1, 1)
    assert torch.allclose(up, scale.expand_as(up))
    assert upsample_disp(u, (1, 2, 1)).shape == (2, 3, 4, 10, 6)
    assert torch.equal(resize_disp(u, (4, 5, 6)), u)


def test_errors():
    with pytest.raises(InputError, match="'shape'"):
        resize_disp(torch.zeros(1, 2, 4, 4), (8, 8, 8))
    with pytest.raises(InputError, match="'factor'"):
        upsample_disp(torch.zeros(1, 2, 4, 4), 0)
