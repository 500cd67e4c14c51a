"""Augmentation of reconstruction training slices: flips, contrast inversion, gamma, bias field
and noise, applied to the magnitude image **before** its k-space is simulated.

The augmented image is the batch's target and its k-space is ``FFT(target)``, so the measured
lines that the data-consistency layer keeps are exactly those of the target: augmentation never
makes the measurement disagree with the image a network is asked to recover.

Steps, per slice, in this order (settings in :class:`~medistill.recon.config.DataConfig`):

1. ``aug_flip``: left-right and up-down flips, each with probability 1/2.
2. ``aug_invert``: with this probability, :func:`invert_foreground` (``top - x`` inside the
   foreground: dark fluid becomes bright, roughly a T2 / FLAIR-like contrast from a T1 slice).
3. ``aug_gamma``: ``x ** g``, ``log g`` uniform in ``log(aug_gamma)`` (0 and 1 are fixed points).
4. ``aug_bias``: multiplication by a smooth positive field
   (:func:`medistill.data.synthesis.random_bias_field`, strength ``aug_bias``).
5. ``aug_noise``: added Gaussian noise of standard deviation uniform in ``[0, aug_noise]``.
6. Negative values are set to 0, and a slice whose maximum exceeds 1 is divided by it.

Every random number comes from the generator passed in (the training loop's generator of the step:
the same ``(loop.seed, step, rank)`` gives the same augmented batch), drawn in a fixed order
whatever steps are switched off.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from medistill.data.synthesis import gaussian_blur, random_bias_field
from medistill.errors import InputError
from medistill.recon.config import DataConfig

__all__ = ["augment_slices", "invert_foreground"]


def _check(fn: str, images: object) -> Tensor:
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 1:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise InputError(f"{fn}(): 'images' must be a (B, 1, H, W) tensor, got {shape}")
    if not images.is_floating_point():
        raise InputError(f"{fn}(): 'images' must be floating point, got {images.dtype}")
    return images


def invert_foreground(images: Tensor, threshold: float = 0.05) -> Tensor:
    """Invert the contrast inside the foreground of each slice: ``x -> top - x``.

    The foreground of a slice is where ``x > threshold * top`` (``top``: the slice's maximum),
    with its holes filled; its edge is softened by a Gaussian of 1 pixel, and the result is
    ``w (top - x) + (1 - w) x`` for that soft weight ``w``. The background stays as it was.

    Args:
        images: ``(B, 1, H, W)`` non-negative magnitude slices.
        threshold: foreground threshold as a fraction of each slice's maximum.

    Returns:
        ``(B, 1, H, W)`` slices in ``[0, top]``, same dtype and device.
    """
    x = _check("invert_foreground", images)
    top = x.amax(dim=(1, 2, 3), keepdim=True)
    raw = (x > threshold * top).cpu().numpy()
    filled = np.stack([ndimage.binary_fill_holes(m[0])[None] for m in raw])
    fg = torch.from_numpy(filled).to(device=x.device, dtype=x.dtype)
    w = gaussian_blur(fg, 1.0)
    return w * (top - x) + (1.0 - w) * x


def augment_slices(images: Tensor, cfg: DataConfig, generator: torch.Generator) -> Tensor:
    """Augment a batch of training slices (see the module docstring for the steps).

    Args:
        images: ``(B, 1, H, W)`` magnitude slices in [0, 1] (CPU).
        cfg: the run's data settings (``augment`` and the ``aug_*`` keys).
        generator: CPU generator all draws come from.

    Returns:
        ``(B, 1, H, W)`` augmented slices in [0, 1]; ``images`` itself when ``cfg.augment`` is
        false.
    """
    x = _check("augment_slices", images)
    if not cfg.augment:
        return images
    b, _, h, w = x.shape
    dtype = x.dtype
    # every draw, always, in this order: switching a step off leaves the others unchanged
    u_flip = torch.rand(b, 2, generator=generator)
    u_invert = torch.rand(b, generator=generator)
    u_gamma = torch.rand(b, generator=generator, dtype=dtype)
    field = random_bias_field(
        (h, w), batch=b, strength=float(cfg.aug_bias), generator=generator, dtype=dtype
    )
    u_noise = torch.rand(b, generator=generator, dtype=dtype)
    noise = torch.randn(x.shape, generator=generator, dtype=dtype)

    x = x.clone()
    if cfg.aug_flip:
        for i in range(b):
            if u_flip[i, 0] < 0.5:
                x[i] = x[i].flip(-1)
            if u_flip[i, 1] < 0.5:
                x[i] = x[i].flip(-2)
    chosen = u_invert < cfg.aug_invert
    if bool(chosen.any()):
        x[chosen] = invert_foreground(x[chosen])
    lo, hi = (math.log(float(g)) for g in cfg.aug_gamma)
    gamma = torch.exp(lo + (hi - lo) * u_gamma).view(b, 1, 1, 1)
    x = x.clamp(min=0.0).pow(gamma)
    if cfg.aug_bias > 0:
        x = x * field
    if cfg.aug_noise > 0:
        x = x + noise * (u_noise * float(cfg.aug_noise)).view(b, 1, 1, 1)
    x = x.clamp(min=0.0)
    top = x.amax(dim=(1, 2, 3), keepdim=True)
    return torch.where(top > 1.0, x / top.clamp(min=1.0), x)
