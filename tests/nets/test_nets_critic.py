"""Tests of medistill.nets.critic (the ALDK field critic)."""

from __future__ import annotations

import pytest
import torch

from medistill.errors import InputError
from medistill.nets import FieldCritic


@pytest.mark.parametrize("size", [(32, 32, 32), (40, 33, 48), (64, 96)])
def test_one_unbounded_score_per_sample(size):
    torch.manual_seed(0)
    nd = len(size)
    critic = FieldCritic(ndim=nd)
    field = torch.randn(3, nd, *size)
    out = critic(field)
    assert out.shape == (3,)
    # linear head, no sigmoid: shifting the head bias shifts every score by the same amount
    with torch.no_grad():
        critic.head.bias += 7.0
    torch.testing.assert_close(critic(field), out + 7.0)


def test_gradient_penalty_double_backward_reaches_the_critic():
    torch.manual_seed(0)
    critic = FieldCritic(ndim=3, widths=(4, 8, 8, 16, 16))
    real, fake = torch.randn(2, 3, 32, 32, 32), torch.randn(2, 3, 32, 32, 32)
    beta = 0.1
    mixed = (beta * real + (1 - beta) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    assert grad.shape == mixed.shape and grad.abs().sum() > 0
    penalty = ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()
    penalty.backward()
    for name, p in critic.named_parameters():
        # biases do not enter the input gradient of a piecewise-linear network
        if name.endswith("weight"):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    # and the score itself is differentiable w.r.t. the field it judges (student side)
    fake.requires_grad_(True)
    critic(fake).mean().backward()
    assert fake.grad.abs().sum() > 0


def test_small_or_malformed_fields_are_rejected():
    critic = FieldCritic(ndim=3)
    with pytest.raises(InputError, match=">= 32"):
        critic(torch.randn(1, 3, 32, 16, 32))
    with pytest.raises(InputError, match=r"\(B, 3, \*S\)"):
        critic(torch.randn(1, 2, 32, 32, 32))
