"""Tests of medistill.nets.affine (affine stems and their losses)."""

from __future__ import annotations

import pytest
import torch

from medistill.errors import InputError
from medistill.nets import AffineStem, SmallAffineStem, affine_det_loss, affine_ortho_loss
from medistill.spatial import affine_to_disp, identity_grid, warp


def eig_ortho_loss(a, eps):
    n = a.shape[-1]
    k = torch.linalg.eigvalsh(a.transpose(1, 2) @ a + eps * torch.eye(n, dtype=a.dtype))
    return (k + (1 + eps) ** 2 / k).sum(-1) - 2 * n * (1 + eps)


def rotation(nd, gen):
    q, r = torch.linalg.qr(torch.randn(nd, nd, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


@pytest.mark.parametrize("nd", [2, 3])
def test_ortho_loss_closed_form_equals_eigenvalue_form(nd):
    gen = torch.Generator().manual_seed(nd)
    a = torch.randn(16, nd, nd, generator=gen, dtype=torch.float64) * 0.5 + torch.eye(nd)
    for eps in (1e-5, 0.1):
        got = affine_ortho_loss(a, eps=eps, reduction="none")
        torch.testing.assert_close(got, eig_ortho_loss(a, eps), rtol=1e-9, atol=1e-9)
    per_sample = affine_ortho_loss(a, reduction="none")
    assert torch.isclose(affine_ortho_loss(a), per_sample.mean())
    assert torch.isclose(affine_ortho_loss(a, reduction="sum"), per_sample.sum())


@pytest.mark.parametrize("nd", [2, 3])
def test_losses_vanish_on_rotations_and_are_minimal_there(nd):
    gen = torch.Generator().manual_seed(10 + nd)
    eye = torch.eye(nd, dtype=torch.float64)[None]
    rot = torch.stack([rotation(nd, gen) for _ in range(4)])
    for a in (eye, rot):
        assert affine_ortho_loss(a, reduction="none").abs().max() < 1e-12
        assert affine_det_loss(a, reduction="none").abs().max() < 1e-12
    near = eye + 0.05 * torch.randn(32, nd, nd, generator=gen, dtype=torch.float64)
    assert (affine_ortho_loss(near, reduction="none") > affine_ortho_loss(eye)).all()
    assert (affine_ortho_loss(near, reduction="none") > 0).all()


def test_det_loss_by_hand():
    a = torch.diag(torch.tensor([2.0, 1.0, 1.5]))[None]  # det 3
    assert torch.isclose(affine_det_loss(a), torch.tensor(0.5 * 2.0**2))
    b = torch.tensor([[[0.0, 2.0], [1.0, 0.0]]])  # det -2
    assert torch.isclose(affine_det_loss(b), torch.tensor(0.5 * 9.0))
    with pytest.raises(InputError, match="'A' must be"):
        affine_det_loss(torch.eye(4)[None])
    with pytest.raises(InputError, match="did you mean 'mean'"):
        affine_ortho_loss(torch.eye(3)[None], reduction="meen")


@pytest.mark.parametrize("size", [(33, 31, 35), (129, 127)])
def test_affine_stem_field_is_the_affine_map_about_the_centre(size):
    torch.manual_seed(0)
    nd = len(size)
    stem = AffineStem(ndim=nd, base_width=2, head_init_std=1e-3)
    disp, a, b = stem(torch.rand(2, 1, *size), torch.rand(2, 1, *size))
    assert disp.shape == (2, nd, *size) and a.shape == (2, nd, nd) and b.shape == (2, nd)
    # u(x) = (A - I)(x - c) + b by hand, c = (S - 1) / 2
    c = torch.tensor([(s - 1) / 2 for s in size]).view(nd, *([1] * nd))
    rel = identity_grid(size) - c
    expected = torch.einsum("bij,j...->bi...", a - torch.eye(nd), rel) + b.view(2, nd, *([1] * nd))
    torch.testing.assert_close(disp, expected, atol=1e-5, rtol=1e-5)
    mat = torch.cat([a, b[..., None]], -1)
    torch.testing.assert_close(disp, affine_to_disp(mat, size))
    assert (a - torch.eye(nd)).abs().max() > 0  # not stuck at the identity


def test_affine_stem_size():
    from medistill.nets import VTNEncoder, count_parameters

    heads = 512 * 8 * (9 + 3)  # two bias-free 2x2x2 convolutions over 512 channels
    assert count_parameters(AffineStem(3)) == count_parameters(VTNEncoder(3)) + heads


def test_affine_stem_at_128_uses_the_2x2_grid_without_pooling():
    stem = AffineStem(ndim=2, base_width=1)
    seen = []
    stem.head_w.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape[2:])))
    stem(torch.rand(1, 1, 128, 128), torch.rand(1, 1, 128, 128))
    stem(torch.rand(1, 1, 48, 80), torch.rand(1, 1, 48, 80))  # pooled to 2x2
    assert seen == [(2, 2), (2, 2)]


@pytest.mark.parametrize("size", [(40, 24, 32), (50, 64)])
def test_small_affine_stem_starts_at_the_exact_identity(size):
    nd = len(size)
    stem = SmallAffineStem(ndim=nd)
    moving = torch.rand(2, 1, *size)
    disp, a, b = stem(torch.rand(2, 1, *size), moving)
    assert torch.equal(disp, torch.zeros(2, nd, *size))
    assert torch.equal(a, torch.eye(nd).expand(2, nd, nd)) and torch.equal(b, torch.zeros(2, nd))
    torch.testing.assert_close(warp(moving, disp), moving)


def test_small_affine_stem_heads_set_the_matrix():
    stem = SmallAffineStem(ndim=3)
    w = torch.tensor([[0.1, 0.0, 0.02], [0.0, -0.05, 0.0], [0.03, 0.0, 0.0]])
    t = torch.tensor([1.0, -2.0, 0.5])
    with torch.no_grad():
        stem.head_w.bias.copy_(w.flatten())
        stem.head_b.bias.copy_(t)
    disp, a, b = stem(torch.rand(1, 1, 16, 20, 24), torch.rand(1, 1, 16, 20, 24))
    torch.testing.assert_close(a[0], torch.eye(3) + w)
    torch.testing.assert_close(b[0], t)
    # the centre voxel (odd sizes would put it on a voxel; here check the corner by hand)
    corner = w @ (torch.zeros(3) - torch.tensor([7.5, 9.5, 11.5])) + t
    torch.testing.assert_close(disp[0, :, 0, 0, 0], corner)
