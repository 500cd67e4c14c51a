"""VoxelMorph U-Net registration network (Balakrishnan et al., CVPR 2018 / TMI 2019)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medistill.errors import InputError
from medistill.nets._layers import check_ndim, check_widths, conv, init_flow_, pair_input
from medistill.spatial import integrate_velocity

__all__ = ["VoxelMorph"]

LEAKY_SLOPE = 0.2


def _block(ndim: int, cin: int, cout: int, stride: int = 1) -> nn.Module:
    return nn.Sequential(
        conv(ndim, cin, cout, 3, stride=stride, padding=1), nn.LeakyReLU(LEAKY_SLOPE)
    )


class VoxelMorph(nn.Module):
    """VoxelMorph U-Net, 2-D or 3-D, optionally diffeomorphic.

    All convolutions are 3x3x3 with LeakyReLU 0.2. Encoder: four stride-2 convolutions of
    ``enc`` channels (1/2 ... 1/16). Decoder: ``dec[0]`` at 1/16; then three times nearest
    x2 upsampling, concatenation with the encoder feature of that level and a convolution
    (``dec[1]`` at 1/8, ``dec[2]`` at 1/4, ``dec[3]`` at 1/2); ``dec[4]`` at 1/2; upsampling to
    full size, concatenation with the input pair and the convolutions ``dec[5:]``; a linear
    3x3x3 flow convolution (``N(0, 1e-5^2)`` weights, zero bias) gives ``ndim`` channels.
    ``dec=(32, 32, 32, 32, 8, 8)`` is VoxelMorph-1, the default ``(32, 32, 32, 32, 32, 16,
    16)`` VoxelMorph-2 (0.30 M parameters in 3-D).

    With ``diffeomorphic=True`` the output is a stationary velocity field integrated by
    scaling and squaring (:func:`~medistill.spatial.integrate_velocity`, ``int_steps``
    squarings) into the returned displacement.

    Reference: G. Balakrishnan et al., "VoxelMorph: a learning framework for deformable medical
    image registration", IEEE TMI 2019, doi:10.1109/TMI.2019.2897538.

    Args:
        ndim: 2 or 3 spatial dimensions.
        enc: widths of the four encoder convolutions.
        dec: widths of the decoder convolutions, at least 6.
        in_channels: channels of ``fixed`` plus those of ``moving``.
        diffeomorphic: integrate the output as a stationary velocity field.
        int_steps: squarings of the integration.
        flow_multiplier: output scale (``1 / n`` in an ``n``-cascade network).
    """

    size_multiple = 16
    """Every spatial input size must be a multiple of this (four stride-2 convolutions)."""

    def __init__(
        self,
        ndim: int = 3,
        enc: Sequence[int] = (16, 32, 32, 32),
        dec: Sequence[int] = (32, 32, 32, 32, 32, 16, 16),
        in_channels: int = 2,
        diffeomorphic: bool = False,
        int_steps: int = 7,
        flow_multiplier: float = 1.0,
    ) -> None:
        super().__init__()
        cls = "VoxelMorph"
        self.ndim = check_ndim(cls, ndim)
        self.in_channels = int(in_channels)
        enc = check_widths(cls, "enc", enc, 4)
        dec = check_widths(cls, "dec", dec, None)
        if len(dec) < 6:
            raise InputError(f"{cls}(): 'dec' must have at least 6 widths, got {dec!r}")
        if int(int_steps) != int_steps or int_steps < 0:
            raise InputError(f"{cls}(): 'int_steps' must be an int >= 0, got {int_steps!r}")
        self.diffeomorphic = bool(diffeomorphic)
        self.int_steps = int(int_steps)
        self.flow_multiplier = float(flow_multiplier)
        cin = int(in_channels)
        self.down = nn.ModuleList()
        for width in enc:
            self.down.append(_block(ndim, cin, width, stride=2))
            cin = width
        self.up = nn.ModuleList([_block(ndim, enc[3], dec[0])])  # 1/16
        skips = (enc[2], enc[1], enc[0])  # 1/8, 1/4, 1/2
        cin = dec[0]
        for width, skip in zip(dec[1:4], skips, strict=True):
            self.up.append(_block(ndim, cin + skip, width))
            cin = width
        self.up.append(_block(ndim, cin, dec[4]))  # 1/2
        cin = dec[4] + int(in_channels)
        self.full = nn.ModuleList()
        for width in dec[5:]:
            self.full.append(_block(ndim, cin, width))
            cin = width
        self.flow = conv(ndim, cin, ndim, 3, padding=1)
        init_flow_(self.flow)

    def forward(self, fixed: Tensor, moving: Tensor) -> Tensor:
        """Predict the displacement that aligns ``moving`` to ``fixed``.

        Args:
            fixed: ``(B, C_f, *S)`` fixed image; every size in ``S`` a multiple of 16.
            moving: ``(B, C_m, *S)`` moving image.

        Returns:
            ``(B, ndim, *S)`` displacement in voxels (backward convention); the exponential
            of the predicted velocity when ``diffeomorphic``.

        Raises:
            InputError: on mismatched shapes or sizes that are not multiples of 16.
        """
        x_in = pair_input(self, fixed, moving)
        x = x_in
        skips = []
        for layer in self.down:
            x = layer(x)
            skips.append(x)
        x = self.up[0](x)
        for i, layer in enumerate(self.up[1:4]):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = layer(torch.cat([x, skips[2 - i]], dim=1))
        x = self.up[4](x)
        x = torch.cat([F.interpolate(x, scale_factor=2.0, mode="nearest"), x_in], dim=1)
        for layer in self.full:
            x = layer(x)
        flow = self.flow(x) * self.flow_multiplier
        if self.diffeomorphic:
            flow = integrate_velocity(flow, self.int_steps)
        return flow
