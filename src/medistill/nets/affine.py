"""Affine stems of the cascades (teacher: VTN encoder; student: small encoder) and their losses."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medistill.errors import InputError
from medistill.nets._layers import (
    check_ndim,
    check_option,
    check_widths,
    conv,
    init_flow_,
    no_autocast,
    pair_input,
)
from medistill.nets.vtn import LEAKY_SLOPE, VTNEncoder
from medistill.spatial import affine_to_disp

__all__ = ["AffineStem", "SmallAffineStem", "affine_det_loss", "affine_ortho_loss"]

REDUCTIONS = ("mean", "sum", "none")


def _affine_outputs(w: Tensor, b: Tensor, shape: Sequence[int]) -> tuple[Tensor, Tensor, Tensor]:
    """``(disp, A, b)`` from ``W`` ``(B, n, n)`` and ``b`` ``(B, n)`` on a grid of ``shape``.

    Always in float32 or wider, also under autocast: bf16 cannot hold voxel coordinates
    (a spacing of 0.5 voxel at 100) nor a stable determinant.
    """
    with no_autocast(w.device.type):
        if w.dtype not in (torch.float32, torch.float64):
            w, b = w.float(), b.float()
        nd = w.shape[-1]
        a = w + torch.eye(nd, dtype=w.dtype, device=w.device)
        disp = affine_to_disp(torch.cat([a, b.unsqueeze(-1)], dim=-1), shape, center=True)
    return disp, a, b


class AffineStem(nn.Module):
    """The RCN teacher's affine stem: the VTN encoder, then two bias-free "valid" convolutions.

    The encoder (:class:`~medistill.nets.vtn.VTNEncoder`) reduces a 128^3 input to a 2^3 grid
    of ``32 * base_width`` channels; two bias-free convolutions whose kernel covers that whole
    grid give ``W`` (``ndim x ndim``) and ``b`` (``ndim``). ``A = I + W`` and the displacement
    is ``u(x) = W (x - c) + b`` with ``c = (S - 1) / 2`` the grid centre, in voxels.

    Other input sizes: the encoder output (``ceil(S / 64)`` per axis) is average-pooled
    (adaptively) to ``2`` per axis before the valid convolutions, so any size works and a
    128^3 input matches the original exactly (the pooling is then the identity).

    The two heads start from ``N(0, head_init_std^2)`` weights, so the untrained stem is close
    to the identity (exactly the identity with ``head_init_std=0``).

    Args:
        ndim: 2 or 3 spatial dimensions.
        base_width: width of the first encoder layer (16 in RCN).
        in_channels: channels of ``fixed`` plus those of ``moving``.
        head_init_std: standard deviation of the initial head weights.
    """

    def __init__(
        self,
        ndim: int = 3,
        base_width: int = 16,
        in_channels: int = 2,
        head_init_std: float = 1e-5,
    ) -> None:
        super().__init__()
        self.ndim = check_ndim("AffineStem", ndim)
        self.in_channels = int(in_channels)
        self.encoder = VTNEncoder(ndim, in_channels, base_width)
        width = self.encoder.widths[-1]
        self.head_w = conv(ndim, width, ndim * ndim, 2, bias=False)
        self.head_b = conv(ndim, width, ndim, 2, bias=False)
        init_flow_(self.head_w, head_init_std)
        init_flow_(self.head_b, head_init_std)

    def forward(self, fixed: Tensor, moving: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Predict the affine map that aligns ``moving`` to ``fixed``.

        Args:
            fixed: ``(B, C_f, *S)`` fixed image (any size).
            moving: ``(B, C_m, *S)`` moving image.

        Returns:
            ``(disp, A, b)``: ``disp`` ``(B, ndim, *S)`` in voxels (backward convention,
            ``warp(moving, disp)`` aligns with ``fixed``), ``A`` ``(B, ndim, ndim)``, ``b``
            ``(B, ndim)`` in voxels; ``disp(x) = (A - I)(x - c) + b``.
        """
        x = pair_input(self, fixed, moving)
        feat = self.encoder(x)[-1]
        if tuple(feat.shape[2:]) != (2,) * self.ndim:
            pool = F.adaptive_avg_pool3d if self.ndim == 3 else F.adaptive_avg_pool2d
            feat = pool(feat, 2)
        nb, nd = feat.shape[0], self.ndim
        w = self.head_w(feat).reshape(nb, nd, nd)
        b = self.head_b(feat).reshape(nb, nd)
        return _affine_outputs(w, b, fixed.shape[2:])


class SmallAffineStem(nn.Module):
    """The light affine stem of the student (as in the LDR public code, with global pooling).

    Four 3x3x3 stride-2 convolutions (padding 1, LeakyReLU 0.1) of ``widths``, global average
    pooling, and two linear heads for ``W`` (``ndim x ndim``) and ``b`` (``ndim``); ``A = I +
    W``, ``u(x) = W (x - c) + b`` with ``c`` the grid centre (voxels). The heads start at zero
    (weights and biases) by default, so the untrained stem is exactly the identity. Works for
    any input size.

    Args:
        ndim: 2 or 3 spatial dimensions.
        widths: widths of the four convolutions.
        in_channels: channels of ``fixed`` plus those of ``moving``.
        head_init_std: standard deviation of the initial head weights (0: zeros).
    """

    def __init__(
        self,
        ndim: int = 3,
        widths: Sequence[int] = (16, 32, 64, 128),
        in_channels: int = 2,
        head_init_std: float = 0.0,
    ) -> None:
        super().__init__()
        self.ndim = check_ndim("SmallAffineStem", ndim)
        self.in_channels = int(in_channels)
        widths = check_widths("SmallAffineStem", "widths", widths, None)
        layers: list[nn.Module] = []
        cin = int(in_channels)
        for width in widths:
            layers += [conv(ndim, cin, width, 3, stride=2, padding=1), nn.LeakyReLU(LEAKY_SLOPE)]
            cin = width
        self.features = nn.Sequential(*layers)
        self.head_w = nn.Linear(cin, ndim * ndim)
        self.head_b = nn.Linear(cin, ndim)
        init_flow_(self.head_w, head_init_std)
        init_flow_(self.head_b, head_init_std)

    def forward(self, fixed: Tensor, moving: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Predict the affine map that aligns ``moving`` to ``fixed``.

        Args:
            fixed: ``(B, C_f, *S)`` fixed image (any size).
            moving: ``(B, C_m, *S)`` moving image.

        Returns:
            ``(disp, A, b)`` as for :meth:`AffineStem.forward`.
        """
        x = pair_input(self, fixed, moving)
        feat = self.features(x).flatten(2).mean(dim=2)
        nb, nd = feat.shape[0], self.ndim
        w = self.head_w(feat).reshape(nb, nd, nd)
        b = self.head_b(feat).reshape(nb, nd)
        return _affine_outputs(w, b, fixed.shape[2:])


def _check_matrix(fn: str, a: object) -> Tensor:
    if not isinstance(a, Tensor) or a.dim() != 3 or a.shape[1:] not in ((2, 2), (3, 3)):
        got = tuple(a.shape) if isinstance(a, Tensor) else type(a).__name__
        raise InputError(f"{fn}(): 'A' must be a (B, n, n) tensor with n = 2 or 3, got {got}")
    return a


def _reduce(fn: str, value: Tensor, reduction: str) -> Tensor:
    reduction = check_option(fn, "reduction", reduction, REDUCTIONS)
    if reduction == "mean":
        return value.mean()
    if reduction == "sum":
        return value.sum()
    return value


def _det(m: Tensor) -> Tensor:
    """Determinant of ``(B, n, n)`` matrices, ``n`` = 2 or 3, by the explicit formula."""
    if m.shape[-1] == 2:
        return m[:, 0, 0] * m[:, 1, 1] - m[:, 0, 1] * m[:, 1, 0]
    return (
        m[:, 0, 0] * (m[:, 1, 1] * m[:, 2, 2] - m[:, 1, 2] * m[:, 2, 1])
        - m[:, 0, 1] * (m[:, 1, 0] * m[:, 2, 2] - m[:, 1, 2] * m[:, 2, 0])
        + m[:, 0, 2] * (m[:, 1, 0] * m[:, 2, 1] - m[:, 1, 1] * m[:, 2, 0])
    )


def affine_det_loss(a: Tensor, reduction: str = "mean") -> Tensor:
    """Determinant loss of the RCN affine stem: ``0.5 (det A - 1)^2`` per sample.

    Args:
        a: ``(B, n, n)`` linear parts, ``n`` = 2 or 3.
        reduction: ``"mean"`` over the batch (default), ``"sum"`` (RCN sums) or ``"none"``.

    Returns:
        Scalar, or ``(B,)`` with ``reduction="none"``.
    """
    a = _check_matrix("affine_det_loss", a)
    return _reduce("affine_det_loss", 0.5 * (_det(a) - 1.0) ** 2, reduction)


def affine_ortho_loss(a: Tensor, eps: float = 1e-5, reduction: str = "mean") -> Tensor:
    """Orthogonality loss of the RCN affine stem, without eigen-decomposition.

    With ``k_i`` the eigenvalues of ``C = A^T A + eps I`` (all ``> 0``)::

        loss = sum_i (k_i + (1 + eps)^2 / k_i) - 2 n (1 + eps)

    Each term is minimal (``2 (1 + eps)``) at ``k_i = 1 + eps``, so the loss is ``>= 0`` and
    zero exactly when ``A`` is orthogonal. ``sum k_i = trace C``; ``sum 1 / k_i`` is the sum
    of the principal 2x2 minors of ``C`` over ``det C`` for ``n = 3`` and ``trace C / det C``
    for ``n = 2``.

    Args:
        a: ``(B, n, n)`` linear parts, ``n`` = 2 or 3.
        eps: regulariser that keeps ``C`` invertible.
        reduction: ``"mean"`` over the batch (default), ``"sum"`` (RCN sums) or ``"none"``.

    Returns:
        Scalar, or ``(B,)`` with ``reduction="none"``.
    """
    a = _check_matrix("affine_ortho_loss", a)
    n = a.shape[-1]
    c = a.transpose(1, 2) @ a + eps * torch.eye(n, dtype=a.dtype, device=a.device)
    trace = c.diagonal(dim1=1, dim2=2).sum(-1)
    if n == 2:
        inv_sum = trace / _det(c)
    else:
        minors = (
            c[:, 0, 0] * c[:, 1, 1]
            - c[:, 0, 1] * c[:, 1, 0]
            + c[:, 1, 1] * c[:, 2, 2]
            - c[:, 1, 2] * c[:, 2, 1]
            + c[:, 0, 0] * c[:, 2, 2]
            - c[:, 0, 2] * c[:, 2, 0]
        )
        inv_sum = minors / _det(c)
    loss = trace + (1.0 + eps) ** 2 * inv_sum - 2 * n * (1.0 + eps)
    return _reduce("affine_ortho_loss", loss, reduction)
