"""Attention maps and the KD-MRI losses on hand-checkable cases."""

from __future__ import annotations

import pytest
import torch

from medistill.errors import InputError
from medistill.recon.dccnn import DCCNN
from medistill.recon.distill import (
    attention_loss,
    attention_map,
    cascade_imitation_loss,
    imitation_loss,
)


def test_attention_map_hand_case():
    # two channels on a 1x2 grid: sum of squares = [1 + 9, 4 + 0] = [10, 4]
    f = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])
    q = attention_map(f)
    expected = torch.tensor([[10.0, 4.0]]) / (100.0 + 16.0) ** 0.5
    torch.testing.assert_close(q, expected)


def test_attention_map_is_unit_norm_per_sample_and_scale_free():
    f = torch.rand(3, 8, 5, 6, generator=torch.Generator().manual_seed(0))
    f[1] *= 100.0  # a sample 100x brighter
    q = attention_map(f)
    assert q.shape == (3, 30)
    torch.testing.assert_close(q.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(attention_map(7.0 * f), q)
    # per-sample: sample 0 does not change when sample 1 is scaled
    g = f.clone()
    g[1] *= 0.01
    torch.testing.assert_close(attention_map(g)[0], q[0])
    assert torch.all(attention_map(torch.zeros(1, 2, 3, 3)) == 0)


def test_attention_loss_sums_pairs_and_ignores_channel_count():
    g = torch.Generator().manual_seed(1)
    s = [torch.rand(2, 32, 6, 6, generator=g) for _ in range(2)]
    t = [torch.rand(2, 64, 6, 6, generator=g) for _ in range(2)]
    one = attention_loss(s[:1], t[:1])
    both = attention_loss(s, t)
    second = attention_loss(s[1:], t[1:])
    torch.testing.assert_close(both, one + second)
    manual = (attention_map(s[0]) - attention_map(t[0])).abs().mean()
    torch.testing.assert_close(one, manual)
    l2 = attention_loss(s[:1], t[:1], distance="l2")
    torch.testing.assert_close(l2, ((attention_map(s[0]) - attention_map(t[0])) ** 2).mean())
    # identical attention (a channel-scaled copy) costs nothing
    assert float(attention_loss([s[0]], [torch.cat([s[0], s[0]], 1)])) == pytest.approx(0, abs=1e-7)


def test_attention_loss_gradient_reaches_student_only():
    s = torch.rand(1, 4, 4, 4, requires_grad=True)
    t = torch.rand(1, 8, 4, 4, requires_grad=True)
    attention_loss([s], [t]).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_attention_loss_rejects_mismatch():
    with pytest.raises(InputError, match="same positive number"):
        attention_loss([torch.rand(1, 2, 4, 4)], [])
    with pytest.raises(InputError, match="spatial"):
        attention_loss([torch.rand(1, 2, 4, 4)], [torch.rand(1, 2, 5, 4)])
    with pytest.raises(InputError, match="distance"):
        attention_loss([torch.rand(1, 2, 4, 4)], [torch.rand(1, 2, 4, 4)], distance="kl")


def test_imitation_loss_hand_case():
    student = torch.zeros(1, 1, 2, 2, requires_grad=True)
    target = torch.full((1, 1, 2, 2), 1.0)
    teacher = torch.full((1, 1, 2, 2), 3.0, requires_grad=True)
    total, rec, imit = imitation_loss(student, target, teacher, alpha=0.5)
    assert (rec.item(), imit.item(), total.item()) == (1.0, 3.0, 2.0)
    total.backward()
    assert teacher.grad is None
    assert imitation_loss(student, target, teacher, alpha=1.0)[0].item() == 1.0
    assert imitation_loss(student, target, teacher, alpha=0.0)[0].item() == 3.0
    with pytest.raises(InputError, match="alpha"):
        imitation_loss(student, target, teacher, alpha=1.5)


def test_cascade_imitation_loss_averages_all_but_the_last_cascade():
    student = [torch.zeros(1, 1, 2, 2, requires_grad=True) for _ in range(3)]
    teacher = [torch.full((1, 1, 2, 2), v, requires_grad=True) for v in (1.0, 3.0, 100.0)]
    loss = cascade_imitation_loss(student, teacher)
    assert loss.item() == 2.0  # (1 + 3) / 2: the last cascade (100) is not part of it
    loss.backward()
    assert all(t.grad is None for t in teacher)
    assert student[0].grad is not None and student[2].grad is None
    assert cascade_imitation_loss(student[:1], teacher[:1]).item() == 0.0
    with pytest.raises(InputError, match="cascades"):
        cascade_imitation_loss(student, teacher[:2])


def test_dccnn_stages_are_each_cascades_data_consistent_output():
    torch.manual_seed(0)
    net = DCCNN(3, 3, 8).eval()
    image = torch.rand(2, 1, 16, 16)
    kspace = torch.fft.fft2(image.to(torch.complex64), norm="ortho")
    mask = (torch.rand(1, 1, 1, 16) > 0.5).float()
    with torch.no_grad():
        out = net(image, kspace, mask)
        one = DCCNN(1, 3, 8).eval()
        one.blocks[0].load_state_dict(net.blocks[0].state_dict())
        first = one(image, kspace, mask).image
    assert len(out.stages) == 3
    assert out.stages[-1] is out.image
    torch.testing.assert_close(out.stages[0], first)
