"""Tests of medistill.spatial.affine_to_disp and the Jacobian helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import affine_transform

from medistill.errors import InputError
from medistill.spatial import (
    affine_to_disp,
    identity_grid,
    jacobian_det,
    random_smooth_disp,
    spatial_gradient,
    warp,
)


def random_matrix(nd, gen, scale=0.1):
    mat = torch.eye(nd, nd + 1, dtype=torch.float64)
    mat = mat + scale * torch.randn(nd, nd + 1, generator=gen, dtype=torch.float64)
    mat[:, nd] = torch.randn(nd, generator=gen, dtype=torch.float64) * 2
    return mat


@pytest.mark.parametrize("shape", [(7, 9), (5, 7, 9)])
def test_centre_convention(shape, gen, device):
    nd = len(shape)
    mat = random_matrix(nd, gen).to(device)
    disp = affine_to_disp(mat[None], shape)
    assert disp.shape == (1, nd, *shape) and disp.device.type == device.type
    centre = tuple((s - 1) // 2 for s in shape)  # odd sizes: c is a voxel
    c = torch.tensor(centre, dtype=torch.float64, device=device)
    target = c + disp[(0, slice(None), *centre)]
    assert torch.allclose(target, c + mat[:, nd])  # the centre voxel maps to c + t
    # general voxel: A (x - c) + t + c
    x = torch.tensor([1.0] * nd, dtype=torch.float64, device=device)
    expected = mat[:, :nd] @ (x - c) + mat[:, nd] + c
    assert torch.allclose(x + disp[(0, slice(None)) + (1,) * nd], expected)
    # about the origin: voxel 0 maps to t
    disp0 = affine_to_disp(mat, shape, center=False)
    assert torch.allclose(disp0[(0, slice(None)) + (0,) * nd], mat[:, nd])


@pytest.mark.parametrize("shape", [(10, 12), (6, 7, 8)])
def test_affine_warp_matches_scipy_affine_transform(shape, gen):
    # scipy maps output voxel o to input voxel A o + t: the center=False convention
    nd = len(shape)
    mat = random_matrix(nd, gen)
    img = torch.rand(1, 1, *shape, generator=gen, dtype=torch.float64)
    out = warp(img, affine_to_disp(mat[None], shape, center=False))
    ref = affine_transform(
        img[0, 0].numpy(), mat[:, :nd].numpy(), offset=mat[:, nd].numpy(), order=1, mode="nearest"
    )
    np.testing.assert_allclose(out[0, 0].numpy(), ref, atol=1e-10)


@pytest.mark.parametrize("shape", [(6, 7), (4, 5, 6)])
def test_jacobian_of_affine_field_is_det_a_everywhere(shape, gen):
    nd = len(shape)
    mats = torch.stack([random_matrix(nd, gen, 0.3) for _ in range(2)])
    det = jacobian_det(affine_to_disp(mats, shape))
    assert det.shape == (2, 1, *shape)
    for b in range(2):
        expected = torch.linalg.det(mats[b, :, :nd])
        assert torch.allclose(det[b], expected.expand_as(det[b]), atol=1e-10)  # border too
    flip = torch.diag(torch.tensor([-1.0] + [1.0] * (nd - 1), dtype=torch.float64))
    flip = torch.cat([flip, torch.zeros(nd, 1, dtype=torch.float64)], 1)
    assert torch.allclose(
        jacobian_det(affine_to_disp(flip, shape)), -torch.ones(1, 1, *shape).double()
    )


@pytest.mark.parametrize("shape", [(6, 7), (4, 5, 6)])
def test_spatial_gradient_matches_numpy_gradient(shape, gen):
    nd = len(shape)
    disp = random_smooth_disp(shape, batch=2, max_disp=3.0, generator=gen, dtype=torch.float64)
    grad = spatial_gradient(disp)
    assert grad.shape == (2, nd, nd, *shape)
    for b in range(2):
        for k in range(nd):
            ref = np.gradient(disp[b, k].numpy(), axis=tuple(range(nd)), edge_order=1)
            for j in range(nd):
                np.testing.assert_allclose(grad[b, k, j].numpy(), ref[j], atol=1e-12)


def test_jacobian_of_quadratic_field_is_exact_inside():
    # u = (a y^2, b x y): central differences are exact for quadratics,
    # J = [[1, 2 a y], [b y, 1 + b x]]
    a, b = 0.01, 0.02
    x, y = identity_grid((9, 10), dtype=torch.float64)
    disp = torch.stack([a * y**2, b * x * y])[None]
    det = jacobian_det(disp)[0, 0]
    expected = (1 + b * x) - 2 * a * y * b * y
    assert torch.allclose(det[1:-1, 1:-1], expected[1:-1, 1:-1], atol=1e-12)


def test_jacobian_det_3d_matches_linalg_det(gen):
    disp = random_smooth_disp((6, 7, 8), max_disp=3.0, generator=gen, dtype=torch.float64)
    jac = spatial_gradient(disp)[0] + torch.eye(3, dtype=torch.float64).view(3, 3, 1, 1, 1)
    ref = torch.linalg.det(jac.permute(2, 3, 4, 0, 1))
    assert torch.allclose(jacobian_det(disp)[0, 0], ref, atol=1e-12)


def test_errors():
    with pytest.raises(InputError, match="'matrix'"):
        affine_to_disp(torch.eye(3, 4), (5, 6))
    with pytest.raises(InputError, match=">= 2"):
        jacobian_det(torch.zeros(1, 2, 1, 5))


def test_rotation_matrix_known_rotations():
    import math

    import torch

    from medistill.spatial import rotation_matrix

    quarter = rotation_matrix(torch.tensor([[0.0, 0.0, math.pi / 2]], dtype=torch.float64))[0]
    assert torch.allclose(quarter @ torch.tensor([1.0, 0, 0], dtype=torch.float64),
                          torch.tensor([0.0, 1, 0], dtype=torch.float64), atol=1e-12)  # fmt: skip
    plane = rotation_matrix(torch.tensor([[math.pi / 2]], dtype=torch.float64))[0]
    assert torch.allclose(plane, torch.tensor([[0.0, -1], [1, 0]], dtype=torch.float64), atol=1e-12)
    r = rotation_matrix(torch.randn(4, 3, dtype=torch.float64))
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand(4, 3, 3))
