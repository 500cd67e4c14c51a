"""Adversarial learning with distilled knowledge (ALDK): a Wasserstein critic with gradient
penalty on deformation fields (Tran et al., TMI 2022, as fixed in METHODS.md part 1.3).

Student loss: ``gamma * l_rec + (1 - gamma) * mean((D(phi_s) - D(phi_t))^2)``.
Critic loss (WGAN-GP):
``mean(D(phi_s)) - mean(D(phi_t)) + lambda * mean((||grad D(phi_hat)|| - 1)^2)``
with ``phi_hat = beta * phi_t + (1 - beta) * phi_s``. Unlike the public reference code, both terms
are differentiable and the critic is optimised.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def coarse_field(disp: Tensor, factor: int) -> Tensor:
    """A field ``(B, ndim, *S)`` averaged over ``factor``-voxel blocks, in coarse-grid voxels.

    The critic sees fields at this resolution (``factor`` 1 keeps them as they are): its cost
    falls by ``factor ** ndim`` while the shape of the deformation is kept.
    """
    if factor <= 1:
        return disp
    pool = F.avg_pool3d if disp.dim() == 5 else F.avg_pool2d
    return pool(disp, factor) / factor


def interpolate_fields(
    teacher: Tensor, student: Tensor, beta: float, generator: torch.Generator | None = None
) -> Tensor:
    """``phi_hat = beta * phi_t + (1 - beta) * phi_s``; ``beta < 0``: beta ~ U(0, 1) per sample."""
    if beta < 0:
        shape = (teacher.shape[0],) + (1,) * (teacher.dim() - 1)
        b = torch.rand(shape, generator=generator, dtype=teacher.dtype).to(teacher.device)
    else:
        b = torch.as_tensor(beta, dtype=teacher.dtype, device=teacher.device)
    return b * teacher + (1 - b) * student


def gradient_penalty(critic: nn.Module, points: Tensor) -> Tensor:
    """``mean((||grad_x D(x)||_2 - 1)^2)`` over the batch at ``points`` (B, ndim, *S).

    Built with ``create_graph=True`` so that the penalty itself can be back-propagated into the
    critic's weights.
    """
    points = points.detach().requires_grad_(True)
    # the bare module: a wrapper's backward hooks (Lightning Fabric) must not see this inner
    # autograd.grad call; the parameters, and so their gradients, are the same
    scores = getattr(critic, "module", critic)(points)
    (grad,) = torch.autograd.grad(scores.sum(), points, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).square().mean()


def critic_loss(
    critic: nn.Module, teacher: Tensor, student: Tensor, *, beta: float, gp_lambda: float
) -> tuple[Tensor, dict[str, float]]:
    """WGAN-GP critic loss on detached fields; returns the loss and its parts for the log."""
    teacher, student = teacher.detach(), student.detach()
    d_t = critic(teacher).mean()
    d_s = critic(student).mean()
    gp = gradient_penalty(critic, interpolate_fields(teacher, student, beta))
    loss = d_s - d_t + gp_lambda * gp
    return loss, {
        "critic": float(loss.detach()),
        "wdist": float((d_t - d_s).detach()),
        "gp": float(gp.detach()),
    }


def adversarial_student_term(
    critic: nn.Module, teacher: Tensor, student: Tensor, *, per_element: bool = False
) -> Tensor:
    """``mean((D(phi_s) - D(phi_t))^2)``: differentiable in the student's field (and weights).

    With ``per_element`` the term is divided by the number of values of one field
    (``ndim * prod(S)``), which bounds it by the fields' mean squared difference for a
    1-Lipschitz critic.
    """
    term = (critic(student) - critic(teacher.detach()).detach()).square().mean()
    return term / student[0].numel() if per_element else term
