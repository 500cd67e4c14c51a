"""Tests of medistill.nets.ldr (LDR student networks)."""

from __future__ import annotations

import pytest
import torch

from medistill.errors import InputError
from medistill.nets import LDRStudent, LDRStudentFast, count_macs, count_parameters


def test_paper_student_size_and_compute_by_hand():
    net = LDRStudent(ndim=3)
    enc = [(2, 16), (16, 32), (32, 64), (64, 128)]
    dec = [(128, 64), (128, 32), (64, 16)]
    params = sum(ci * co * 64 + co for ci, co in enc + dec) + 32 * 3 * 27 + 3
    assert count_parameters(net) == params  # ~1.5 M as in METHODS
    assert abs(params - 1.5e6) / 1.5e6 < 0.05
    s = 128
    macs = sum((s // 2 ** (k + 1)) ** 3 * co * 64 * ci for k, (ci, co) in enumerate(enc))
    macs += sum((s // 2 ** (4 - k)) ** 3 * ci * 64 * co for k, (ci, co) in enumerate(dec))
    macs += (s // 2) ** 3 * 3 * 27 * 32
    assert count_macs(net, [(1, 1, s, s, s)] * 2) == macs
    assert 6e9 < macs < 7e9
    # the fast variant: same encoder, 2x2x2 transposed convolutions to 1/4, 1x1x1 flow head
    fast = LDRStudentFast(ndim=3)
    fast_params = sum(ci * co * 64 + co for ci, co in enc) + 3 * 64 + 3
    fast_params += sum(ci * co * 8 + co for ci, co in dec[:2])
    assert count_parameters(fast) == fast_params
    assert count_macs(fast, [(1, 1, s, s, s)] * 2) < 0.4 * macs


def test_fast_variant_with_the_paper_options_is_the_paper_network():
    torch.manual_seed(0)
    paper = LDRStudent(ndim=2, flow_multiplier=0.5)
    with torch.no_grad():
        paper.flow.weight.normal_(0.0, 0.1)
    same = LDRStudentFast(ndim=2, flow_multiplier=0.5, flow_level=1, up_kernel=4, flow_kernel=3)
    same.load_state_dict(paper.state_dict())
    x, y = torch.rand(2, 1, 64, 48), torch.rand(2, 1, 64, 48)
    torch.testing.assert_close(same(x, y), paper(x, y))


@pytest.mark.parametrize("cls", [LDRStudent, LDRStudentFast])
@pytest.mark.parametrize("size", [(48, 32), (32, 48, 64)])
def test_shapes_and_exact_identity_with_a_zero_head(cls, size):
    torch.manual_seed(0)
    nd = len(size)
    net = cls(ndim=nd)
    fixed, moving = torch.rand(2, 1, *size), torch.rand(2, 1, *size)
    u = net(fixed, moving)
    assert u.shape == (2, nd, *size)
    assert 0 < u.abs().max() < 0.01
    torch.nn.init.zeros_(net.flow.weight)
    assert torch.equal(net(fixed, moving), torch.zeros(2, nd, *size))


@pytest.mark.parametrize(
    ("net", "level"),
    [
        (LDRStudent(ndim=3, flow_multiplier=0.5), 1),
        (LDRStudentFast(ndim=3, flow_multiplier=0.5), 2),
        (LDRStudentFast(ndim=3, flow_multiplier=0.5, flow_level=1, up_kernel=4), 1),
    ],
)
def test_low_resolution_flow_is_rescaled_to_full_resolution_voxels(net, level):
    # a constant flow v at 1/2**level resolution (h voxels) spans the same extent as the input:
    # in input voxels it is v * (S - 1) / (h - 1), times the flow multiplier
    size = (32, 48, 64)
    v = torch.tensor([1.0, -2.0, 0.5])
    with torch.no_grad():
        net.flow.weight.zero_()
        net.flow.bias.copy_(v)
    u = net(torch.rand(1, 1, *size), torch.rand(1, 1, *size))
    ratio = torch.tensor([(s - 1) / (s // 2**level - 1) for s in size])
    expected = (0.5 * v * ratio).view(1, 3, 1, 1, 1).expand(1, 3, *size)
    torch.testing.assert_close(u, expected)


def test_bad_sizes_and_options():
    with pytest.raises(InputError, match=r"\(40, 32\).*multiples of 16"):
        LDRStudent(ndim=2)(torch.rand(1, 1, 40, 32), torch.rand(1, 1, 40, 32))
    with pytest.raises(InputError, match="'widths' must be 4 positive ints"):
        LDRStudent(widths=(16, 32, 64))
    with pytest.raises(InputError, match="'flow_level'"):
        LDRStudentFast(flow_level=3)
    with pytest.raises(InputError, match="'up_kernel'"):
        LDRStudentFast(up_kernel=3)
    with pytest.raises(InputError, match="'flow_kernel' must be one of"):
        LDRStudentFast(flow_kernel=2)
