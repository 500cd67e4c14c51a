"""VDSR (Kim et al. 2016) for MRI super-resolution, as KD-MRI's restoration example.

``convs`` 3x3 convolutions ``1 -> 64 -> ... -> 64 -> 1`` with ReLU after all but the last and a
global residual (output = input + CNN(input)). The input is the low-resolution image on the
high-resolution grid (:func:`medistill.recon.kspace.sr_degrade`). Teacher: 11 convolutions
(333,569 parameters); student: 7 (185,857). Attention pairs teacher conv6 with student conv4.
"""

from __future__ import annotations

from torch import Tensor, nn

from medistill.errors import InputError
from medistill.recon.dccnn import ConvBlock, NetOutput, default_attention_layer

__all__ = ["VDSR"]


class VDSR(nn.Module):
    """Very deep super-resolution network with a global residual.

    Args:
        convs: number of convolutions (11 teacher, 7 student).
        channels: hidden width (64).
        attention_layer: 1-based paired layer; default :func:`default_attention_layer`
            (conv6 for 11, conv4 for 7).
        residual: the global residual (on in VDSR).

    Example:
        >>> sum(p.numel() for p in VDSR(7).parameters())
        185857
    """

    def __init__(
        self,
        convs: int = 11,
        channels: int = 64,
        *,
        attention_layer: int | None = None,
        residual: bool = True,
    ) -> None:
        super().__init__()
        layer = default_attention_layer(convs) if attention_layer is None else attention_layer
        self.block = ConvBlock(convs, channels, layer)
        self.residual = bool(residual)

    def forward(self, image: Tensor) -> NetOutput:
        """``(B, 1, H, W)`` low-resolution image -> :class:`NetOutput` (image, one feature)."""
        if image.dim() != 4 or image.shape[1] != 1:
            raise InputError(f"VDSR: 'image' must be (B, 1, H, W), got {tuple(image.shape)}")
        out, feature = self.block(image)
        if self.residual:
            out = image + out
        return NetOutput(out, (feature,))
