"""Tests of medistill.nets.voxelmorph."""

from __future__ import annotations

import pytest
import torch

from medistill.errors import InputError
from medistill.nets import VoxelMorph, count_parameters
from medistill.spatial import integrate_velocity


def test_parameter_count_by_hand():
    enc, dec = (16, 32, 32, 32), (32, 32, 32, 32, 32, 16, 16)
    convs = [(2, 16), (16, 32), (32, 32), (32, 32), (32, 32)]  # encoder, then dec[0]
    convs += [(32 + 32, 32), (32 + 32, 32), (32 + 16, 32), (32, 32), (32 + 2, 16), (16, 16)]
    expected = sum(ci * co * 27 + co for ci, co in convs) + 16 * 3 * 27 + 3
    n = count_parameters(VoxelMorph(ndim=3, enc=enc, dec=dec))
    assert n == expected
    assert 0.28e6 < n < 0.32e6


@pytest.mark.parametrize("size", [(32, 48), (32, 16, 48)])
def test_shapes_and_near_identity(size):
    torch.manual_seed(0)
    nd = len(size)
    net = VoxelMorph(ndim=nd, dec=(32, 32, 32, 32, 8, 8))
    u = net(torch.rand(2, 1, *size), torch.rand(2, 1, *size))
    assert u.shape == (2, nd, *size)
    assert 0 < u.abs().max() < 1e-3


def test_diffeomorphic_output_is_the_integrated_velocity():
    torch.manual_seed(0)
    plain = VoxelMorph(ndim=2)
    diffeo = VoxelMorph(ndim=2, diffeomorphic=True, int_steps=5)
    with torch.no_grad():
        plain.flow.weight.normal_(0.0, 5.0)  # a sizeable velocity
    diffeo.load_state_dict(plain.state_dict())
    x, y = torch.rand(1, 1, 32, 32), torch.rand(1, 1, 32, 32)
    vel = plain(x, y)
    assert vel.abs().max() > 0.5
    out = diffeo(x, y)
    torch.testing.assert_close(out, integrate_velocity(vel, 5))
    assert (out - vel).abs().max() > 1e-3  # integration is not the identity map


def test_bad_arguments():
    with pytest.raises(InputError, match="at least 6"):
        VoxelMorph(dec=(32, 32, 32, 32, 8))
    with pytest.raises(InputError, match="multiples of 16"):
        VoxelMorph(ndim=2)(torch.rand(1, 1, 24, 32), torch.rand(1, 1, 24, 32))
