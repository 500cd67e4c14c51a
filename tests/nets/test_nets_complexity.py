"""Tests of medistill.nets.complexity (parameter and MAC counts)."""

from __future__ import annotations

import pytest
from torch import nn

from medistill.errors import InputError
from medistill.nets import build_student, count_macs, count_parameters


def test_single_layers_by_hand():
    # convolution: output elements x kernel volume x in_channels / groups
    conv = nn.Conv3d(2, 4, 3, stride=2, padding=1)  # (1, 2, 8, 8, 8) -> (1, 4, 4, 4, 4)
    assert count_macs(conv, (1, 2, 8, 8, 8)) == 4 * 4**3 * 27 * 2
    grouped = nn.Conv2d(4, 8, 3, groups=2)  # (2, 4, 6, 7) -> (2, 8, 4, 5)
    assert count_macs(grouped, (2, 4, 6, 7)) == 2 * 8 * 4 * 5 * 9 * 2
    # transposed convolution: input elements x kernel volume x out_channels / groups
    up = nn.ConvTranspose3d(4, 2, 4, stride=2, padding=1)  # (1, 4, 5, 5, 5) -> (1, 2, 10, 10, 10)
    assert count_macs(up, (1, 4, 5, 5, 5)) == 4 * 125 * 64 * 2
    # linear: output elements x in_features
    assert count_macs(nn.Linear(10, 3), (2, 10)) == 2 * 3 * 10
    # activations and pooling are free
    seq = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
    assert count_macs(seq, [(1, 1, 5, 5)]) == 2 * 25 * 9


def test_parameters_by_hand():
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(4, 5))
    assert count_parameters(net) == 2 * 9 + 2 + 4 * 5 + 5
    net[0].weight.requires_grad_(False)
    assert count_parameters(net, trainable_only=True) == 2 + 4 * 5 + 5


def test_meta_count_equals_real_count_and_leaves_the_model_alone():
    casc = build_student(2, ndim=2, variant="fast")
    shapes = [(1, 1, 64, 48), (1, 1, 64, 48)]
    meta = count_macs(casc, shapes)
    real = count_macs(casc, shapes, device=None)
    assert meta == real > 0
    assert all(p.device.type == "cpu" for p in casc.parameters())
    assert all(not m._forward_hooks for m in casc.modules())
    assert casc.training


def test_bad_shapes():
    with pytest.raises(InputError, match="input_shapes"):
        count_macs(nn.Linear(2, 2), [])
    with pytest.raises(InputError, match="input_shapes"):
        count_macs(nn.Linear(2, 2), (1, 0))
