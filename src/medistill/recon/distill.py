"""KD-MRI distillation losses: attention transfer between paired layers, and imitation (of the
output, and optionally of every cascade's output: not in KD-MRI).

Attention map of an activation ``A`` ``(B, C, H, W)``: ``Q = vec(sum_c A_c^2)`` ``(B, H*W)``,
divided by its L2 norm per sample (Zagoruyko & Komodakis 2017; KD-MRI eq. 1). The public KD-MRI
code normalises over the batch axis instead (``F.normalize(x, dim=0)``); per-sample normalisation,
as in the paper's formula, is used here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from medistill.errors import InputError

AT_DISTANCES: tuple[str, ...] = ("l1", "l2")

__all__ = [
    "AT_DISTANCES",
    "attention_loss",
    "attention_map",
    "cascade_imitation_loss",
    "imitation_loss",
]


def attention_map(feature: Tensor, eps: float = 1e-12) -> Tensor:
    """Spatial attention map ``sum_c A_c^2``, flattened and L2-normalised per sample.

    Args:
        feature: ``(B, C, H, W)`` activation.
        eps: floor of the norm (an all-zero map stays zero).

    Returns:
        ``(B, H * W)`` float32 map with unit L2 norm per row.
    """
    if feature.dim() < 3:
        raise InputError(
            f"attention_map(): 'feature' must be (B, C, ...), got {tuple(feature.shape)}"
        )
    q = feature.float().pow(2).sum(dim=1).flatten(1)
    return F.normalize(q, p=2, dim=1, eps=eps)


def attention_loss(
    student: Sequence[Tensor], teacher: Sequence[Tensor], distance: str = "l1"
) -> Tensor:
    """``L_AT = sum_j d(Q_S^j, Q_T^j)`` over the paired layers ``j`` (cascades).

    ``d`` is the mean absolute (``"l1"``) or mean squared (``"l2"``) difference of the normalised
    maps over batch and pixels (``F.l1_loss`` / ``F.mse_loss``, as the KD-MRI code).

    Args:
        student: one ``(B, C_s, H, W)`` feature per paired layer.
        teacher: the teacher's ``(B, C_t, H, W)`` features, same count and spatial size.
        distance: ``"l1"`` or ``"l2"``.

    Returns:
        Scalar loss.
    """
    if distance not in AT_DISTANCES:
        raise InputError(
            f"attention_loss(): 'distance' must be one of {', '.join(AT_DISTANCES)}, "
            f"got {distance!r}"
        )
    if len(student) != len(teacher) or not student:
        raise InputError(
            f"attention_loss(): need the same positive number of student and teacher features, "
            f"got {len(student)} and {len(teacher)}"
        )
    fn = F.l1_loss if distance == "l1" else F.mse_loss
    total = torch.zeros((), device=student[0].device)
    for s, t in zip(student, teacher, strict=True):
        if s.shape[0] != t.shape[0] or s.shape[2:] != t.shape[2:]:
            raise InputError(
                f"attention_loss(): student feature {tuple(s.shape)} and teacher feature "
                f"{tuple(t.shape)} differ in batch or spatial size"
            )
        total = total + fn(attention_map(s), attention_map(t.detach()))
    return total


def imitation_loss(
    student: Tensor, target: Tensor, teacher: Tensor, alpha: float = 0.5
) -> tuple[Tensor, Tensor, Tensor]:
    """``L_total = alpha * |x - x_S| + (1 - alpha) * |x_T - x_S|`` (mean L1 terms).

    Args:
        student: ``(B, 1, H, W)`` student output ``x_S``.
        target: ``(B, 1, H, W)`` ground truth ``x``.
        teacher: ``(B, 1, H, W)`` teacher output ``x_T`` (no gradient flows into it).
        alpha: weight of the reconstruction term, in [0, 1].

    Returns:
        ``(total, reconstruction term, imitation term)``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"imitation_loss(): 'alpha' must be in [0, 1], got {alpha!r}")
    rec = F.l1_loss(student.float(), target.float())
    imit = F.l1_loss(student.float(), teacher.detach().float())
    return alpha * rec + (1.0 - alpha) * imit, rec, imit


def cascade_imitation_loss(student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
    """Mean L1 distance between the student's and the teacher's intermediate cascade outputs.

    Args:
        student: the student's data-consistent ``(B, 1, H, W)`` image after each cascade
            (:attr:`~medistill.recon.dccnn.NetOutput.stages`).
        teacher: the teacher's, as many (no gradient flows into them).

    Returns:
        Scalar: the mean over cascades ``1 .. n_c - 1`` of the mean absolute difference (the
        last cascade, the network's output, is left to :func:`imitation_loss`); 0 for one cascade.

    Raises:
        InputError: the two have different numbers of cascades.
    """
    if len(student) != len(teacher):
        raise InputError(
            f"cascade_imitation_loss(): the student has {len(student)} cascades, the teacher "
            f"{len(teacher)}"
        )
    pairs = list(zip(student[:-1], teacher[:-1], strict=True))
    if not pairs:
        return student[-1].new_zeros(())
    terms = [F.l1_loss(s.float(), t.detach().float()) for s, t in pairs]
    return torch.stack(terms).mean()
