"""ALDK does what the public reference code does not: the adversarial term alone moves the
student's weights, and the critic learns."""

from __future__ import annotations

import torch

from medistill.nets import FieldCritic, build_student
from medistill.registration.aldk import (
    adversarial_student_term,
    critic_loss,
    gradient_penalty,
    interpolate_fields,
)
from tests.utils import RecordingContext


def test_adversarial_term_alone_gives_student_gradients():
    torch.manual_seed(0)
    student = build_student(1, ndim=3, variant="fast", affine=False)
    critic = FieldCritic(3)
    fixed, moving = torch.rand(1, 1, 32, 32, 32), torch.rand(1, 1, 32, 32, 32)
    teacher = torch.randn(1, 3, 32, 32, 32)
    critic.requires_grad_(False)
    term = adversarial_student_term(critic, teacher, student(fixed, moving).disp)
    term.backward()
    grads = [p.grad for p in student.parameters()]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in critic.parameters())


def test_critic_learns_to_separate_teacher_and_student_fields():
    torch.manual_seed(0)
    critic = FieldCritic(3)
    before = [p.detach().clone() for p in critic.parameters()]
    opt = torch.optim.Adam(critic.parameters(), lr=1e-3, betas=(0.5, 0.9))
    teacher = torch.ones(1, 3, 32, 32, 32)  # "teacher" fields: smooth and positive
    student = torch.randn(1, 3, 32, 32, 32)  # "student" fields: noise
    gaps = []
    for _ in range(8):
        opt.zero_grad()
        loss, logs = critic_loss(critic, teacher, student, beta=0.1, gp_lambda=0.1)
        loss.backward()
        opt.step()
        gaps.append(logs["wdist"])
    # every weight tensor moves (the last bias cancels in D(teacher) - D(student), as in any WGAN)
    changed = [
        not torch.equal(a, b)
        for a, b in zip(before, critic.parameters(), strict=True)
        if a.dim() > 1
    ]
    assert changed and all(changed)
    assert gaps[-1] > gaps[0] + 0.1  # the critic's Wasserstein estimate grows as it learns


def test_gradient_penalty_is_differentiable_in_critic_weights():
    critic = FieldCritic(3)
    points = interpolate_fields(torch.zeros(1, 3, 32, 32, 32), torch.ones(1, 3, 32, 32, 32), 0.1)
    assert torch.allclose(points, torch.full_like(points, 0.9))
    gp = gradient_penalty(critic, points)
    gp.backward()
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in critic.parameters())
    random_beta = interpolate_fields(torch.zeros(4, 3, 2, 2, 2), torch.ones(4, 3, 2, 2, 2), -1.0)
    per_sample = random_beta.flatten(1)
    assert torch.all(per_sample == per_sample[:, :1])  # one beta per sample


def test_coarse_field_keeps_displacement_in_coarse_voxels():
    from medistill.registration.aldk import coarse_field

    disp = torch.zeros(1, 3, 8, 8, 8)
    disp[:, 0] = 4.0  # 4 fine voxels = 2 coarse voxels
    coarse = coarse_field(disp, 2)
    assert coarse.shape == (1, 3, 4, 4, 4)
    assert torch.allclose(coarse[:, 0], torch.full((1, 4, 4, 4), 2.0))
    assert coarse_field(disp, 1) is disp


def test_per_element_term_is_bounded_by_the_mean_squared_field_difference():
    # a critic that is exactly 1-Lipschitz: D(x) = <w, x> with ||w|| = 1
    torch.manual_seed(0)
    w = torch.randn(3 * 8 * 8 * 8)
    w = w / w.norm()

    def critic(x):
        return x.flatten(1) @ w

    teacher, student = torch.randn(2, 3, 8, 8, 8), torch.randn(2, 3, 8, 8, 8)
    raw = adversarial_student_term(critic, teacher, student)
    scaled = adversarial_student_term(critic, teacher, student, per_element=True)
    assert torch.allclose(scaled, raw / (3 * 8 * 8 * 8))
    assert float(scaled) <= float((student - teacher).square().mean())
    # the raw term can reach the squared L2 distance: critic along the difference itself
    d = (student - teacher)[0].flatten()
    w = d / d.norm()
    raw = adversarial_student_term(critic, teacher[:1], student[:1])
    assert torch.allclose(raw, d.square().sum(), rtol=1e-4)


def _distill_losses(mode: str) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """One student step's logs and losses in ``mode``, same weights, batch and critic."""
    from medistill.registration.config import RegistrationConfig, presets
    from medistill.registration.training import RegistrationTask
    from medistill.train import load_config

    cfg = load_config(
        RegistrationConfig,
        "demo",
        presets=presets(),
        overrides=[
            f"distill.mode={mode}",
            "distill.l1_weight=2.0",
            "distill.critic_every=1",
            "distill.critic_downsample=1",
        ],
    )
    torch.manual_seed(0)
    task = RegistrationTask(cfg, "student", source=None)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(1)
    batch = {
        "fixed": torch.rand(2, 1, 32, 32, 32, generator=g),
        "moving": torch.rand(2, 1, 32, 32, 32, generator=g),
        "teacher_disp": torch.randn(2, 3, 32, 32, 32, generator=g),
    }

    ctx = RecordingContext(task.modules())
    logs = task.training_step(batch, 0, ctx)
    return logs, {k: v.detach() for k, v in ctx.losses.items()}


def test_l1_aldk_puts_the_critic_on_top_of_the_l1_term():
    # same weights, batch and critic: l1_aldk - aldk = gamma * (l1 - none) = gamma * w * flow_l1
    none, _ = _distill_losses("none")
    l1, _ = _distill_losses("l1")
    aldk, aldk_losses = _distill_losses("aldk")
    both, both_losses = _distill_losses("l1_aldk")
    gamma = 0.3
    assert "critic" in aldk_losses and "critic" in both_losses
    assert "flow_l1" in both and "flow_l1" not in aldk
    assert both["flow_l1"] > 0.5  # random teacher fields: the term is not trivially zero
    assert abs(l1["loss"] - none["loss"] - 2.0 * l1["flow_l1"]) < 1e-4
    assert abs(both["adv"] - aldk["adv"]) < 1e-5 * max(1.0, abs(aldk["adv"]))
    expected = gamma * (l1["loss"] - none["loss"])
    assert abs((both["loss"] - aldk["loss"]) - expected) < 1e-4 * max(1.0, abs(expected))
