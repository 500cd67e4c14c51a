"""Tests of medistill.spatial.warp: warp, resample, sample_at_points, SpatialTransformer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import map_coordinates

from medistill.errors import InputError
from medistill.spatial import (
    SpatialTransformer,
    affine_to_disp,
    identity_grid,
    normalized_to_voxel,
    random_smooth_disp,
    resample,
    sample_at_points,
    voxel_to_normalized,
    warp,
)

SHAPES = [(9, 11), (7, 8, 9)]


def const_disp(shape, axis, value, dtype=torch.float64, device="cpu"):
    disp = torch.zeros(1, len(shape), *shape, dtype=dtype, device=device)
    disp[:, axis] = value
    return disp


def test_identity_grid_and_normalisation_round_trip():
    grid = identity_grid((3, 4, 5), dtype=torch.float64)
    assert grid.shape == (3, 3, 4, 5)
    assert grid[2, 1, 2, 3] == 3 and grid[1, 1, 2, 3] == 2 and grid[0, 1, 2, 3] == 1
    pts = grid.movedim(0, -1)
    norm = voxel_to_normalized(pts, (3, 4, 5))
    # corners map to -1 / +1, components reversed (W first)
    assert torch.allclose(norm[0, 0, 0], torch.tensor([-1.0, -1.0, -1.0], dtype=torch.float64))
    assert torch.allclose(norm[2, 3, 4], torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64))
    assert torch.allclose(norm[0, 0, 4], torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    assert torch.allclose(normalized_to_voxel(norm, (3, 4, 5)), pts)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("shift", [-2, -1, 1, 3])
def test_integer_shift_equals_roll(shape, shift, device):
    rng = np.random.default_rng(0)
    moving = rng.random(shape)
    img = torch.from_numpy(moving)[None, None].to(device)
    for axis in range(len(shape)):
        out = warp(img, const_disp(shape, axis, float(shift), device=device))[0, 0].cpu().numpy()
        rolled = np.roll(moving, -shift, axis=axis)  # rolled[x] = moving[x + shift]
        n = shape[axis]
        inside = [slice(None)] * len(shape)
        inside[axis] = slice(max(0, -shift), min(n, n - shift))
        np.testing.assert_allclose(out[tuple(inside)], rolled[tuple(inside)], atol=1e-12)
        # outside: border padding repeats the edge slice
        edge = [slice(None)] * len(shape)
        edge[axis] = slice(n - shift, n) if shift > 0 else slice(0, -shift)
        edge_idx = n - 1 if shift > 0 else 0
        expected = np.take(moving, [edge_idx], axis=axis)
        np.testing.assert_allclose(
            out[tuple(edge)], np.broadcast_to(expected, out[tuple(edge)].shape), atol=1e-12
        )


@pytest.mark.parametrize("shape", [(17, 20), (10, 12, 14)])
def test_random_field_matches_scipy_map_coordinates(shape, gen):
    nd = len(shape)
    img = torch.rand(2, 2, *shape, generator=gen, dtype=torch.float64)
    # large enough to leave the grid in places (checks border padding)
    disp = random_smooth_disp(shape, batch=2, max_disp=4.0, generator=gen, dtype=torch.float64)
    out = warp(img, disp)
    coords = (identity_grid(shape, dtype=torch.float64) + disp).numpy()
    assert (coords < 0).any() and (coords[:, 0] > shape[0] - 1).any()
    for b in range(2):
        for c in range(2):
            ref = map_coordinates(img[b, c].numpy(), coords[b], order=1, mode="nearest")
            np.testing.assert_allclose(out[b, c].numpy(), ref, atol=1e-5)
    assert out.shape == img.shape and out.dtype == torch.float64
    assert nd == disp.shape[1]


def test_float32_close_to_float64(gen, device):
    shape = (10, 12, 14)
    img = torch.rand(1, 1, *shape, generator=gen, dtype=torch.float64)
    disp = random_smooth_disp(shape, max_disp=3.0, generator=gen, dtype=torch.float64)
    ref = warp(img.to(device), disp.to(device))
    out = warp(img.float().to(device), disp.float().to(device))
    assert out.dtype == torch.float32 and out.device.type == device.type
    assert torch.allclose(out.double(), ref, atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_nearest_mode_picks_nearest_voxel(shape, gen):
    img = torch.rand(1, 1, *shape, generator=gen, dtype=torch.float64)
    disp = random_smooth_disp(shape, max_disp=3.0, generator=gen, dtype=torch.float64)
    coords = identity_grid(shape, dtype=torch.float64) + disp[0]
    frac = coords - coords.floor()
    keep = ((frac - 0.5).abs() > 1e-6).all(dim=0)  # no rounding ties
    idx = coords.round().long()
    for k, n in enumerate(shape):
        idx[k] = idx[k].clamp(0, n - 1)
    expected = img[0, 0][tuple(idx)]
    out = warp(img, disp, mode="nearest")[0, 0]
    assert keep.float().mean() > 0.99
    assert torch.equal(out[keep], expected[keep])


def test_nearest_keeps_integer_dtype():
    labels = torch.arange(20).view(1, 1, 4, 5)
    out = warp(labels, const_disp((4, 5), 1, 1.2, dtype=torch.float32), mode="nearest")
    assert out.dtype == torch.int64
    assert torch.equal(out[0, 0, :, :4], labels[0, 0, :, 1:])
    with pytest.raises(InputError, match="warp_labels"):
        warp(labels, const_disp((4, 5), 1, 1.2, dtype=torch.float32))


def test_batch_one_field_broadcasts(gen):
    shape = (8, 9)
    img = torch.rand(3, 2, *shape, generator=gen, dtype=torch.float64)
    disp = random_smooth_disp(shape, max_disp=2.0, generator=gen, dtype=torch.float64)
    out = warp(img, disp)
    for b in range(3):
        assert torch.allclose(out[b : b + 1], warp(img[b : b + 1], disp))
    # and a single image against a batch of fields
    disps = random_smooth_disp(shape, batch=3, max_disp=2.0, generator=gen, dtype=torch.float64)
    out = warp(img[:1], disps)
    assert out.shape == (3, 2, *shape)
    assert torch.allclose(out[2:3], warp(img[:1], disps[2:3]))


@pytest.mark.parametrize(
    ("image_shape", "disp_shape", "match"),
    [
        ((1, 1, 6, 7), (1, 3, 6, 7), "disp"),  # channel count vs ndim
        ((1, 1, 6, 7), (1, 3, 6, 7, 5), "disp"),  # ndim mismatch
        ((2, 1, 6, 7), (3, 2, 6, 7), "batch"),  # batch mismatch
        ((1, 1, 6, 7), (1, 2, 6, 8), "spatial size"),  # spatial mismatch
        ((1, 6, 7), (1, 2, 6, 7), "image"),  # image without channel axis
    ],
)
def test_warp_rejects_bad_shapes(image_shape, disp_shape, match):
    with pytest.raises(ValueError, match=match) as info:
        warp(torch.zeros(image_shape), torch.zeros(disp_shape))
    assert isinstance(info.value, InputError)
    assert "warp()" in str(info.value)


def test_warp_rejects_unknown_mode_listing_options():
    img, disp = torch.zeros(1, 1, 4, 4), torch.zeros(1, 2, 4, 4)
    with pytest.raises(InputError, match=r"'mode'.*'linear', 'nearest'.*did you mean 'linear'"):
        warp(img, disp, mode="bilinear")
    with pytest.raises(InputError, match="'padding'"):
        warp(img, disp, padding="edge")
    with pytest.raises(InputError, match="'mode'"):
        SpatialTransformer(mode="cubic")


def test_spatial_transformer_module_matches_function(gen):
    shape = (6, 7, 8)
    img = torch.rand(2, 1, *shape, generator=gen)
    disp = random_smooth_disp(shape, batch=2, max_disp=2.0, generator=gen)
    st = SpatialTransformer(mode="nearest", padding="zeros")
    assert list(st.parameters()) == []
    assert torch.equal(st(img, disp), warp(img, disp, mode="nearest", padding="zeros"))


@pytest.mark.parametrize("shape", [(4, 5), (3, 4, 4)])
def test_gradcheck_wrt_image_and_disp(shape, gen):
    img = torch.rand(1, 2, *shape, generator=gen, dtype=torch.float64, requires_grad=True)
    # fractional displacements away from integer kinks of the linear interpolation
    disp = 0.15 + 0.5 * torch.rand(1, len(shape), *shape, generator=gen, dtype=torch.float64)
    disp = disp * torch.sign(torch.randn(disp.shape, generator=gen, dtype=torch.float64))
    disp.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda i, d: warp(i, d), (img, disp), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(12, 13), (8, 9, 10)])
def test_sample_at_points_is_exact_on_linear_fields(shape, gen, device):
    nd = len(shape)
    w = torch.randn(3, nd, generator=gen, dtype=torch.float64)
    b = torch.randn(3, generator=gen, dtype=torch.float64)
    grid = identity_grid(shape, dtype=torch.float64)
    field = (torch.einsum("cj,j...->c...", w, grid) + b.view(3, *([1] * nd)))[None]
    hi = torch.tensor([s - 1 for s in shape], dtype=torch.float64)
    pts = torch.rand(2, 17, nd, generator=gen, dtype=torch.float64) * hi
    out = sample_at_points(field.to(device), pts.to(device)).cpu()
    assert out.shape == (2, 17, 3)
    assert torch.allclose(out, pts @ w.T + b, atol=1e-10)


def test_sample_at_points_landmark_meaning(gen):
    # a fixed landmark p maps to p + u(p): for an affine field this is A (p - c) + t + c
    shape = (9, 10, 11)
    mat = torch.eye(3, 4, dtype=torch.float64) + 0.05 * torch.randn(3, 4, generator=gen).double()
    mat[:, 3] = torch.tensor([1.0, -0.5, 0.25])
    disp = affine_to_disp(mat[None], shape)
    c = torch.tensor([(s - 1) / 2 for s in shape], dtype=torch.float64)
    pts = torch.rand(1, 5, 3, generator=gen, dtype=torch.float64) * 6 + 1
    moved = pts + sample_at_points(disp, pts)
    expected = (pts - c) @ mat[:, :3].T + mat[:, 3] + c
    assert torch.allclose(moved, expected, atol=1e-10)


def test_sample_at_points_rejects_wrong_points():
    with pytest.raises(InputError, match="'points'"):
        sample_at_points(torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 3, 2))


def test_resample_on_another_grid_size():
    # sample a 1-channel ramp along axis 1 at the coordinates of a coarser grid
    img = identity_grid((5, 9), dtype=torch.float64)[1:2][None]
    coords = identity_grid((3, 5), dtype=torch.float64)[None] * 2.0
    out = resample(img, coords)
    assert out.shape == (1, 1, 3, 5)
    assert torch.allclose(out[0, 0], coords[0, 1])
