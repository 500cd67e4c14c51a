"""DC-CNN (Schlemper et al. 2018) as used by KD-MRI: cascades of a plain CNN and a hard
data-consistency layer, with the intermediate activations needed for attention transfer.

Each cascade: ``n_d`` 3x3 convolutions (``1 -> C -> ... -> C -> 1``, ReLU after all but the last),
optionally a residual ``x + cnn(x)`` (the KD-MRI slides draw it, the public code omits it; on by
default here), then the data-consistency layer
``k = m * k0 + (1 - m) * FFT(x)``, ``x <- Re(IFFT(k))`` with the orthonormal centred FFT.
Teacher: 5 cascades of 5 convolutions (141,765 parameters with 32 channels); student: 5 cascades
of 3 convolutions (49,285). Attention transfer pairs teacher conv3 with student conv2 (after ReLU).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from medistill.errors import InputError
from medistill.recon.kspace import Layout, check_layout, fft2, ifft2

__all__ = [
    "ConvBlock",
    "DCCNN",
    "NetOutput",
    "data_consistency",
    "default_attention_layer",
    "set_attention_layer",
]


class NetOutput(NamedTuple):
    """Output of the reconstruction / restoration networks.

    Attributes:
        image: ``(B, 1, H, W)`` real reconstruction.
        features: activations used for attention transfer, one ``(B, C, H, W)`` tensor per
            cascade (DC-CNN) or a single one (VDSR), taken after the ReLU of the paired layer.
        stages: DC-CNN: the data-consistent ``(B, 1, H, W)`` image after each cascade (the last
            is ``image``); VDSR: empty.
    """

    image: Tensor
    features: tuple[Tensor, ...]
    stages: tuple[Tensor, ...] = ()


def default_attention_layer(convs: int) -> int:
    """The paired layer of a block of ``convs`` convolutions (1-based): ``(convs + 1) // 2``.

    Teacher DC-CNN (5 convs) -> conv3, student (3) -> conv2; VDSR teacher (11) -> conv6,
    student (7) -> conv4: the layers KD-MRI pairs.
    """
    return (int(convs) + 1) // 2


def set_attention_layer(net: nn.Module, layer: int) -> None:
    """Make every :class:`ConvBlock` of ``net`` return the ReLU output of convolution ``layer``
    (1-based) as its attention feature; ``0`` restores :func:`default_attention_layer`. The
    weights are untouched: only which activation the forward pass hands to attention transfer.

    Raises:
        InputError: ``net`` has no ConvBlock, or ``layer`` is not a hidden layer of each.
    """
    blocks = [m for m in net.modules() if isinstance(m, ConvBlock)]
    if not blocks:
        raise InputError("set_attention_layer(): the network has no ConvBlock")
    for block in blocks:
        convs = len(block.convs)
        chosen = default_attention_layer(convs) if layer == 0 else int(layer)
        if int(layer) != layer or not 1 <= chosen <= convs - 1:
            raise InputError(
                f"attention layer must be 0 (default) or in 1..{convs - 1} for a block of "
                f"{convs} convolutions, got {layer!r}"
            )
        block.attention_layer = chosen


class ConvBlock(nn.Module):
    """``convs`` 3x3 convolutions ``in -> C -> ... -> C -> out`` with ReLU after all but the last.

    Args:
        convs: number of convolutions (>= 2).
        channels: width ``C`` of the hidden layers.
        attention_layer: 1-based index of the convolution whose ReLU output is returned as the
            attention feature (must be a hidden layer, ``1 .. convs - 1``).
        in_channels: input channels.
        out_channels: output channels.
    """

    def __init__(
        self,
        convs: int,
        channels: int,
        attention_layer: int,
        in_channels: int = 1,
        out_channels: int = 1,
    ) -> None:
        super().__init__()
        if int(convs) != convs or convs < 2:
            raise InputError(f"ConvBlock(): 'convs' must be an integer >= 2, got {convs!r}")
        if int(channels) != channels or channels < 1:
            raise InputError(
                f"ConvBlock(): 'channels' must be a positive integer, got {channels!r}"
            )
        if not 1 <= attention_layer <= convs - 1:
            raise InputError(
                f"ConvBlock(): 'attention_layer' must be in 1..{convs - 1} (a layer with a ReLU), "
                f"got {attention_layer!r}"
            )
        widths = [in_channels] + [int(channels)] * (int(convs) - 1) + [out_channels]
        self.convs = nn.ModuleList(
            nn.Conv2d(widths[i], widths[i + 1], kernel_size=3, padding=1) for i in range(convs)
        )
        self.attention_layer = int(attention_layer)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(B, in, H, W)`` -> (output ``(B, out, H, W)``, feature ``(B, C, H, W)``)."""
        feature = x
        last = len(self.convs) - 1
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < last:
                x = F.relu(x, inplace=True)  # on the fresh conv output: no new allocation
            if i + 1 == self.attention_layer:
                feature = x
        return x, feature


def data_consistency(
    image: Tensor, kspace: Tensor, mask: Tensor, layout: Layout = "centered"
) -> Tensor:
    """Hard (noiseless) data consistency: ``Re(IFFT(m * k0 + (1 - m) * FFT(x)))``.

    Computed in float32 / complex64 whatever the autocast state (FFTs have no bf16 kernels).

    Args:
        image: ``(B, 1, H, W)`` real image (the CNN's estimate).
        kspace: ``(B, 1, H, W)`` complex measured k-space ``k0`` (zeros where not sampled).
        mask: 0/1 mask broadcastable to ``(B, 1, H, W)`` (e.g. ``(B, 1, 1, W)`` lines).
        layout: layout of ``kspace`` and ``mask``.

    Returns:
        ``(B, 1, H, W)`` float32 real image whose k-space equals ``k0`` where ``m = 1``.
    """
    device_type = image.device.type
    with torch.autocast(device_type, enabled=False):
        m = mask.to(torch.float32)
        k = fft2(image.float(), layout)
        k0 = kspace if kspace.dtype == torch.complex64 else kspace.to(torch.complex64)
        k = m * k0 + (1.0 - m) * k
        return ifft2(k, layout).real


def _measurement_uncentred(kspace: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """A centred measurement ``(k0, m)`` moved once into ``numpy.fft`` order for
    :func:`_data_consistency_uncentred` (even ``H`` and ``W``): ``m_u = ifftshift(m)`` and
    ``k_u = P * ifftshift(k0)`` with the checkerboard ``P[i, j] = (-1)^(i + j)``."""
    dims = (-2, -1)
    m_u = torch.fft.ifftshift(mask.to(torch.float32), dim=dims)
    k0 = kspace if kspace.dtype == torch.complex64 else kspace.to(torch.complex64)
    h, w = kspace.shape[-2:]
    i = torch.arange(h, device=kspace.device).view(h, 1)
    j = torch.arange(w, device=kspace.device).view(1, w)
    checker = 1.0 - 2.0 * ((i + j) % 2).to(torch.float32)
    return m_u, torch.fft.ifftshift(k0, dim=dims) * checker


def _data_consistency_uncentred(image: Tensor, k_u: Tensor, m_u: Tensor) -> Tensor:
    """:func:`data_consistency` in the centred layout for even ``H`` and ``W``, without a shift:
    for even sizes a half-size roll in one domain is a ``(-1)^n`` modulation in the other, so
    ``ifft2c(m k0 + (1 - m) fft2c(x)) = ifft2(m_u k_u + (1 - m_u) fft2(x))`` with
    :func:`_measurement_uncentred`'s ``m_u, k_u`` (the rolls cost as much as the transforms)."""
    k = torch.fft.fft2(image.float(), norm="ortho")
    return torch.fft.ifft2(m_u * k_u + (1.0 - m_u) * k, norm="ortho").real


class DCCNN(nn.Module):
    """Deep cascade of CNNs with data consistency (weights not shared between cascades).

    Args:
        cascades: number of cascades ``n_c``.
        convs: convolutions per cascade ``n_d``.
        channels: hidden width (32 in KD-MRI).
        residual: add the cascade input to its CNN output before data consistency.
        attention_layer: 1-based paired layer; default :func:`default_attention_layer`.
        layout: k-space layout of the inputs ``kspace`` and ``mask``.

    Example:
        >>> net = DCCNN(5, 5)
        >>> sum(p.numel() for p in net.parameters())
        141765
    """

    def __init__(
        self,
        cascades: int = 5,
        convs: int = 5,
        channels: int = 32,
        *,
        residual: bool = True,
        attention_layer: int | None = None,
        layout: Layout = "centered",
    ) -> None:
        super().__init__()
        if int(cascades) != cascades or cascades < 1:
            raise InputError(f"DCCNN(): 'cascades' must be a positive integer, got {cascades!r}")
        check_layout("DCCNN", layout)
        layer = default_attention_layer(convs) if attention_layer is None else attention_layer
        self.blocks = nn.ModuleList(ConvBlock(convs, channels, layer) for _ in range(int(cascades)))
        self.residual = bool(residual)
        self.layout: Layout = layout

    def forward(self, image: Tensor, kspace: Tensor, mask: Tensor) -> NetOutput:
        """Reconstruct from the zero-filled image and the measured k-space.

        Args:
            image: ``(B, 1, H, W)`` real input (the zero-filled magnitude image).
            kspace: ``(B, 1, H, W)`` complex undersampled k-space ``k0``.
            mask: 0/1 mask broadcastable to ``(B, 1, H, W)``.

        Returns:
            :class:`NetOutput`: the last cascade's data-consistent real image, one attention
            feature ``(B, C, H, W)`` per cascade and every cascade's data-consistent image.
        """
        if image.dim() != 4 or image.shape[1] != 1:
            raise InputError(f"DCCNN: 'image' must be (B, 1, H, W), got {tuple(image.shape)}")
        if tuple(kspace.shape) != tuple(image.shape):
            raise InputError(
                f"DCCNN: 'kspace' shape {tuple(kspace.shape)} differs from image "
                f"{tuple(image.shape)}"
            )
        x = image
        features, stages = [], []
        # centred k-space of even size: the measurement is moved to FFT order once, and each
        # cascade's data consistency needs no shifts (same values to float rounding)
        even = image.shape[-2] % 2 == 0 and image.shape[-1] % 2 == 0
        shift_free = self.layout == "centered" and even
        with torch.autocast(image.device.type, enabled=False):
            measured = _measurement_uncentred(kspace, mask) if shift_free else None
        for block in self.blocks:
            out, feature = block(x)
            if self.residual:
                out = x + out
            # float32 / complex64 even under autocast (FFTs have no bf16 kernels)
            if measured is None:
                x = data_consistency(out, kspace, mask, self.layout)
            else:
                with torch.autocast(image.device.type, enabled=False):
                    x = _data_consistency_uncentred(out, measured[1], measured[0])
            features.append(feature)
            stages.append(x)
        return NetOutput(x, tuple(features), tuple(stages))
