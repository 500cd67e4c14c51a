"""Light-weight deformable registration (LDR) student networks (Tran et al., TMI 2022)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from medistill.errors import InputError
from medistill.nets._layers import (
    check_ndim,
    check_widths,
    conv,
    conv_transpose,
    init_flow_,
    pair_input,
)
from medistill.spatial import upsample_disp

__all__ = ["LDRStudent", "LDRStudentFast"]


class _LDRNet(nn.Module):
    """Shared implementation of the LDR students: encoder of four 4x4x4 stride-2 convolutions,
    a decoder with skips down to ``1 / 2**flow_level`` resolution, a flow convolution, and
    linear upsampling of the flow to the input size (see :class:`LDRStudent`)."""

    size_multiple = 16
    """Every spatial input size must be a multiple of this (four stride-2 convolutions)."""

    def __init__(
        self,
        ndim: int = 3,
        widths: Sequence[int] = (16, 32, 64, 128),
        in_channels: int = 2,
        flow_multiplier: float = 1.0,
        flow_level: int = 2,
        up_kernel: int = 2,
        flow_kernel: int = 1,
    ) -> None:
        super().__init__()
        cls = type(self).__name__
        self.ndim = check_ndim(cls, ndim)
        self.in_channels = int(in_channels)
        w = check_widths(cls, "widths", widths, 4)
        for name, value, valid in (
            ("flow_level", flow_level, (1, 2)),
            ("up_kernel", up_kernel, (2, 4)),
            ("flow_kernel", flow_kernel, (1, 3)),
        ):
            if isinstance(value, bool) or value not in valid:
                raise InputError(f"{cls}(): '{name}' must be one of {valid}, got {value!r}")
        self.flow_multiplier = float(flow_multiplier)
        self.flow_level = int(flow_level)
        cins = (int(in_channels), *w[:3])
        self.down = nn.ModuleList(
            nn.Sequential(conv(ndim, ci, co, 4, stride=2, padding=1), nn.ReLU())
            for ci, co in zip(cins, w, strict=True)
        )
        n_up = 4 - self.flow_level
        up_in = (w[3], 2 * w[2], 2 * w[1])[:n_up]
        up_out = (w[2], w[1], w[0])[:n_up]
        pad = (up_kernel - 2) // 2
        self.up = nn.ModuleList(
            nn.Sequential(conv_transpose(ndim, ci, co, up_kernel, stride=2, padding=pad), nn.ReLU())
            for ci, co in zip(up_in, up_out, strict=True)
        )
        cin = 2 * w[self.flow_level - 1]
        self.flow = conv(ndim, cin, ndim, flow_kernel, padding=flow_kernel // 2)
        init_flow_(self.flow)

    def forward(self, fixed: Tensor, moving: Tensor) -> Tensor:
        """Predict the displacement that aligns ``moving`` to ``fixed``.

        Args:
            fixed: ``(B, C_f, *S)`` fixed image; every size in ``S`` a multiple of 16.
            moving: ``(B, C_m, *S)`` moving image.

        Returns:
            ``(B, ndim, *S)`` displacement in voxels (backward convention).

        Raises:
            InputError: on mismatched shapes or sizes that are not multiples of 16.
        """
        x = pair_input(self, fixed, moving)
        skips = []
        for layer in self.down:
            x = layer(x)
            skips.append(x)
        x = self.up[0](skips[3])
        for i, up in enumerate(self.up[1:], start=1):
            x = up(torch.cat([skips[3 - i], x], dim=1))
        flow = self.flow(torch.cat([skips[self.flow_level - 1], x], dim=1))
        return upsample_disp(flow, 2**self.flow_level) * self.flow_multiplier


class LDRStudent(_LDRNet):
    """The LDR student subnetwork as the paper describes it, 2-D or 3-D.

    Encoder: four 4x4x4 convolutions, stride 2, padding 1, ReLU, ``widths`` (16, 32, 64, 128),
    to 1/2, 1/4, 1/8, 1/16 of the input size. Decoder: three 4x4x4 stride-2 transposed
    convolutions (padding 1, ReLU) back to 1/8, 1/4, 1/2, each after the first taking the
    concatenation ``[encoder skip, previous upsampled features]``; a 3x3x3 convolution of
    ``[level-1 skip, last upsampled features]`` predicts an ``ndim``-channel flow at 1/2
    resolution, which :func:`~medistill.spatial.upsample_disp` (linear, corner-aligned, values
    rescaled to full-resolution voxels) brings to the input size; times ``flow_multiplier``.

    3-D, default widths: 1.55 M parameters, 6.6 GMAC at 128^3. The flow head starts from
    ``N(0, 1e-5^2)`` weights and zero bias (near-identity output).

    Reference: T. Tran et al., "Light-weight deformable registration using adversarial
    learning with distilling knowledge", IEEE TMI 2022, doi:10.1109/TMI.2022.3141013.

    Args:
        ndim: 2 or 3 spatial dimensions.
        widths: widths of the four encoder convolutions; the transposed convolutions have
            ``widths[2], widths[1], widths[0]`` channels.
        in_channels: channels of ``fixed`` plus those of ``moving``.
        flow_multiplier: output scale (``1 / n`` in an ``n``-cascade network).
    """

    def __init__(
        self,
        ndim: int = 3,
        widths: Sequence[int] = (16, 32, 64, 128),
        in_channels: int = 2,
        flow_multiplier: float = 1.0,
    ) -> None:
        super().__init__(
            ndim, widths, in_channels, flow_multiplier, flow_level=1, up_kernel=4, flow_kernel=3
        )


class LDRStudentFast(_LDRNet):
    """A CPU-latency variant of :class:`LDRStudent` (this project's design, not the paper's).

    Same encoder (four 4x4x4 stride-2 convolutions with ReLU) and skip connections, but the
    decoder stops at ``1 / 2**flow_level`` resolution (default 1/4), uses 2x2x2 stride-2
    transposed convolutions (non-overlapping; ``up_kernel=4`` gives the paper's 4x4x4) and a
    ``flow_kernel``-sized flow convolution (default 1x1x1), and the flow is upsampled to the
    input size with :func:`~medistill.spatial.upsample_disp`; times ``flow_multiplier``.

    Why these choices: on a CPU (PyTorch/oneDNN, batch 1) the paper's last transposed
    convolution and 3x3x3 flow convolution at 1/2 resolution take most of the time, and
    PyTorch runs small 3x3x3 convolutions at batch 1 on a slow non-oneDNN path (so 3x3x3
    encoder kernels, despite fewer MACs, measured slower than 4x4x4). Measured with 2 threads:
    about 2x faster than :class:`LDRStudent` at 64^3 and 2.5x at 128^3. 3-D, default widths:
    0.79 M parameters, 2.6 GMAC at 128^3 (``LDRStudent``: 1.55 M, 6.6 GMAC). The flow head
    starts from ``N(0, 1e-5^2)`` weights and zero bias.

    Args:
        ndim: 2 or 3 spatial dimensions.
        widths: widths of the four encoder convolutions.
        in_channels: channels of ``fixed`` plus those of ``moving``.
        flow_multiplier: output scale (``1 / n`` in an ``n``-cascade network).
        flow_level: 1 (flow at 1/2 resolution, like the paper) or 2 (1/4, default).
        up_kernel: kernel size of the stride-2 transposed convolutions, 2 or 4.
        flow_kernel: kernel size of the flow convolution, 1 or 3.
    """

    # the shared implementation's defaults are this variant's (flow_level 2, 2x2x2, 1x1x1)
