"""Tests of medistill.spatial.compose and integrate_velocity."""

from __future__ import annotations

import math

import pytest
import torch

from medistill.errors import InputError
from medistill.spatial import (
    affine_to_disp,
    compose,
    identity_grid,
    integrate_velocity,
    jacobian_det,
    random_smooth_disp,
    warp,
)

SHAPES = [(48, 48), (32, 36, 40)]


def interior(nd, margin):
    return (...,) + tuple(slice(margin, -margin) for _ in range(nd))


def fields(shape, gen, max_disp=4.0):
    kw = dict(control_points=6, max_disp=max_disp, generator=gen, dtype=torch.float64)
    return random_smooth_disp(shape, **kw), random_smooth_disp(shape, **kw)


@pytest.mark.parametrize("shape", SHAPES)
def test_compose_is_exact_on_a_linear_image(shape, gen):
    # warping the coordinate ramps is exact with linear interpolation, so
    # warp(warp(grid, f), s) = grid + s + f(grid + s) = grid + compose(f, s) away from the border
    first, second = fields(shape, gen)
    grid = identity_grid(shape, dtype=torch.float64)[None]
    twice = warp(warp(grid, first), second)
    sl = interior(len(shape), 9)  # > 2 * max_disp: no border clamping involved
    assert torch.allclose(twice[sl], (grid + compose(first, second))[sl], atol=1e-10)
    # the naive sum is not the composition
    assert (twice - grid - first - second)[sl].abs().max() > 0.2


@pytest.mark.parametrize("shape", SHAPES)
def test_compose_matches_warping_twice_on_a_smooth_image(shape, gen):
    nd = len(shape)
    grid = identity_grid(shape, dtype=torch.float64)
    # sum of sinusoids, periods 30..38 voxels: linear interpolation error <= h^2/8 |f''| ~ 0.006
    # per axis and interpolation, amplitude nd
    img = sum(torch.sin(2 * math.pi * grid[k] / (30 + 4 * k) + k) for k in range(nd))[None, None]
    first, second = fields(shape, gen)
    twice = warp(warp(img, first), second)
    once = warp(img, compose(first, second))
    naive = warp(img, first + second)
    sl = interior(nd, 8)
    err = (twice - once)[sl].abs()
    assert err.max() < 0.03 and err.mean() < 0.006
    assert (twice - naive)[sl].abs().max() > 3 * err.max()


def test_compose_with_affine_first_is_a_times_second_plus_first(gen):
    # agg_1(x) = A u_1(x) + u_0(x) exactly when x + u_1(x) stays inside the grid
    shape = (20, 22, 24)
    mat = torch.eye(3, 4, dtype=torch.float64) + 0.05 * torch.randn(3, 4, generator=gen).double()
    u0 = affine_to_disp(mat[None], shape)
    u1 = random_smooth_disp(shape, max_disp=2.0, generator=gen, dtype=torch.float64)
    out = compose(u0, u1)
    expected = torch.einsum("ij,bj...->bi...", mat[:, :3], u1) + u0
    sl = interior(3, 2)
    assert torch.allclose(out[sl], expected[sl], atol=1e-10)


def test_compose_identity_and_errors(gen):
    shape = (8, 9)
    u = random_smooth_disp(shape, max_disp=2.0, generator=gen, dtype=torch.float64)
    zero = torch.zeros_like(u)
    assert torch.allclose(compose(u, zero), u) and torch.allclose(compose(zero, u), u)
    with pytest.raises(InputError, match="'first'"):
        compose(u, torch.zeros(1, 2, 8, 10))
    with pytest.raises(InputError, match="'second'"):
        compose(u, torch.zeros(1, 3, 8, 9))


def test_compose_is_differentiable(gen):
    shape = (5, 6)
    f = (0.3 * torch.randn(1, 2, *shape, generator=gen, dtype=torch.float64)).requires_grad_()
    s = (0.3 * torch.randn(1, 2, *shape, generator=gen, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(compose, (f, s), eps=1e-6, atol=1e-6)


def test_integrate_constant_velocity_is_the_translation():
    vel = torch.zeros(1, 3, 6, 7, 8, dtype=torch.float64)
    vel[:, 0], vel[:, 2] = 1.5, -0.75
    assert torch.allclose(integrate_velocity(vel, steps=5), vel, atol=1e-12)
    assert torch.equal(integrate_velocity(vel, steps=0), vel)
    with pytest.raises(InputError, match="'steps'"):
        integrate_velocity(vel, steps=-1)


def test_integrate_linear_velocity_gives_matrix_exponential():
    # v(x) = W (x - c): scaling and squaring gives ((I + W / 2^n)^(2^n) - I)(x - c) exactly
    # inside the grid, and (I + W/2^n)^(2^n) -> expm(W) as n grows (error ~ |W|^2 / 2^(n+1))
    shape = (41, 41)
    w = torch.tensor([[0.0, 0.3], [-0.3, 0.05]], dtype=torch.float64)
    c = torch.tensor([20.0, 20.0], dtype=torch.float64)
    mat = torch.cat([w, torch.zeros(2, 1, dtype=torch.float64)], dim=1)
    vel = affine_to_disp((mat + torch.eye(2, 3, dtype=torch.float64))[None], shape)
    disp = integrate_velocity(vel, steps=8)
    rel = identity_grid(shape, dtype=torch.float64) - c.view(2, 1, 1)
    expected = torch.einsum("ij,j...->i...", torch.linalg.matrix_exp(w) - torch.eye(2), rel)
    sl = interior(2, 12)
    assert torch.allclose(disp[0][sl], expected[sl], atol=4e-3)
    det = jacobian_det(disp)[interior(2, 13)]
    assert torch.allclose(det, torch.exp(torch.trace(w)).expand_as(det), atol=1e-3)
