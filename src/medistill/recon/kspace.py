"""k-space: orthonormal 2-D Fourier transforms in two named layouts, simulation of Cartesian
undersampling from magnitude images, super-resolution degradation and root-sum-of-squares.

Layouts (the position of the k-space centre, DC, in the last two array axes ``(H, W)``):

- ``"centered"`` (fastMRI's ``fft2c``): ``k = fftshift(fft2(ifftshift(x)))``; DC at ``(H // 2,
  W // 2)``. This is the layout of fastMRI's HDF5 ``kspace`` and the default everywhere here.
- ``"uncentered"`` (plain ``numpy.fft.fft2``): ``k = fft2(x)``; DC at ``(0, 0)``.

Both transforms are unitary (``norm="ortho"``), so Parseval holds: ``sum |x|^2 == sum |k|^2``.
A mask defined for one layout acts on the other after :func:`mask_layout`, and undersampling then
gives the same zero-filled image in both layouts.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from medistill.errors import InputError

Layout = Literal["centered", "uncentered"]
LAYOUTS: tuple[str, ...] = ("centered", "uncentered")

__all__ = [
    "LAYOUTS",
    "Layout",
    "Undersampled",
    "change_layout",
    "check_layout",
    "dc_index",
    "fft2",
    "ifft2",
    "mask_layout",
    "rss",
    "simulate",
    "sr_degrade",
    "sr_mask",
]


def check_layout(fn: str, layout: str) -> str:
    """Return ``layout`` if it is a known layout name, else raise naming ``fn``."""
    if layout not in LAYOUTS:
        raise InputError(f"{fn}(): 'layout' must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    return layout


def _complex(x: Tensor) -> Tensor:
    if x.is_complex():
        return x
    if not x.is_floating_point():
        x = x.float()
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return torch.complex(x, torch.zeros_like(x))


def fft2(image: Tensor, layout: Layout = "centered") -> Tensor:
    """Orthonormal 2-D DFT over the last two axes.

    Args:
        image: ``(..., H, W)`` real or complex image.
        layout: ``"centered"`` (fastMRI ``fft2c``) or ``"uncentered"`` (``numpy.fft.fft2``).

    Returns:
        Complex k-space ``(..., H, W)`` in ``layout``.
    """
    check_layout("fft2", layout)
    x = _complex(image)
    if layout == "uncentered":
        return torch.fft.fft2(x, norm="ortho")
    x = torch.fft.ifftshift(x, dim=(-2, -1))
    return torch.fft.fftshift(torch.fft.fft2(x, norm="ortho"), dim=(-2, -1))


def ifft2(kspace: Tensor, layout: Layout = "centered") -> Tensor:
    """Orthonormal inverse 2-D DFT over the last two axes (inverse of :func:`fft2`).

    Args:
        kspace: ``(..., H, W)`` complex k-space in ``layout``.
        layout: ``"centered"`` or ``"uncentered"``.

    Returns:
        Complex image ``(..., H, W)``.
    """
    check_layout("ifft2", layout)
    k = _complex(kspace)
    if layout == "uncentered":
        return torch.fft.ifft2(k, norm="ortho")
    k = torch.fft.ifftshift(k, dim=(-2, -1))
    return torch.fft.fftshift(torch.fft.ifft2(k, norm="ortho"), dim=(-2, -1))


def change_layout(kspace: Tensor, src: Layout, dst: Layout) -> Tensor:
    """The same measurement expressed in another layout (exact: through the image domain).

    Args:
        kspace: ``(..., H, W)`` complex k-space in ``src``.
        src: its layout.
        dst: the wanted layout.

    Returns:
        ``(..., H, W)`` complex k-space in ``dst`` (``fft2(ifft2(k, src), dst)``).
    """
    if src == dst:
        return kspace
    return fft2(ifft2(kspace, src), dst)


def dc_index(size: int, layout: Layout = "centered") -> int:
    """Index of the k-space centre (zero frequency) along an axis of ``size`` samples."""
    check_layout("dc_index", layout)
    return size // 2 if layout == "centered" else 0


def mask_layout(mask: np.ndarray, src: Layout, dst: Layout) -> np.ndarray:
    """A 1-D ``(W,)`` or 2-D ``(H, W)`` sampling mask moved from layout ``src`` to ``dst``.

    Centred to uncentred is ``ifftshift``, uncentred to centred ``fftshift`` (over all axes).
    """
    check_layout("mask_layout", src)
    check_layout("mask_layout", dst)
    if src == dst:
        return mask
    return np.fft.ifftshift(mask) if dst == "uncentered" else np.fft.fftshift(mask)


def _mask_tensor(mask: Tensor | np.ndarray, shape: tuple[int, ...], fn: str) -> Tensor:
    """``mask`` as a float tensor broadcastable to ``(..., H, W)``: 1-D masks select columns."""
    m = torch.as_tensor(np.asarray(mask) if isinstance(mask, np.ndarray) else mask)
    h, w = shape[-2], shape[-1]
    if m.dim() == 1:
        if m.shape[0] != w:
            raise InputError(f"{fn}(): 1-D mask has {m.shape[0]} lines, image width is {w}")
        m = m.reshape(1, w)
    if m.shape[-2:] != (h, w) and m.shape[-2:] != (1, w):
        raise InputError(f"{fn}(): mask of shape {tuple(m.shape)} does not fit (..., {h}, {w})")
    return m.to(torch.float32)


class Undersampled(NamedTuple):
    """Result of :func:`simulate`.

    Attributes:
        kspace: ``(..., H, W)`` complex undersampled k-space ``m * FFT(x)`` (zeros where unsampled).
        zero_filled: ``(..., H, W)`` real magnitude ``|IFFT(m * FFT(x))|``.
        mask: the mask as a float tensor broadcastable to ``(..., H, W)``.
    """

    kspace: Tensor
    zero_filled: Tensor
    mask: Tensor


def simulate(image: Tensor, mask: Tensor | np.ndarray, layout: Layout = "centered") -> Undersampled:
    """Cartesian undersampling of a magnitude image: ``k = m * FFT(x)``, ``zf = |IFFT(k)|``.

    Args:
        image: ``(..., H, W)`` real image (e.g. ``(B, 1, H, W)`` in [0, 1]).
        mask: ``(W,)`` line mask (1 = sampled phase-encode column) or ``(H, W)`` mask, in
            ``layout``.
        layout: layout of the mask and of the returned k-space.

    Returns:
        :class:`Undersampled` with the complex k-space, the zero-filled magnitude and the mask.
    """
    m = _mask_tensor(mask, tuple(image.shape), "simulate").to(image.device)
    k = fft2(image, layout) * m
    return Undersampled(k, ifft2(k, layout).abs(), m)


def sr_mask(height: int, width: int, factor: float) -> np.ndarray:
    """Centred ``(H, W)`` mask keeping the central ``round(H / factor) x round(W / factor)`` block.

    For ``256 x 256`` and ``factor = 4`` this is KD-MRI's ``mask[96:160, 96:160] = 1``.
    """
    if not factor >= 1:
        raise InputError(f"sr_mask(): 'factor' must be >= 1, got {factor!r}")
    mask = np.zeros((height, width), dtype=bool)
    bh, bw = max(1, round(height / factor)), max(1, round(width / factor))
    r0, c0 = height // 2 - bh // 2, width // 2 - bw // 2
    mask[r0 : r0 + bh, c0 : c0 + bw] = True
    return mask


def sr_degrade(image: Tensor, factor: float) -> Tensor:
    """Low-resolution version of ``image`` on the same grid: keep the central block of its centred
    k-space (:func:`sr_mask`), zero the rest, return the magnitude of the inverse transform.

    Args:
        image: ``(..., H, W)`` real image.
        factor: resolution loss per axis (4: keep 64 of 256 lines in each direction).

    Returns:
        ``(..., H, W)`` real degraded magnitude image.
    """
    h, w = image.shape[-2:]
    m = torch.from_numpy(sr_mask(h, w, factor)).to(image.device)
    return simulate(image, m, "centered").zero_filled


def rss(coil_images: Tensor | np.ndarray, dim: int = 0) -> Tensor:
    """Root-sum-of-squares coil combination, ``sqrt(sum_c |x_c|^2)``.

    Args:
        coil_images: complex or real coil images with the coil axis at ``dim`` (fastMRI: 0).
        dim: the coil axis.

    Returns:
        Real magnitude image with ``dim`` removed.
    """
    x = torch.as_tensor(coil_images)
    return torch.sqrt((x.abs() ** 2).sum(dim=dim))
