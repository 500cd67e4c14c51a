"""Dense VTN subnetwork, the teacher's deformable stage (Zhao et al., J-BHI 2019 / ICCV 2019)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from medistill.nets._layers import (
    check_ndim,
    conv,
    conv_transpose,
    init_flow_,
    pair_input,
)

__all__ = ["VTN", "VTNEncoder"]

ENCODER_WIDTHS = (1, 2, 4, 4, 8, 8, 16, 16, 32, 32)
"""Widths of the ten encoder convolutions, in multiples of ``base_width``."""
ENCODER_STRIDES = (2, 2, 2, 1, 2, 1, 2, 1, 2, 1)
"""Strides of the ten encoder convolutions (six halvings: sizes must be multiples of 64)."""
SKIP_INDICES = (0, 1, 3, 5, 7, 9)
"""Encoder layers whose outputs are kept, one per resolution level 1/2 ... 1/64."""
LEAKY_SLOPE = 0.1
FLOW_SCALE = 20.0
"""Fixed output scaling of the VTN flow (before ``flow_multiplier``)."""


class VTNEncoder(nn.Module):
    """The VTN encoder: ten 3x3x3 convolutions with LeakyReLU 0.1.

    Strides ``2,2,2,1,2,1,2,1,2,1``; widths ``base_width * (1,2,4,4,8,8,16,16,32,32)``
    (16 ... 512 by default). Padding 1, so a stride-2 layer gives ``ceil(size / 2)``.

    Args:
        ndim: 2 or 3 spatial dimensions.
        in_channels: input channels (fixed and moving concatenated: 2).
        base_width: width of the first layer.
    """

    def __init__(self, ndim: int = 3, in_channels: int = 2, base_width: int = 16) -> None:
        super().__init__()
        self.ndim = check_ndim("VTNEncoder", ndim)
        self.widths = tuple(int(base_width) * m for m in ENCODER_WIDTHS)
        layers = []
        cin = int(in_channels)
        for width, stride in zip(self.widths, ENCODER_STRIDES, strict=True):
            layers.append(
                nn.Sequential(
                    conv(ndim, cin, width, 3, stride=stride, padding=1),
                    nn.LeakyReLU(LEAKY_SLOPE),
                )
            )
            cin = width
        self.layers = nn.ModuleList(layers)

    @property
    def skip_widths(self) -> tuple[int, ...]:
        """Channels of the six kept feature maps, finest first."""
        return tuple(self.widths[i] for i in SKIP_INDICES)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Encode ``x``.

        Args:
            x: ``(B, in_channels, *S)``.

        Returns:
            Six feature maps, finest first: level ``l`` (1..6) has ``S / 2**l`` voxels and
            ``skip_widths[l - 1]`` channels.
        """
        feats = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in SKIP_INDICES:
                feats.append(x)
        return feats


class VTN(nn.Module):
    """Dense VTN deformable subnetwork (the RCN teacher's cascade), 2-D or 3-D.

    Encoder: :class:`VTNEncoder`. Decoder (FlowNet style) from the coarsest level (1/64) up: at
    each level a 3x3x3 convolution predicts an ``ndim``-channel flow, a 4x4x4 stride-2
    transposed convolution (no bias) upsamples it, another one (no bias, LeakyReLU 0.1)
    upsamples the features to the next encoder level's width, and ``[encoder skip, upsampled
    features, upsampled flow]`` are concatenated. A last 4x4x4 stride-2 transposed convolution
    (no bias) of the level-1 concatenation gives the full-resolution flow, multiplied by
    ``20 * flow_multiplier``. With ``base_width=16`` in 3-D: 28.3 M parameters.

    The flow-predicting layers (the five ``pred`` layers and the output layer) start with
    ``N(0, 1e-5^2)`` weights and zero bias, so an untrained network gives a near-identity field.

    Reference: S. Zhao et al., "Unsupervised 3D end-to-end medical image registration with
    volume tweening network", IEEE J-BHI 2019, doi:10.1109/JBHI.2019.2951024; cascaded in
    "Recursive cascaded networks for unsupervised medical image registration", ICCV 2019.

    Args:
        ndim: 2 or 3 spatial dimensions.
        in_channels: channels of ``fixed`` plus those of ``moving`` (2 for two scalar images).
        flow_multiplier: output scale (``1 / n`` for the cascades of an ``n``-cascade RCN).
        base_width: width of the first encoder layer; all widths scale with it.

    Example:
        >>> import torch
        >>> net = VTN(ndim=2, base_width=4)
        >>> net(torch.rand(1, 1, 64, 64), torch.rand(1, 1, 64, 64)).shape
        torch.Size([1, 2, 64, 64])
    """

    size_multiple = 64
    """Every spatial input size must be a multiple of this (six stride-2 convolutions)."""

    def __init__(
        self,
        ndim: int = 3,
        in_channels: int = 2,
        flow_multiplier: float = 1.0,
        base_width: int = 16,
    ) -> None:
        super().__init__()
        self.ndim = check_ndim("VTN", ndim)
        self.in_channels = int(in_channels)
        self.flow_multiplier = float(flow_multiplier)
        self.encoder = VTNEncoder(ndim, in_channels, base_width)
        skips = self.encoder.skip_widths
        preds, flow_ups, feat_ups = [], [], []
        cin = skips[-1]
        for level in range(len(skips) - 1, 0, -1):  # 6 -> 5, ..., 2 -> 1 (index 5 .. 1)
            out = skips[level - 1]
            preds.append(conv(ndim, cin, ndim, 3, padding=1))
            flow_ups.append(conv_transpose(ndim, ndim, ndim, 4, stride=2, padding=1, bias=False))
            feat_ups.append(
                nn.Sequential(
                    conv_transpose(ndim, cin, out, 4, stride=2, padding=1, bias=False),
                    nn.LeakyReLU(LEAKY_SLOPE),
                )
            )
            cin = out + out + ndim
        self.preds = nn.ModuleList(preds)
        self.flow_ups = nn.ModuleList(flow_ups)
        self.feat_ups = nn.ModuleList(feat_ups)
        self.output = conv_transpose(ndim, cin, ndim, 4, stride=2, padding=1, bias=False)
        for layer in [*self.preds, self.output]:
            init_flow_(layer)

    def forward(self, fixed: Tensor, moving: Tensor) -> Tensor:
        """Predict the displacement that aligns ``moving`` to ``fixed``.

        Args:
            fixed: ``(B, C_f, *S)`` fixed image; every size in ``S`` a multiple of 64.
            moving: ``(B, C_m, *S)`` moving image, ``C_f + C_m == in_channels``.

        Returns:
            ``(B, ndim, *S)`` displacement in voxels (channel ``k`` along spatial axis ``k``)
            such that ``warp(moving, u)`` is aligned with ``fixed``.

        Raises:
            InputError: on mismatched shapes or sizes that are not multiples of 64.
        """
        x = pair_input(self, fixed, moving)
        feats = self.encoder(x)
        x = feats[-1]
        for i, (pred, flow_up, feat_up) in enumerate(
            zip(self.preds, self.flow_ups, self.feat_ups, strict=True)
        ):
            skip = feats[-2 - i]
            x = torch.cat([skip, feat_up(x), flow_up(pred(x))], dim=1)
        return self.output(x) * (FLOW_SCALE * self.flow_multiplier)
