"""SynthMorph/SynthSeg-style synthesis of training images from label maps.

An image is drawn from a label map by giving every label value a random mean intensity, adding
per-label Gaussian texture, blurring, multiplying by a smooth bias field, adding noise and
applying a gamma curve. Pairs for registration training deform label maps with independent random
B-spline fields and synthesise the fixed and moving images independently, so a network trained on
them cannot rely on any particular contrast.

All functions work on torch tensors ``(B, 1, *S)`` with ``S = (D, H, W)`` (3-D) or ``(H, W)``
(2-D), follow the device of their input, and take an optional :class:`torch.Generator` for
reproducibility. Random numbers are drawn on the generator's device and moved to the input's
device, so a CPU generator gives the same result on every device (pass a generator on the GPU to
avoid the transfer when speed matters).

Tissue classes used across medistill (:data:`TISSUE_CLASSES`): 0 background, 1 CSF, 2 grey matter,
3 white matter. :func:`aseg_to_tissue` maps FreeSurfer aseg label maps onto them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from medistill.errors import InputError
from medistill.io.image import Image
from medistill.kernels import axis_filter
from medistill.spatial import random_smooth_disp, warp, warp_labels

__all__ = [
    "ASEG_TO_TISSUE",
    "BACKGROUND",
    "CSF",
    "GREY_MATTER",
    "INTERPOLATIONS",
    "TISSUE_CLASSES",
    "TISSUE_MEANS",
    "TISSUE_TO_OASIS",
    "WHITE_MATTER",
    "T2_TISSUE_MEANS",
    "SynthPairGenerator",
    "aseg_to_tissue",
    "gaussian_blur",
    "map_labels",
    "random_bias_field",
    "random_deform",
    "random_intensity_augment",
    "synth_image_from_labels",
    "synth_t1_like",
    "synth_t2_like",
    "tissue_to_oasis",
]

BACKGROUND, CSF, GREY_MATTER, WHITE_MATTER = 0, 1, 2, 3
TISSUE_CLASSES: dict[int, str] = {
    BACKGROUND: "background",
    CSF: "CSF",
    GREY_MATTER: "grey matter",
    WHITE_MATTER: "white matter",
}
"""The tissue classes shared by aseg-derived, embedded (MNI) and synthetic label maps."""

_ASEG_WM = (2, 41, 7, 46, 16, 25, 57, 28, 60, 77, 78, 79, 85, 192, 251, 252, 253, 254, 255)
_ASEG_GM = (3, 42, 8, 47, 10, 49, 11, 50, 12, 51, 13, 52, 17, 53, 18, 54, 26, 58, 30, 62, 80)
_ASEG_CSF = (4, 43, 5, 44, 14, 15, 24, 31, 63, 72, 136, 137, 163, 164)

ASEG_TO_TISSUE: dict[int, int] = {
    0: BACKGROUND,
    **{v: WHITE_MATTER for v in _ASEG_WM},
    **{v: GREY_MATTER for v in _ASEG_GM},
    **{v: CSF for v in _ASEG_CSF},
}
"""FreeSurfer aseg label -> tissue class (values not listed are background, see
:func:`aseg_to_tissue`).

- white matter: cerebral WM (2, 41), cerebellar WM (7, 46), brain stem (16), ventral DC (28, 60,
  mostly fibre tracts and T1-bright), lesions (25, 57: periventricular, between cerebral WM and
  the lateral ventricles in the SynthSeg maps), WM hypointensities (77-79), optic chiasm (85),
  corpus callosum (251-255), 192.
- grey matter: cerebral cortex (3, 42), cerebellar cortex (8, 47), thalamus (10, 49), caudate
  (11, 50), putamen (12, 51), pallidum (13, 52), hippocampus (17, 53), amygdala (18, 54),
  accumbens (26, 58), vessel (30, 62; a few voxels inside the basal ganglia), non-WM
  hypointensities (80).
- CSF: lateral and inferior lateral ventricles (4, 43, 5, 44), 3rd/4th/5th ventricles (14, 15, 72),
  CSF (24, which in the SynthSeg training maps also covers the sulcal/extra-cerebral CSF), choroid
  plexus (31, 63), and 136, 137, 163, 164 of the SynthSeg training maps (small structures that
  border the lateral (136, 163) and inferior lateral (137, 164) ventricles, i.e. ventricle
  subdivisions).
- background: 0 and every other value, in particular the extra-cerebral classes of the SynthSeg
  training maps (502-530: skull, skin, muscle, fat, eyes...). The cortical parcellations of
  aparc+aseg (1000-2999) are treated as cortex (grey matter) and wmparc's 3000-4999 as white matter.
"""

TISSUE_TO_OASIS: dict[int, int] = {BACKGROUND: 0, CSF: 1, GREY_MATTER: 1, WHITE_MATTER: 2}
"""Tissue class -> the 3-class scheme of the OASIS ``*_tissue`` maps in the test data.

Those maps are intensity thresholds of the T1 image, not anatomical classes: in world space (their
own affine) class 2 is exactly the brain voxels brighter than about 0.30 (white matter and the
brighter half of the grey-matter intensity mode) and class 1 the darker brain voxels (CSF and the
darker grey matter; in ``oasis_B`` the darkest CSF voxels below about 0.1 are left at 0). The
closest common scheme is therefore {0 background, 1 CSF + GM, 2 WM}; compare label maps on it only
as a coarse check (brain mask and bright/dark tissue), not as a tissue segmentation score.
"""


TISSUE_MEANS = {0: 0.0, 1: 0.25, 2: 0.6, 3: 0.85}
"""T1-like mean intensity of each tissue class (background, CSF, GM, WM), close to the embedded
MNI atlas' class means on its working grid (0, 0.28, 0.61, 0.84)."""

T2_TISSUE_MEANS = {0: 0.0, 1: 0.9, 2: 0.55, 3: 0.35}
"""T2-like mean intensity of each tissue class (background, CSF, GM, WM): the T1 order reversed,
fluid brightest, white matter darkest."""


# ----------------------------------------------------------------------------- label mapping
def _mapping_lookup(
    values: np.ndarray, mapping: Mapping[int, int] | Callable[[int], int], default: int | None
) -> np.ndarray:
    out = np.empty(values.shape, dtype=np.int64)
    for i, v in enumerate(values.tolist()):
        key = int(round(v))
        if callable(mapping):
            out[i] = int(mapping(key))
        elif key in mapping:
            out[i] = int(mapping[key])
        else:
            out[i] = key if default is None else int(default)
    return out


def _unique_inverse(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Sorted values present in ``labels`` and the index of each voxel's value (its shape).

    Small non-negative integer labels (the usual case) take a bincount path that is several times
    faster than :func:`torch.unique` on large volumes.
    """
    if not labels.is_floating_point() and labels.numel() > 0:
        lo, hi = int(labels.min()), int(labels.max())
        if lo >= 0 and hi < 1 << 16:
            present = torch.bincount(labels.reshape(-1).long(), minlength=hi + 1) > 0
            lut = present.long().cumsum(0) - 1
            return present.nonzero().squeeze(1).to(labels.dtype), lut[labels.long()]
    return torch.unique(labels, return_inverse=True)


def map_labels(
    labels: Tensor | np.ndarray | Image,
    mapping: Mapping[int, int] | Callable[[int], int],
    *,
    default: int | None = None,
) -> Tensor | np.ndarray | Image:
    """Replace label values through a mapping (merge labels into fewer classes).

    Args:
        labels: label map of any shape: a tensor, an array or a label :class:`Image`.
        mapping: ``{old value: new value}`` or a function ``old -> new``.
        default: new value of labels missing from a dict ``mapping``; ``None`` keeps them.

    Returns:
        The same kind of object and shape, with int64 values (an :class:`Image` keeps its affine
        and is marked as a label map).
    """
    if isinstance(labels, Image):
        data = map_labels(labels.data, mapping, default=default)
        return labels.with_data(np.asarray(data), is_label=True)
    if isinstance(labels, Tensor):
        values, inverse = _unique_inverse(labels)
        table = _mapping_lookup(values.detach().cpu().numpy(), mapping, default)
        return torch.as_tensor(table, device=labels.device)[inverse]
    arr = np.asarray(labels)
    values, inverse = np.unique(arr, return_inverse=True)
    return _mapping_lookup(values, mapping, default)[inverse].reshape(arr.shape)


def _aseg_class(value: int) -> int:
    if value in ASEG_TO_TISSUE:
        return ASEG_TO_TISSUE[value]
    if 1000 <= value < 3000:
        return GREY_MATTER
    if 3000 <= value < 5000:
        return WHITE_MATTER
    return BACKGROUND


def aseg_to_tissue(labels: Tensor | np.ndarray | Image) -> Tensor | np.ndarray | Image:
    """Map a FreeSurfer aseg (or SynthSeg training) label map to tissue classes 0-3.

    See :data:`ASEG_TO_TISSUE` for the table: 1 CSF, 2 grey matter (cortex, subcortical nuclei,
    cerebellar cortex), 3 white matter (cerebral and cerebellar WM, brain stem, ventral DC,
    corpus callosum), 0 background (including extra-cerebral classes such as 502-530).

    Args:
        labels: aseg label map (tensor, array or :class:`Image`), any shape.

    Returns:
        Label map of the same kind and shape with int64 values in ``{0, 1, 2, 3}``.
    """
    return map_labels(labels, _aseg_class)


EXTRACEREBRAL = (500, 1000)
"""SynthSeg's extra-cerebral label values lie in [500, 1000) (skull, scalp, eyes, ...); the aparc
cortical and white-matter parcels from 1000 on are brain."""
OUTER_CSF = 24
"""SynthSeg's CSF label, which also covers the fluid outside the skull down to the neck."""


def strip_extracerebral(labels: np.ndarray) -> np.ndarray:
    """A skull-stripped copy of an aseg / SynthSeg label map: labels in ``[500, 1000)`` and the
    outer CSF label 24 become background 0, so a working grid around the content is around the
    brain; aparc parcels (``>= 1000``) are kept."""
    labels = np.asarray(labels)
    low, high = EXTRACEREBRAL
    outside = ((labels >= low) & (labels < high)) | (labels == OUTER_CSF)
    return np.where(outside, 0, labels)


def tissue_to_oasis(labels: Tensor | np.ndarray | Image) -> Tensor | np.ndarray | Image:
    """Map tissue classes 0-3 onto the OASIS test maps' scheme (see :data:`TISSUE_TO_OASIS`)."""
    return map_labels(labels, TISSUE_TO_OASIS, default=0)


# ----------------------------------------------------------------------------- random helpers
def _uniform(
    shape: Sequence[int],
    low: float,
    high: float,
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    draw = generator.device if generator is not None else device
    u = torch.rand(tuple(shape), generator=generator, device=draw, dtype=dtype).to(device)
    return low + (high - low) * u


def _normal(
    shape: Sequence[int],
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype,
) -> Tensor:
    draw = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=draw, dtype=dtype).to(device)


def _check_range(
    fn: str, name: str, value: Sequence[float], lo: float = 0.0
) -> tuple[float, float]:
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError) as err:
        raise InputError(f"{fn}(): '{name}' must be a pair (low, high), got {value!r}") from err
    if not (lo <= a <= b) or not math.isfinite(b):
        raise InputError(f"{fn}(): '{name}' must satisfy {lo} <= low <= high, got {value!r}")
    return a, b


def _check_image(fn: str, name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise InputError(f"{fn}(): '{name}' must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (4, 5) or x.shape[1] != 1:
        raise InputError(
            f"{fn}(): '{name}' must be (B, 1, H, W) or (B, 1, D, H, W), got {tuple(x.shape)}"
        )
    return x


def _minmax(x: Tensor) -> Tensor:
    """Scale each batch element to [0, 1] (a constant element becomes 0)."""
    flat = x.flatten(1)
    lo = flat.min(1).values.view(-1, *([1] * (x.dim() - 1)))
    hi = flat.max(1).values.view(-1, *([1] * (x.dim() - 1)))
    scale = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    return ((x - lo) / scale).clamp_(0.0, 1.0)


def gaussian_blur(x: Tensor, sigma: float | Sequence[float]) -> Tensor:
    """Separable Gaussian blur with replicate padding.

    Args:
        x: ``(B, C, *S)`` image, 2-D or 3-D.
        sigma: standard deviation in voxels, one number for all axes or one per spatial axis;
            0 leaves an axis unchanged. The kernel is truncated at 3 sigma.

    Returns:
        ``(B, C, *S)`` blurred image.
    """
    nd = x.dim() - 2
    sig = [float(sigma)] * nd if isinstance(sigma, (int, float)) else [float(s) for s in sigma]
    if len(sig) != nd or any(s < 0 for s in sig):
        raise InputError(f"gaussian_blur(): 'sigma' must be >= 0, one or {nd} values, got {sigma}")
    out = x
    for axis, s in enumerate(sig):
        radius = min(int(math.ceil(3.0 * s)), x.shape[2 + axis] - 1)
        if s <= 0 or radius < 1:
            continue
        t = torch.arange(-radius, radius + 1, dtype=torch.float64)
        k = torch.exp(-0.5 * (t / s) ** 2)
        out = axis_filter(out, 2 + axis, (k / k.sum()).tolist(), padding="replicate")
    return out


def random_bias_field(
    shape: Sequence[int],
    *,
    batch: int = 1,
    strength: float = 0.3,
    resolution: int = 4,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Smooth positive multiplicative bias field ``exp(g)``.

    ``g`` is drawn on a ``resolution^ndim`` grid from ``N(0, s^2)`` with ``s`` uniform in
    ``[0, strength]`` (one ``s`` per batch element) and upsampled (bi/trilinear, corners aligned)
    to ``shape``.

    Args:
        shape: spatial size ``(D, H, W)`` or ``(H, W)``.
        batch: number of fields.
        strength: upper bound of the log-field's standard deviation (0 gives a field of ones).
        resolution: size of the low-resolution grid per axis (``>= 2``).
        generator: random generator.
        dtype, device: of the result (default dtype: ``torch.get_default_dtype()``).

    Returns:
        ``(batch, 1, *shape)`` field, 1 on average in log space.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or strength < 0 or resolution < 2:
        raise InputError(
            f"random_bias_field(): need a 2-D/3-D shape, strength >= 0 and resolution >= 2, got "
            f"shape {shape}, strength {strength}, resolution {resolution}"
        )
    dtype = torch.get_default_dtype() if dtype is None else dtype
    device = torch.device("cpu") if device is None else torch.device(device)
    nd = len(shape)
    s = _uniform((batch,) + (1,) * (nd + 1), 0.0, strength, generator, device, dtype)
    low = _normal((batch, 1) + (resolution,) * nd, generator, device, dtype) * s
    mode = "trilinear" if nd == 3 else "bilinear"
    return torch.exp(F.interpolate(low, size=shape, mode=mode, align_corners=True))


# ----------------------------------------------------------------------------- synthesis
def synth_image_from_labels(
    labels: Tensor,
    *,
    generator: torch.Generator | None = None,
    mean_range: Sequence[float] = (0.0, 1.0),
    std_range: Sequence[float] = (0.0, 0.1),
    blur_sigma: Sequence[float] = (0.3, 1.0),
    bias_strength: float = 0.3,
    noise_std: Sequence[float] = (0.0, 0.05),
    gamma_range: Sequence[float] = (0.7, 1.5),
    means: Mapping[int, float] | None = None,
    zero_background: bool = False,
) -> Tensor:
    """Synthesise an intensity image from a label map (SynthSeg / SynthMorph generative model).

    Steps, each batch element with its own random parameters:

    1. every label value ``v`` present gets a mean ``mu_v ~ U(mean_range)`` and a texture
       standard deviation ``sigma_v ~ U(std_range)``; voxel intensity ``mu_v + sigma_v * N(0, 1)``.
       The background (label 0) is a label like any other and also gets a random intensity
       (SynthMorph), unless ``zero_background`` (mean and texture 0: a skull-stripped look);
    2. Gaussian blur with a sigma ``~ U(blur_sigma)`` voxels (turns white noise into texture and
       softens label boundaries like a partial-volume effect);
    3. multiplication by a smooth bias field (:func:`random_bias_field`, ``bias_strength``);
    4. additive Gaussian noise with standard deviation ``~ U(noise_std)`` (relative to the
       intensity range 0..1 of the means);
    5. min-max scaling to [0, 1], then a gamma curve ``x ** gamma`` with ``log(gamma)`` uniform in
       ``log(gamma_range)`` (0 and 1 are fixed points, so the result stays in [0, 1]).

    Setting ``std_range=(0, 0)``, ``blur_sigma=(0, 0)``, ``bias_strength=0``,
    ``noise_std=(0, 0)`` and ``gamma_range=(1, 1)`` and passing ``means`` gives a deterministic
    image: the min-max scaled means.

    Args:
        labels: ``(B, 1, *S)`` label map (integer dtype, or floating with integer values).
        generator: random generator for reproducibility.
        mean_range: range of the per-label mean intensities.
        std_range: range of the per-label texture standard deviations.
        blur_sigma: range of the blur sigma in voxels (0 disables the blur).
        bias_strength: bound of the log bias field's standard deviation (0 disables it).
        noise_std: range of the additive noise standard deviation.
        gamma_range: range of the gamma exponent (positive).
        means: fixed mean intensity for some label values (others stay random).
        zero_background: give label 0 intensity 0 and no texture before blur, bias and noise.

    Returns:
        ``(B, 1, *S)`` floating image in [0, 1] on the device of ``labels`` (dtype of ``labels``
        if floating, else ``torch.get_default_dtype()``).

    Raises:
        InputError: on a wrong shape or an invalid range.
    """
    fn = "synth_image_from_labels"
    _check_image(fn, "labels", labels)
    m_lo, m_hi = _check_range(fn, "mean_range", mean_range, lo=-math.inf)
    s_lo, s_hi = _check_range(fn, "std_range", std_range)
    b_lo, b_hi = _check_range(fn, "blur_sigma", blur_sigma)
    n_lo, n_hi = _check_range(fn, "noise_std", noise_std)
    g_lo, g_hi = _check_range(fn, "gamma_range", gamma_range, lo=1e-6)
    if bias_strength < 0:
        raise InputError(f"{fn}(): 'bias_strength' must be >= 0, got {bias_strength}")
    device = labels.device
    dtype = labels.dtype if labels.is_floating_point() else torch.get_default_dtype()
    batch, nd = labels.shape[0], labels.dim() - 2
    spatial = tuple(labels.shape[2:])

    values, inverse = _unique_inverse(labels)
    k = values.numel()
    mu = _uniform((batch, k), m_lo, m_hi, generator, device, dtype)
    sd = _uniform((batch, k), s_lo, s_hi, generator, device, dtype)
    vals = [int(round(float(v))) for v in values.tolist()]
    if means:
        for i, v in enumerate(vals):
            if v in means:
                mu[:, i] = float(means[v])
    if zero_background and 0 in vals:
        mu[:, vals.index(0)] = 0.0
        sd[:, vals.index(0)] = 0.0
    idx = inverse.reshape(batch, -1)
    image = mu.gather(1, idx) + sd.gather(1, idx) * _normal(idx.shape, generator, device, dtype)
    image = image.view(batch, 1, *spatial)

    sigmas = _uniform((batch,), b_lo, b_hi, generator, device, dtype).tolist()
    if b_hi > 0:
        image = torch.cat([gaussian_blur(image[i : i + 1], sigmas[i]) for i in range(batch)])
    if bias_strength > 0:
        image = image * random_bias_field(
            spatial,
            batch=batch,
            strength=bias_strength,
            generator=generator,
            dtype=dtype,
            device=device,
        )
    if n_hi > 0:
        std = _uniform((batch,) + (1,) * (nd + 1), n_lo, n_hi, generator, device, dtype)
        image = image + std * _normal(image.shape, generator, device, dtype)
    image = _minmax(image)
    log_gamma = _uniform(
        (batch,) + (1,) * (nd + 1), math.log(g_lo), math.log(g_hi), generator, device, dtype
    )
    if g_lo != 1.0 or g_hi != 1.0:
        image = image.pow(torch.exp(log_gamma))
    return image


def synth_t1_like(
    labels: Tensor,
    generator: torch.Generator | None = None,
    *,
    scheme: str = "aseg",
    jitter: float = 0.05,
    tissue_means: Mapping[int, float] | None = None,
) -> Tensor:
    """A skull-stripped T1-like image from a FreeSurfer-style (or tissue) label map.

    Every label value gets the mean of its tissue class (:data:`TISSUE_MEANS`) plus a uniform
    jitter of ``+-jitter``; texture, blur, bias field, noise and gamma as in
    :func:`synth_image_from_labels` but milder; background (label 0) exactly 0.

    Args:
        labels: ``(B, 1, *S)`` integer label map.
        generator: random generator.
        scheme: ``"aseg"`` (FreeSurfer labels, classes by :func:`aseg_to_tissue`;
            note aseg 2 is white and 3 grey matter) or ``"tissue"`` (0 background, 1 CSF, 2 GM,
            3 WM already).
        jitter: bound of the per-label mean jitter.
        tissue_means: class -> mean intensity for classes 0-3 (default :data:`TISSUE_MEANS`;
            :func:`synth_t2_like` passes :data:`T2_TISSUE_MEANS`).

    Returns:
        ``(B, 1, *S)`` float32 image in [0, 1].
    """
    tissue_means = TISSUE_MEANS if tissue_means is None else tissue_means
    if scheme not in ("aseg", "tissue"):
        raise InputError(f"synth_t1_like(): 'scheme' must be 'aseg' or 'tissue', got {scheme!r}")
    values = [int(v) for v in torch.unique(labels).tolist()]
    if scheme == "aseg":
        classes = [int(c) for c in np.asarray(aseg_to_tissue(np.array(values)))]
    else:
        classes = [v if v in tissue_means else 0 for v in values]
    means = {}
    for v, tissue in zip(values, classes, strict=True):
        shift = (torch.rand((), generator=generator).item() * 2 - 1) * jitter
        means[v] = 0.0 if v == 0 else tissue_means[tissue] + shift
    image = synth_image_from_labels(
        labels,
        generator=generator,
        means=means,
        std_range=(0.0, 0.03),
        blur_sigma=(0.3, 0.8),
        bias_strength=0.2,
        noise_std=(0.0, 0.02),
        gamma_range=(0.85, 1.15),
        zero_background=True,
    ).float()
    return image * (labels != 0)  # skull-stripped: background exactly 0


def synth_t2_like(
    labels: Tensor,
    generator: torch.Generator | None = None,
    *,
    scheme: str = "aseg",
    jitter: float = 0.05,
) -> Tensor:
    """A skull-stripped T2-like image (fluid bright, white matter dark: :data:`T2_TISSUE_MEANS`),
    otherwise as :func:`synth_t1_like`; ``(B, 1, *S)`` labels -> float32 image in [0, 1]."""
    return synth_t1_like(
        labels, generator, scheme=scheme, jitter=jitter, tissue_means=T2_TISSUE_MEANS
    )


def random_intensity_augment(
    image: Tensor,
    *,
    generator: torch.Generator | None = None,
    bias_strength: float = 0.2,
    gamma_range: Sequence[float] = (0.8, 1.25),
    noise_std: Sequence[float] = (0.0, 0.02),
    keep_background: bool = True,
) -> Tensor:
    """Random bias field, gamma and noise for a real intensity image in [0, 1].

    Steps: multiply by a smooth bias field (:func:`random_bias_field`) and rescale by the new
    maximum (so the brightest voxel stays at 1), apply ``x ** gamma`` with ``log(gamma)`` uniform
    in ``log(gamma_range)``, add Gaussian noise with a standard deviation ``~ U(noise_std)``, clip
    to [0, 1]. With ``keep_background`` voxels that are exactly 0 in the input (the background of
    a skull-stripped image) stay 0.

    Args:
        image: ``(B, 1, *S)`` floating image with values in [0, 1].
        generator: random generator for reproducibility.
        bias_strength: bound of the log bias field's standard deviation (0: none).
        gamma_range: range of the gamma exponent (positive; ``(1, 1)``: none).
        noise_std: range of the noise standard deviation (``(0, 0)``: none).
        keep_background: keep zero voxels at zero.

    Returns:
        ``(B, 1, *S)`` augmented image in [0, 1], same dtype and device as ``image``.
    """
    fn = "random_intensity_augment"
    _check_image(fn, "image", image)
    if not image.is_floating_point():
        raise InputError(f"{fn}(): 'image' must be floating point, got {image.dtype}")
    g_lo, g_hi = _check_range(fn, "gamma_range", gamma_range, lo=1e-6)
    n_lo, n_hi = _check_range(fn, "noise_std", noise_std)
    if bias_strength < 0:
        raise InputError(f"{fn}(): 'bias_strength' must be >= 0, got {bias_strength}")
    device, dtype = image.device, image.dtype
    batch, nd = image.shape[0], image.dim() - 2
    ones = (batch,) + (1,) * (nd + 1)
    out = image.clamp(0.0, 1.0)
    if bias_strength > 0:
        out = out * random_bias_field(
            tuple(image.shape[2:]),
            batch=batch,
            strength=bias_strength,
            generator=generator,
            dtype=dtype,
            device=device,
        )
        peak = out.flatten(1).max(1).values.view(ones)
        out = out / torch.where(peak > 0, peak, torch.ones_like(peak))
    log_gamma = _uniform(ones, math.log(g_lo), math.log(g_hi), generator, device, dtype)
    if g_lo != 1.0 or g_hi != 1.0:
        out = out.pow(torch.exp(log_gamma))
    if n_hi > 0:
        std = _uniform(ones, n_lo, n_hi, generator, device, dtype)
        out = out + std * _normal(out.shape, generator, device, dtype)
    out = out.clamp(0.0, 1.0)
    if keep_background:
        out = torch.where(image == 0, torch.zeros_like(out), out)
    return out


# ----------------------------------------------------------------------------- deformation
INTERPOLATIONS = ("linear", "nearest", "onehot")
"""How :func:`random_deform` resamples: images linearly; label maps by nearest neighbour (exact
values) or linearly on one-hot channels then argmax (smoother boundaries)."""


def random_deform(
    tensors: Sequence[tuple[Tensor, str]],
    generator: torch.Generator | None,
    *,
    max_disp: float,
    control_points: int = 5,
    draw_at_zero: bool = False,
) -> list[Tensor]:
    """Deform ``(1, *S)`` tensors by one random cubic B-spline displacement.

    The field (:func:`medistill.spatial.random_smooth_disp`) has components uniform in
    ``+-max_disp`` voxels at ``control_points`` control points per axis; the same field moves
    every tensor, so an image and its label map stay aligned.

    Args:
        tensors: ``(tensor, interpolation)`` pairs: tensors ``(1, *S)`` on one grid (images float,
            label maps integer), interpolation one of :data:`INTERPOLATIONS`.
        generator: random generator (the field is drawn on its device, made on the tensors').
        max_disp: bound of each displacement component in voxels; ``<= 0`` returns the tensors
            unchanged.
        control_points: B-spline control points per axis (``>= 4``).
        draw_at_zero: draw the field even when ``max_disp <= 0``, so that what is drawn from
            ``generator`` afterwards does not depend on ``max_disp``.

    Returns:
        The deformed tensors, in order, each with the shape and dtype of its input.
    """
    if not tensors:
        return []
    for _, interp in tensors:
        if interp not in INTERPOLATIONS:
            raise InputError(
                f"random_deform(): interpolation must be one of {INTERPOLATIONS}, got {interp!r}"
            )
    first = tensors[0][0]
    if max_disp <= 0 and not draw_at_zero:
        return [x for x, _ in tensors]
    disp = random_smooth_disp(
        tuple(first.shape[1:]),
        control_points=control_points,
        max_disp=max(float(max_disp), 0.0),
        generator=generator,
        device=first.device,
    )
    if max_disp <= 0:
        return [x for x, _ in tensors]
    out = []
    for x, interp in tensors:
        if interp == "linear":
            out.append(warp(x[None], disp)[0])
        elif interp == "onehot":
            out.append(warp_labels(x[None], disp)[0])
        else:
            out.append(warp(x[None].to(disp.dtype), disp, mode="nearest")[0].round().to(x.dtype))
    return out


# ----------------------------------------------------------------------------- pair generator
def _as_label_tensor(item: object, index: int) -> Tensor:
    if isinstance(item, Image):
        data = torch.as_tensor(np.asarray(item.data))
        return data.reshape(1, *data.shape)
    if isinstance(item, np.ndarray):
        item = torch.as_tensor(item)
    if not isinstance(item, Tensor):
        raise InputError(
            f"SynthPairGenerator(): label map {index} must be a tensor, array or Image, got "
            f"{type(item).__name__}"
        )
    if item.dim() in (2, 3):
        item = item.unsqueeze(0)
    elif item.dim() == 5 and item.shape[:2] == (1, 1):
        item = item[0]
    elif not (item.dim() == 4 and item.shape[0] == 1):
        raise InputError(
            f"SynthPairGenerator(): label map {index} must be (*S), (1, *S) or (1, 1, *S), got "
            f"{tuple(item.shape)}"
        )
    return item


class SynthPairGenerator(torch.utils.data.IterableDataset):
    """Random synthetic registration pairs from label maps (SynthMorph-style).

    Each sample picks two label maps at random (with replacement, so a map may be paired with
    itself; ``distinct=True`` forbids that when there are two or more), deforms each with an
    independent random cubic B-spline displacement (:func:`medistill.spatial.random_smooth_disp`)
    and synthesises the fixed and the moving image independently from the deformed labels
    (:func:`synth_image_from_labels`). The returned label maps are the deformed ones after the
    optional ``merge``; the images are synthesised from the unmerged labels by default (finer
    labels give richer images), or from the merged ones with ``synth_from_merged=True``.

    Iterating yields ``length`` samples (endless if ``None``) from a generator seeded with
    ``seed`` (plus the worker id inside a :class:`torch.utils.data.DataLoader` worker), so
    iteration is reproducible. :meth:`sample` draws one sample from a given generator.

    Args:
        label_maps: label maps on one common grid: :class:`Image` (already on a working grid),
            arrays or tensors of shape ``(*S)``, ``(1, *S)`` or ``(1, 1, *S)``; 2-D or 3-D.
        max_disp: bound of each displacement component in voxels (0 disables the deformation).
        control_points: B-spline control points per axis (``>= 4``).
        merge: label merging applied to the returned label maps: a dict (values not listed are
            kept) or a function such as :func:`aseg_to_tissue`.
        label_interp: ``"nearest"`` (fast, exact label values) or ``"onehot"`` (linear on one-hot
            then argmax, smoother boundaries, one warp per label value).
        synth_from_merged: synthesise the images from the merged labels.
        distinct: never pair a map with itself (needs two maps or more).
        synth_kwargs: keyword arguments for :func:`synth_image_from_labels`.
        shared_contrast: give both images of a pair the same random mean intensity per label
            (blur, bias, noise and gamma stay independent), so that intensity similarity losses
            such as correlation are meaningful; ``False`` (SynthMorph) draws each image's
            contrast independently, which suits label-based losses.
        seed: seed of the generator used by iteration.
        length: number of samples per iteration (``None``: endless).
        device: where samples are generated (default: the device of the first tensor, else CPU).
    """

    def __init__(
        self,
        label_maps: Sequence[Tensor | np.ndarray | Image],
        *,
        max_disp: float = 6.0,
        control_points: int = 5,
        merge: Mapping[int, int] | Callable[[Any], Any] | None = None,
        label_interp: str = "nearest",
        synth_from_merged: bool = False,
        distinct: bool = False,
        synth_kwargs: Mapping[str, Any] | None = None,
        shared_contrast: bool = False,
        seed: int = 0,
        length: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.shared_contrast = bool(shared_contrast)
        if len(label_maps) == 0:
            raise InputError("SynthPairGenerator(): 'label_maps' is empty, need at least one")
        maps = [_as_label_tensor(m, i) for i, m in enumerate(label_maps)]
        shape = tuple(maps[0].shape)
        for i, m in enumerate(maps):
            if tuple(m.shape) != shape:
                raise InputError(
                    f"SynthPairGenerator(): label map {i} has shape {tuple(m.shape[1:])}, "
                    f"label map 0 has {shape[1:]}; put them on one working grid first"
                )
        if len(shape) - 1 not in (2, 3):
            raise InputError(f"SynthPairGenerator(): label maps must be 2-D or 3-D, got {shape}")
        if label_interp not in ("nearest", "onehot"):
            raise InputError(
                f"SynthPairGenerator(): 'label_interp' must be 'nearest' or 'onehot', got "
                f"{label_interp!r}"
            )
        if max_disp < 0 or control_points < 4:
            raise InputError(
                f"SynthPairGenerator(): need max_disp >= 0 and control_points >= 4, got "
                f"{max_disp}, {control_points}"
            )
        if length is not None and length < 0:
            raise InputError(f"SynthPairGenerator(): 'length' must be >= 0, got {length}")
        if device is None:
            first = label_maps[0]
            device = first.device if isinstance(first, Tensor) else torch.device("cpu")
        self.device = torch.device(device)
        self.maps = [m.to(self.device).round().long() for m in maps]
        self.shape: tuple[int, ...] = shape[1:]
        self.max_disp = float(max_disp)
        self.control_points = int(control_points)
        self.merge = merge
        self.label_interp = label_interp
        self.synth_from_merged = synth_from_merged
        self.distinct = distinct and len(maps) > 1
        self.synth_kwargs = dict(synth_kwargs or {})
        self.seed = int(seed)
        self.length = length

    def __len__(self) -> int:
        if self.length is None:
            raise TypeError("SynthPairGenerator: endless (length=None) has no len()")
        return self.length

    def _merge(self, labels: Tensor) -> Tensor:
        if self.merge is None:
            return labels
        if callable(self.merge):
            return torch.as_tensor(self.merge(labels), device=labels.device).long()
        return map_labels(labels, self.merge).long()

    def _deform(self, labels: Tensor, generator: torch.Generator | None) -> Tensor:
        """Deform a ``(1, *S)`` int64 label map with a fresh random field (drawn even when
        ``max_disp`` is 0, so that ``max_disp`` does not change the rest of the random stream)."""
        interp = "onehot" if self.label_interp == "onehot" else "nearest"
        return random_deform(
            [(labels, interp)],
            generator,
            max_disp=self.max_disp,
            control_points=self.control_points,
            draw_at_zero=True,
        )[0]

    def sample(self, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Draw one synthetic pair.

        Args:
            generator: random generator (a fresh unseeded draw if ``None``).

        Returns:
            ``fixed`` and ``moving`` ``(1, *S)`` float images in [0, 1], ``fixed_labels`` and
            ``moving_labels`` ``(1, *S)`` int64 label maps (merged if ``merge`` is set).
        """
        n = len(self.maps)
        draw = generator.device if generator is not None else self.device
        i = int(torch.randint(n, (1,), generator=generator, device=draw))
        if self.distinct:
            j = int(torch.randint(n - 1, (1,), generator=generator, device=draw))
            j = j + 1 if j >= i else j
        else:
            j = int(torch.randint(n, (1,), generator=generator, device=draw))
        out: dict[str, Tensor] = {}
        kwargs = dict(self.synth_kwargs)
        deformed = [self._deform(self.maps[k], generator) for k in (i, j)]
        if self.shared_contrast:
            sources = [self._merge(x) if self.synth_from_merged else x for x in deformed]
            values = torch.unique(torch.cat([x.flatten() for x in sources])).tolist()
            lo, hi = kwargs.get("mean_range", (0.0, 1.0))
            draws = torch.rand(len(values), generator=generator, device=draw).tolist()
            kwargs["means"] = {
                int(v): lo + (hi - lo) * u for v, u in zip(values, draws, strict=True)
            }
        for name, labels in (("fixed", deformed[0]), ("moving", deformed[1])):
            merged = self._merge(labels)
            source = merged if self.synth_from_merged else labels
            image = synth_image_from_labels(source.unsqueeze(0), generator=generator, **kwargs)
            out[name] = image[0]
            out[f"{name}_labels"] = merged
        return out

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        info = torch.utils.data.get_worker_info()
        worker = 0 if info is None else info.id
        generator = torch.Generator(device="cpu").manual_seed(self.seed + 1_000_003 * worker)
        count = 0
        while self.length is None or count < self.length:
            if info is not None and count % info.num_workers != worker:
                # every worker walks the same index sequence and keeps its share
                count += 1
                continue
            yield self.sample(generator)
            count += 1
