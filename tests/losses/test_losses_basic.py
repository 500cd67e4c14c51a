"""Similarity and field losses on cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medistill.errors import InputError
from medistill.losses import correlation_loss, flow_l1_loss, lncc_loss, smoothness_loss


def test_correlation_loss_known_values():
    x = torch.rand(2, 1, 6, 7, 8, dtype=torch.float64)
    assert correlation_loss(x, 3 * x + 2).item() == pytest.approx(0, abs=1e-6)
    assert correlation_loss(x, -x).item() == pytest.approx(2, abs=1e-6)
    a, b = x[0].flatten().numpy(), torch.rand(6 * 7 * 8, dtype=torch.float64).numpy()
    expected = 1 - np.corrcoef(a, b)[0, 1]
    got = correlation_loss(x[:1], torch.from_numpy(b).reshape(1, 1, 6, 7, 8))
    assert got.item() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(InputError):
        correlation_loss(x, x[:, :, :5])


def test_lncc_identical_is_zero_and_noise_is_higher():
    x = torch.rand(1, 1, 16, 16, 16)
    assert lncc_loss(x, x, window=5).item() == pytest.approx(0, abs=5e-3)
    assert lncc_loss(x, torch.rand_like(x), window=5).item() > 0.5
    y = torch.rand(1, 1, 20, 20)
    assert lncc_loss(y, y).item() == pytest.approx(0, abs=5e-3)


def test_smoothness_loss_hand_case():
    disp = torch.zeros(1, 2, 4, 5)
    assert smoothness_loss(disp + 3.0).item() == 0
    disp[:, 0] = torch.arange(4.0).view(4, 1)  # slope 1 along axis 0 in channel 0
    # channel 0: diffs along axis 0 all 1 (mean 1/2 over both channels), along axis 1 all 0
    assert smoothness_loss(disp).item() == pytest.approx((0.5 + 0.0) / 2)


def test_flow_l1():
    a = torch.zeros(1, 3, 4, 4, 4)
    assert flow_l1_loss(a + 2, a).item() == pytest.approx(2)
    with pytest.raises(InputError):
        flow_l1_loss(a, a[:, :, :2])
