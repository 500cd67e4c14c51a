"""LT-Net losses on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from medistill.errors import InputError
from medistill.labeltransfer import losses as L
from medistill.labeltransfer.model import one_hot
from medistill.losses import smoothness_loss
from medistill.spatial import random_smooth_disp, warp, warp_labels

RHO0 = (1e-3) ** (2 * 0.45)  # rho(0) = eps^(2 gamma)


def constant_field(shape, values):
    nd = len(shape)
    return torch.tensor(values, dtype=torch.float32).view(1, nd, *([1] * nd)).expand(1, nd, *shape)


def test_rho_values():
    assert L.charbonnier(torch.zeros(3)).tolist() == pytest.approx([RHO0] * 3, rel=1e-5)
    assert float(L.charbonnier(torch.tensor(3.0))) == pytest.approx((9 + 1e-6) ** 0.45, rel=1e-6)
    assert float(L.charbonnier(torch.tensor(-3.0))) == float(L.charbonnier(torch.tensor(3.0)))
    assert RHO0 == pytest.approx(0.001995, rel=1e-3)


@pytest.mark.parametrize("shape", [(12, 10), (6, 8, 7)])
def test_transformation_cycle_identity_and_inverse_translations(shape):
    zero = torch.zeros(1, len(shape), *shape)
    assert float(L.transformation_cycle_loss(zero, zero)) == pytest.approx(RHO0, rel=1e-5)
    c = [1.5, -2.0, 0.5][: len(shape)]
    forward = constant_field(shape, c)
    backward = constant_field(shape, [-v for v in c])
    assert float(L.transformation_cycle_loss(forward, backward)) == pytest.approx(RHO0, rel=1e-4)
    # no backward correction: the residual is the forward translation itself
    expected = sum((v * v + 1e-6) ** 0.45 for v in c) / len(c)
    assert float(L.transformation_cycle_loss(forward, zero)) == pytest.approx(expected, rel=1e-5)


def test_transformation_cycle_samples_backward_at_forward_target():
    # Delta_F = c (axis 0), Delta_B(x) = a * x0 (axis 0): r(x) = c + a * (x0 + c), not a*x0 + c
    h, w, a, c = 16, 6, 0.1, 2.0
    forward = constant_field((h, w), [c, 0.0])
    x0 = torch.arange(h, dtype=torch.float32).view(1, h, 1).expand(1, h, w)
    backward = torch.cat([a * x0, torch.zeros_like(x0)])[None]
    r = L.transformation_cycle_residual(forward, backward)
    inside = slice(0, h - 3)  # x0 + c stays inside the grid (no border clamping)
    expected = c + a * (x0[0, inside] + c)
    assert torch.allclose(r[0, 0, inside], expected, atol=1e-5)
    assert torch.all(r[0, 1] == 0)


def test_anatomy_cycle_hand_cases():
    a = torch.tensor([1.0, 1.0, 0.0, 0.0]).view(1, 1, 2, 2)
    b = torch.tensor([0.0, 1.0, 1.0, 0.0]).view(1, 1, 2, 2)
    assert float(L.anatomy_cycle_loss(a, a)) == pytest.approx(0.0, abs=1e-6)
    assert float(L.anatomy_cycle_loss(a, 1 - a)) == pytest.approx(1.0, abs=1e-6)
    assert float(L.anatomy_cycle_loss(a, b)) == pytest.approx(0.5, abs=1e-6)  # 1 - 2*1/(2+2)
    # soft prediction: 0.5 on a's support -> dice = 2*1 / (2 + 0.5) = 0.8
    assert float(L.anatomy_cycle_loss(a, 0.5 * a)) == pytest.approx(0.2, abs=1e-6)
    # channels are averaged: identical channel 0, disjoint channel 1
    two = torch.cat([torch.cat([a, a], 1), torch.cat([a, 1 - a], 1)], 0)
    assert float(L.anatomy_cycle_loss(two[:1], two[1:])) == pytest.approx(0.5, abs=1e-6)


def test_difference_cycle_hand_cases():
    g = torch.Generator().manual_seed(0)
    labels = (torch.rand(1, 3, 8, 8, generator=g) > 0.5).float()
    warped = torch.rand(1, 3, 8, 8, generator=g)
    # a closed cycle (l_bar_s = l_s) gives rho(0) whatever u_bar_s is
    assert float(L.difference_cycle_loss(labels, warped, labels)) == pytest.approx(RHO0, rel=1e-4)
    assert float(L.difference_cycle_loss(labels, labels, labels)) == pytest.approx(RHO0, rel=1e-4)
    # l_s = 1, u_bar_s = 0, l_bar_s = 0: rho(|1 - 0| - |0 - 0|) = rho(1)
    ones, zeros = torch.ones(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    value = float(L.difference_cycle_loss(ones, zeros, zeros))
    assert value == pytest.approx((1 + 1e-6) ** 0.45, rel=1e-6)


def test_image_cycle_and_similarity():
    g = torch.Generator().manual_seed(1)
    atlas = torch.rand(2, 1, 16, 16, generator=g)
    assert float(L.image_cycle_loss(atlas, atlas)) == 0.0
    assert float(L.image_cycle_loss(atlas, atlas + 0.2)) == pytest.approx(0.2, rel=1e-5)
    assert float(L.similarity_loss(atlas, atlas)) < 5e-3
    assert float(L.similarity_loss(atlas, torch.rand(2, 1, 16, 16, generator=g))) > 0.5
    with pytest.raises(InputError, match="same shape"):
        L.image_cycle_loss(atlas, atlas[:, :, :8])


def test_gan_losses():
    ones, zeros = torch.ones(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)
    assert float(L.discriminator_loss(ones, zeros)) == 0.0  # perfect discriminator
    assert float(L.discriminator_loss(zeros, ones)) == pytest.approx(1.0)
    assert float(L.generator_gan_loss(ones)) == 0.0  # warped atlas scored real
    assert float(L.generator_gan_loss(zeros)) == pytest.approx(1.0)
    assert float(L.generator_gan_loss(torch.full((3,), 0.5))) == pytest.approx(0.25)


@pytest.mark.parametrize("shape", [(10, 12), (6, 7, 8)])
def test_smoothness_penalties(shape):
    nd = len(shape)
    constant = constant_field(shape, [1.0, 2.0, 3.0][:nd])
    assert float(L.gradient_norm_loss(constant)) == pytest.approx(1e-3, rel=1e-4)
    a = 0.3
    ramp = torch.zeros(1, nd, *shape)
    ramp[0, 0] = a * torch.arange(shape[0], dtype=torch.float32).view(-1, *([1] * (nd - 1)))
    assert float(L.gradient_norm_loss(ramp)) == pytest.approx(math.sqrt(a * a + 1e-6), rel=1e-5)
    assert float(L.smooth_loss(ramp, "squared")) == float(smoothness_loss(ramp))
    with pytest.raises(InputError, match="penalty"):
        L.smooth_loss(ramp, "l1")


def test_warped_one_hot_equals_soft_label_warp():
    g = torch.Generator().manual_seed(2)
    labels = torch.randint(0, 4, (1, 1, 16, 16), generator=g)
    disp = random_smooth_disp((16, 16), max_disp=3.0, generator=g)
    values = torch.arange(4)
    probs, _ = warp_labels(labels, disp, values=values, soft=True)
    assert torch.allclose(warp(one_hot(labels, values), disp), probs, atol=1e-6)
