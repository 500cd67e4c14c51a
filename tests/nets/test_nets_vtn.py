"""Tests of medistill.nets.vtn (VTN subnetwork and encoder)."""

from __future__ import annotations

import pytest
import torch

from medistill.errors import InputError
from medistill.nets import VTN, VTNEncoder, count_parameters


def conv_params(cin, cout, k, nd, bias=True):
    return cin * cout * k**nd + (cout if bias else 0)


def test_parameter_count_matches_the_paper_and_the_layer_list():
    net = VTN(ndim=3)  # construct only
    n = count_parameters(net)
    assert abs(n - 28.3e6) / 28.3e6 < 0.05
    # the same count from the architecture's description
    enc = [16, 32, 64, 64, 128, 128, 256, 256, 512, 512]
    expected = sum(conv_params(ci, co, 3, 3) for ci, co in zip([2, *enc[:-1]], enc, strict=True))
    skips = [16, 32, 64, 128, 256, 512]
    cin = 512
    for out in reversed(skips[:-1]):
        expected += conv_params(cin, 3, 3, 3)  # flow prediction
        expected += conv_params(3, 3, 4, 3, bias=False)  # flow upsampling
        expected += conv_params(cin, out, 4, 3, bias=False)  # feature upsampling
        cin = 2 * out + 3
    expected += conv_params(cin, 3, 4, 3, bias=False)
    assert n == expected


@pytest.mark.parametrize("size", [(64, 128), (64, 64, 64)])
def test_output_shape_and_near_identity_at_init(size):
    torch.manual_seed(0)
    nd = len(size)
    net = VTN(ndim=nd, in_channels=3, base_width=2)
    fixed, moving = torch.rand(2, 1, *size), torch.rand(2, 2, *size)
    u = net(fixed, moving)
    assert u.shape == (2, nd, *size)
    assert 0 < u.abs().max() < 0.05  # small random flow heads: near identity, not dead


def test_zero_output_layer_gives_exact_identity():
    net = VTN(ndim=2, base_width=2)
    torch.nn.init.zeros_(net.output.weight)
    u = net(torch.rand(1, 1, 64, 64), torch.rand(1, 1, 64, 64))
    assert torch.equal(u, torch.zeros_like(u))


def test_flow_multiplier_scales_the_output():
    torch.manual_seed(1)
    a = VTN(ndim=2, base_width=2, flow_multiplier=1.0)
    b = VTN(ndim=2, base_width=2, flow_multiplier=0.25)
    b.load_state_dict(a.state_dict())
    x, y = torch.rand(1, 1, 64, 64), torch.rand(1, 1, 64, 64)
    torch.testing.assert_close(b(x, y), 0.25 * a(x, y))


def test_encoder_levels_halve_the_size():
    enc = VTNEncoder(ndim=3, base_width=1)
    feats = enc(torch.rand(1, 2, 64, 64, 128))
    assert [tuple(f.shape[2:]) for f in feats] == [
        (64 // 2**k, 64 // 2**k, 128 // 2**k) for k in range(1, 7)
    ]
    assert [f.shape[1] for f in feats] == [1, 2, 4, 8, 16, 32]


def test_sizes_not_multiple_of_64_are_rejected_with_the_size():
    net = VTN(ndim=2, base_width=2)
    with pytest.raises(InputError, match=r"\(64, 96\).*multiples of 64"):
        net(torch.rand(1, 1, 64, 96), torch.rand(1, 1, 64, 96))
    with pytest.raises(ValueError, match="same batch and spatial sizes"):
        net(torch.rand(1, 1, 64, 64), torch.rand(1, 1, 128, 64))
    with pytest.raises(ValueError, match="2 spatial axes"):
        net(torch.rand(1, 1, 64, 64, 64), torch.rand(1, 1, 64, 64, 64))
    with pytest.raises(InputError, match="2 channels in total, got 1 \\+ 2"):
        net(torch.rand(1, 1, 64, 64), torch.rand(1, 2, 64, 64))
    with pytest.raises(ValueError, match="'ndim' must be 2 or 3"):
        VTN(ndim=4)
