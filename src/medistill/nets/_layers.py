"""Building blocks shared by the registration networks (private).

Layer classes are picked by the number of spatial dimensions (2-D or 3-D); inputs are checked
with one-line :class:`~medistill.errors.InputError` messages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from medistill.errors import InputError, check_option  # noqa: F401 (re-exported)

_CONV = {2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}

FLOW_INIT_STD = 1e-5
"""Standard deviation of the normal initialisation of flow-predicting layers (VoxelMorph's)."""


def check_ndim(cls: str, ndim: object) -> int:
    """Return ``ndim`` if it is 2 or 3, else raise naming ``cls``."""
    if isinstance(ndim, bool) or ndim not in (2, 3):
        raise InputError(f"{cls}(): 'ndim' must be 2 or 3, got {ndim!r}")
    return int(ndim)  # type: ignore[arg-type]


def check_widths(cls: str, name: str, widths: Sequence[int], length: int | None) -> tuple[int, ...]:
    """Return ``widths`` as a tuple of positive ints (of ``length`` entries when given)."""
    out = tuple(int(w) for w in widths)
    if (length is not None and len(out) != length) or not out or any(w < 1 for w in out):
        need = f"{length} positive ints" if length is not None else "positive ints"
        raise InputError(f"{cls}(): '{name}' must be {need}, got {tuple(widths)!r}")
    return out


def conv(ndim: int, *args: object, **kwargs: object) -> nn.Module:
    """``nn.Conv2d`` or ``nn.Conv3d`` with the given arguments."""
    return _CONV[ndim](*args, **kwargs)


def conv_transpose(ndim: int, *args: object, **kwargs: object) -> nn.Module:
    """``nn.ConvTranspose2d`` or ``nn.ConvTranspose3d`` with the given arguments."""
    return _CONV_T[ndim](*args, **kwargs)


def init_flow_(layer: nn.Module, std: float = FLOW_INIT_STD) -> None:
    """Initialise a flow layer: weights ``N(0, std^2)`` (zeros if ``std == 0``), zero bias."""
    with torch.no_grad():
        if std > 0:
            nn.init.normal_(layer.weight, 0.0, std)
        else:
            nn.init.zeros_(layer.weight)
        if getattr(layer, "bias", None) is not None:
            nn.init.zeros_(layer.bias)


def pair_input(net: nn.Module, fixed: Tensor, moving: Tensor) -> Tensor:
    """Concatenate ``fixed`` and ``moving`` along channels after checking them for ``net``.

    Args:
        net: the calling network; its ``ndim``, ``in_channels`` and (optional)
            ``size_multiple`` attributes give the expected number of spatial axes, the total
            number of channels and the number every spatial size must be a multiple of.
        fixed: ``(B, C_f, *S)`` image.
        moving: ``(B, C_m, *S)`` image.

    Returns:
        ``(B, C_f + C_m, *S)``.

    Raises:
        InputError: on a wrong number of axes or channels, different batch or spatial sizes,
            or a size that is not a multiple of ``size_multiple``.
    """
    cls, ndim = type(net).__name__, int(net.ndim)
    for name, t in (("fixed", fixed), ("moving", moving)):
        if not isinstance(t, Tensor) or t.dim() != ndim + 2:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise InputError(
                f"{cls}.forward(): '{name}' must be (B, C, *S) with {ndim} spatial axes, got {got}"
            )
    if fixed.shape[0] != moving.shape[0] or fixed.shape[2:] != moving.shape[2:]:
        raise InputError(
            f"{cls}.forward(): 'fixed' {tuple(fixed.shape)} and 'moving' {tuple(moving.shape)} "
            "must have the same batch and spatial sizes"
        )
    if fixed.shape[1] + moving.shape[1] != net.in_channels:
        raise InputError(
            f"{cls}.forward(): 'fixed' and 'moving' must have {net.in_channels} channels in "
            f"total, got {fixed.shape[1]} + {moving.shape[1]}"
        )
    check_size(cls, tuple(fixed.shape[2:]), int(getattr(net, "size_multiple", 1)))
    return torch.cat([fixed, moving], dim=1)


def check_size(cls: str, size: Sequence[int], multiple: int = 1, minimum: int = 1) -> None:
    """Raise unless every spatial size is ``>= minimum`` and a multiple of ``multiple``."""
    bad = [s for s in size if s % multiple or s < minimum]
    if bad:
        what = f"multiples of {multiple}" if multiple > 1 else "sizes"
        lim = f" and >= {minimum}" if minimum > 1 else ""
        raise InputError(
            f"{cls}.forward(): spatial size {tuple(size)} is not supported; all sizes must be "
            f"{what}{lim}"
        )


def no_autocast(device_type: str) -> contextlib.AbstractContextManager:
    """Autocast off on ``device_type`` (a no-op where autocast does not exist, e.g. meta)."""
    if device_type in ("cpu", "cuda", "xpu", "mps"):
        return torch.autocast(device_type=device_type, enabled=False)
    return contextlib.nullcontext()
