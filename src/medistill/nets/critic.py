"""Wasserstein critic on deformation fields, the ALDK discriminator (Tran et al., TMI 2022)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from medistill.errors import InputError
from medistill.nets._layers import check_ndim, check_size, check_widths, conv

__all__ = ["FieldCritic"]

LEAKY_SLOPE = 0.2


class FieldCritic(nn.Module):
    """Critic that scores a displacement field with one real number per sample (ALDK's D).

    Convolutions 4x4x4, stride 2, padding 1, of ``widths`` (16 ... 256, doubling), each with
    LeakyReLU 0.2; global average pooling; a linear layer to one scalar. No sigmoid (it is a
    Wasserstein critic) and no normalisation layers: the gradient penalty is defined per
    sample, which batch normalisation would break. Any spatial size ``>= 2**len(widths)``
    (32 by default) per axis is accepted.

    Reference: T. Tran et al., "Light-weight deformable registration using adversarial
    learning with distilling knowledge", IEEE TMI 2022, doi:10.1109/TMI.2022.3141013.

    Args:
        ndim: 2 or 3 spatial dimensions.
        widths: widths of the convolutions.
        in_channels: input channels (default ``ndim``: a displacement field).
    """

    def __init__(
        self,
        ndim: int = 3,
        widths: Sequence[int] = (16, 32, 64, 128, 256),
        in_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.ndim = check_ndim("FieldCritic", ndim)
        widths = check_widths("FieldCritic", "widths", widths, None)
        self.in_channels = ndim if in_channels is None else int(in_channels)
        self.min_size = 2 ** len(widths)
        layers: list[nn.Module] = []
        cin = self.in_channels
        for width in widths:
            layers += [conv(ndim, cin, width, 4, stride=2, padding=1), nn.LeakyReLU(LEAKY_SLOPE)]
            cin = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(cin, 1)

    def forward(self, field: Tensor) -> Tensor:
        """Score ``field``.

        Args:
            field: ``(B, in_channels, *S)`` displacement in voxels, every size ``>= min_size``.

        Returns:
            ``(B,)`` critic values (unbounded). Twice differentiable w.r.t. ``field``.

        Raises:
            InputError: on a wrong shape or a size below ``min_size``.
        """
        if (
            not isinstance(field, Tensor)
            or field.dim() != self.ndim + 2
            or (field.shape[1] != self.in_channels)
        ):
            got = tuple(field.shape) if isinstance(field, Tensor) else type(field).__name__
            raise InputError(
                f"FieldCritic.forward(): 'field' must be (B, {self.in_channels}, *S) with "
                f"{self.ndim} spatial axes, got {got}"
            )
        check_size("FieldCritic", tuple(field.shape[2:]), 1, self.min_size)
        feat = self.features(field).flatten(2).mean(dim=2)
        return self.head(feat).squeeze(1)
