"""The default dataset: built from the MNI152 template shipped inside the nilearn wheel.

Nothing is downloaded. :func:`mni_atlas` gives the skull-stripped ICBM152 2009 template and a
tissue label map (0 background, 1 CSF, 2 grey matter, 3 white matter, as in
:data:`medistill.data.synthesis.TISSUE_CLASSES`); :func:`embedded_subjects` makes labelled
"subjects" from it by random smooth (cubic B-spline) deformations and intensity augmentation on a
fixed-shape working grid; :func:`embedded_slices` gives 2-D axial slices for MRI reconstruction.

Everything is deterministic given ``seed`` and ``split``; subject ``i`` does not depend on how many
subjects are asked for, and the train and test splits draw from disjoint random streams.
"""

from __future__ import annotations

import functools
import importlib.util
import warnings
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

from medistill.data.synthesis import (
    BACKGROUND,
    CSF,
    GREY_MATTER,
    WHITE_MATTER,
    random_intensity_augment,
)
from medistill.errors import InputError
from medistill.io.grid import WorkingGrid, resample_array
from medistill.io.image import Image
from medistill.seeding import stream as random_stream
from medistill.spatial import random_smooth_disp, warp, warp_labels

__all__ = ["SPLITS", "embedded_slices", "embedded_subjects", "mni_atlas"]

SPLITS = ("train", "test")
"""Names of the splits; each has its own random stream."""

_SPLIT_STREAM = {"train": 0, "test": 1}
_SLICE_STREAM = 2  # offset of the 2-D slices' streams from the 3-D subjects' streams


# ----------------------------------------------------------------------------- atlas
_MNI_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
_MASK_THRESHOLD = 0.2  # nilearn's load_mni152_brain_mask: template (scaled to max 1) > 0.2
_BRAIN_FLOOR = 1.0 / 255.0  # smallest intensity of a brain voxel in the scaled template


def _load_mni_1mm() -> tuple[list[np.ndarray], np.ndarray]:
    """The 1 mm T1, GM and WM templates scaled to max 1, and their affine.

    The files are read straight from the nilearn wheel's data folder with nibabel (importing
    nilearn takes seconds); if a nilearn version moves them, its ``load_mni152_*`` loaders are used.
    """
    spec = importlib.util.find_spec("nilearn")
    folder = Path(spec.submodule_search_locations[0]) / "datasets" / "data" if spec else None
    paths = [folder / name for name in _MNI_FILES.values()] if folder else []
    if paths and all(p.is_file() for p in paths):
        images = [nib.load(p) for p in paths]
    else:  # pragma: no cover - depends on the installed nilearn
        from nilearn import datasets

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            images = [
                datasets.load_mni152_template(resolution=1),
                datasets.load_mni152_gm_template(resolution=1),
                datasets.load_mni152_wm_template(resolution=1),
            ]
    arrays = []
    for img in images:
        a = np.asarray(img.dataobj, dtype=np.float32)
        arrays.append(a / max(float(a.max()), 1e-12))
    return arrays, np.asarray(images[0].affine, dtype=np.float64)


@functools.lru_cache(maxsize=2)
def _mni_arrays(
    resolution: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(template, gm, wm, mask, affine) at ``resolution`` mm; cached, read-only.

    The 2 mm arrays are the 1 mm ones anti-aliased and resampled linearly onto nilearn's 2 mm grid
    (same origin, half the size rounded up); the mask is the resampled 1 mm mask above 0.5.
    """
    (t1, gm, wm), affine = _load_mni_1mm()
    mask = (t1 > _MASK_THRESHOLD).astype(np.float32)
    if resolution != 1:
        target = affine.copy()
        target[:3, :3] = affine[:3, :3] * resolution
        shape = tuple(-(-s // resolution) for s in t1.shape)

        def down(a: np.ndarray) -> np.ndarray:
            return resample_array(_antialias(a, float(resolution)), affine, target, shape, order=1)

        t1, gm, wm, mask = (down(a) for a in (t1, gm, wm, mask))
        affine = target
    arrays = [t1, np.clip(gm, 0, 1), np.clip(wm, 0, 1), mask > 0.5, affine]
    for a in arrays:
        a.flags.writeable = False
    return tuple(arrays)  # type: ignore[return-value]


def _scale_brain(t1: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Skull-strip and scale to [0, 1] (float32).

    Brain voxels map linearly from the mask threshold (0) to the maximum (1) and are kept at
    least ``_BRAIN_FLOOR``, so that the brain is exactly the nonzero voxels; background is 0.
    """
    hi = float(t1[mask].max())
    out = np.clip((t1 - _MASK_THRESHOLD) / max(hi - _MASK_THRESHOLD, 1e-12), _BRAIN_FLOOR, 1.0)
    return np.where(mask, out, 0.0).astype(np.float32)


def _tissue_labels(gm: np.ndarray, wm: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Most probable of CSF (``1 - gm - wm``), GM and WM inside ``mask``; 0 outside (int16)."""
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    classes = np.array([CSF, GREY_MATTER, WHITE_MATTER], dtype=np.int16)
    labels = classes[np.argmax(np.stack([csf, gm, wm]), axis=0)]
    return np.where(mask, labels, BACKGROUND).astype(np.int16)


def mni_atlas(resolution: int = 2) -> tuple[Image, Image]:
    """The MNI152 (ICBM 2009) T1 template and its tissue label map, from the nilearn wheel.

    The template is skull-stripped with nilearn's MNI152 brain mask (template above 0.2 of its
    maximum, as ``nilearn.datasets.load_mni152_brain_mask`` defines it) and scaled to [0, 1]:
    brain voxels linearly from that threshold (0) to the maximum (1), but at least 1/255 so that
    the brain is exactly the nonzero voxels; background 0. Labels inside the mask are the most
    probable of CSF (probability ``1 - p_GM - p_WM``), grey matter and white matter from
    nilearn's GM/WM probability templates; outside the mask 0. The 1 mm files ship inside the
    nilearn wheel (no network access); the 2 mm version is resampled from them here
    (anti-aliased, linear) onto the grid of ``load_mni152_template(resolution=2)``.

    Args:
        resolution: voxel size in mm, 1 (197 x 233 x 189) or 2 (99 x 117 x 95).

    Returns:
        ``(image, labels)``: a float32 intensity :class:`Image` in [0, 1] and an int16 label
        :class:`Image` with classes 0 background, 1 CSF, 2 GM, 3 WM, on the same RAS grid.

    Raises:
        InputError: on a resolution other than 1 or 2.
    """
    if resolution not in (1, 2):
        raise InputError(f"mni_atlas(): 'resolution' must be 1 or 2 (mm), got {resolution!r}")
    t1, gm, wm, mask, affine = _mni_arrays(int(resolution))
    image = Image(_scale_brain(t1, mask), affine.copy(), False, f"MNI152 T1 {resolution} mm")
    labels = Image(
        _tissue_labels(gm, wm, mask), affine.copy(), True, f"MNI152 tissue {resolution} mm"
    )
    return image, labels


# ----------------------------------------------------------------------------- working grid
def _check_shape(fn: str, shape: Sequence[int] | int, ndim: int) -> tuple[int, ...]:
    if isinstance(shape, int):
        shape = (shape,) * ndim
    try:
        sizes = tuple(int(s) for s in shape)
    except (TypeError, ValueError) as err:
        raise InputError(f"{fn}(): 'shape' must be {ndim} sizes, got {shape!r}") from err
    if len(sizes) != ndim or min(sizes) < 8:
        raise InputError(f"{fn}(): 'shape' must be {ndim} sizes >= 8, got {tuple(shape)!r}")
    return sizes


def _antialias(data: np.ndarray, ratio: float) -> np.ndarray:
    """Gaussian pre-filter before downsampling by ``ratio`` (target / source voxel size)."""
    if ratio <= 1.0:
        return data
    return ndimage.gaussian_filter(data, sigma=0.5 * np.sqrt(ratio**2 - 1.0), mode="nearest")


@functools.lru_cache(maxsize=8)
def _atlas_on_grid(
    shape: tuple[int, ...], margin: float
) -> tuple[WorkingGrid, np.ndarray, np.ndarray]:
    """The atlas image and labels on the working grid of ``shape`` around the brain (cached).

    The grid comes from the 2 mm atlas' brain mask (its extent); the 1 mm atlas is the source
    when the grid's voxels are finer than 2 mm. Image, GM/WM probabilities and the mask are
    anti-aliased and resampled linearly; the labels are derived on the grid from the resampled
    probabilities.
    """
    _, labels2 = mni_atlas(2)
    grid = WorkingGrid.around(labels2, shape, margin=margin)  # box of the labelled (brain) voxels
    resolution = 1 if grid.spacing < 1.9 else 2
    t1, gm, wm, mask, affine = _mni_arrays(resolution)
    ratio = grid.spacing / resolution

    def onto(data: np.ndarray) -> np.ndarray:
        return resample_array(_antialias(data, ratio), affine, grid.affine, shape, order=1)

    on_mask = onto(mask.astype(np.float32)) > 0.5
    image = onto(_scale_brain(t1, mask))
    labels = _tissue_labels(onto(gm), onto(wm), on_mask)
    image = np.where(on_mask, np.clip(image, _BRAIN_FLOOR, 1.0), 0.0).astype(np.float32)
    for a in (image, labels):
        a.flags.writeable = False
    return grid, image, labels


def _split_stream(fn: str, split: str) -> int:
    if split not in _SPLIT_STREAM:
        raise InputError(f"{fn}(): 'split' must be one of {SPLITS}, got {split!r}")
    return _SPLIT_STREAM[split]


# ----------------------------------------------------------------------------- subjects
def embedded_subjects(
    n: int,
    *,
    shape: Sequence[int] | int = (64, 64, 64),
    seed: int = 0,
    max_disp: float | None = None,
    split: str = "train",
    control_points: int = 5,
    margin: float = 0.1,
    augment: bool = True,
) -> list[tuple[Image, Image]]:
    """Labelled 3-D "subjects" made from the MNI atlas, on a fixed working grid.

    The atlas is put on an isotropic RAS working grid of ``shape`` around the brain (with
    ``margin`` of its extent on each side); subject ``i`` is the atlas warped by a random cubic
    B-spline displacement (``control_points`` per axis, components uniform in ``+-max_disp``
    voxels at the control points) and, with ``augment``, a random bias field, gamma and noise
    (:func:`medistill.data.synthesis.random_intensity_augment`). The label map is warped with the
    same field (linear on one-hot, argmax), so it is exact for the image.

    Args:
        n: number of subjects (``>= 0``).
        shape: working grid size (3 sizes or one int). At 64^3 the voxels are about 3.3 mm.
        seed: random seed; subject ``i`` depends only on ``(seed, split, i)``.
        max_disp: displacement bound in voxels (default 6 % of each axis, about 4 voxels or
            13 mm at 64^3; 0 gives copies of the atlas, up to the intensity augmentation).
        split: ``"train"`` or ``"test"``; the two use disjoint random streams.
        control_points: B-spline control points per axis (``>= 4``).
        margin: grid margin around the brain, fraction of the brain's extent per side.
        augment: apply the intensity augmentation.

    Returns:
        ``n`` pairs ``(image, labels)``: float32 images in [0, 1] (background 0) and int16
        label maps (0 background, 1 CSF, 2 GM, 3 WM), both with the working grid's affine.

    Raises:
        InputError: on a bad ``n``, ``shape``, ``split`` or ``max_disp``.
    """
    fn = "embedded_subjects"
    if int(n) != n or n < 0:
        raise InputError(f"{fn}(): 'n' must be a non-negative integer, got {n!r}")
    sizes = _check_shape(fn, shape, 3)
    stream = _split_stream(fn, split)
    if max_disp is not None and max_disp < 0:
        raise InputError(f"{fn}(): 'max_disp' must be >= 0 voxels, got {max_disp}")
    bound = [0.06 * s for s in sizes] if max_disp is None else float(max_disp)
    grid, image, labels = _atlas_on_grid(sizes, float(margin))
    img_t = torch.from_numpy(np.array(image))[None, None]
    lab_t = torch.from_numpy(np.array(labels, dtype=np.int64))[None, None]
    values = torch.tensor([BACKGROUND, CSF, GREY_MATTER, WHITE_MATTER])
    subjects = []
    for i in range(int(n)):
        gen = random_stream(seed, stream, i)
        disp = random_smooth_disp(
            sizes, control_points=control_points, max_disp=bound, generator=gen
        )
        warped = warp(img_t, disp)
        warped_labels = warp_labels(lab_t, disp, values=values)
        if augment:
            warped = random_intensity_augment(warped, generator=gen)
        subjects.append(
            (
                Image(
                    warped[0, 0].numpy().astype(np.float32),
                    grid.affine.copy(),
                    False,
                    f"embedded {split} subject {i} (seed {seed})",
                ),
                Image(
                    warped_labels[0, 0].numpy().astype(np.int16),
                    grid.affine.copy(),
                    True,
                    f"embedded {split} labels {i} (seed {seed})",
                ),
            )
        )
    return subjects


# ----------------------------------------------------------------------------- 2-D slices
def embedded_slices(
    n: int,
    *,
    shape: Sequence[int] | int = (128, 128),
    seed: int = 0,
    split: str = "train",
    max_disp: float | None = None,
    augment: bool = True,
) -> list[Image]:
    """2-D axial slices of the 1 mm MNI template, for MRI reconstruction.

    Candidate slices are the axial planes whose brain area is at least a quarter of the largest;
    every fourth candidate (offset 2) belongs to the test split, the rest to train. Slice ``i``
    is a random candidate of the split, put on an isotropic 2-D grid of ``shape`` around the
    brain (shared by all slices), deformed by a random B-spline field and, with ``augment``,
    given a random bias field and gamma (no noise: these are ground-truth magnitude images).

    Args:
        n: number of slices (``>= 0``).
        shape: 2-D grid size (2 sizes or one int).
        seed: random seed; slice ``i`` depends only on ``(seed, split, i)``.
        split: ``"train"`` or ``"test"`` (disjoint planes and random streams).
        max_disp: displacement bound in pixels (default 4 % of each axis; 0: none).
        augment: apply the intensity augmentation.

    Returns:
        ``n`` float32 2-D :class:`Image` objects in [0, 1] (background 0), array axes R and A;
        the affine's third column is the S axis and its translation the slice's S position.
    """
    fn = "embedded_slices"
    if int(n) != n or n < 0:
        raise InputError(f"{fn}(): 'n' must be a non-negative integer, got {n!r}")
    sizes = _check_shape(fn, shape, 2)
    stream = _split_stream(fn, split) + _SLICE_STREAM
    if max_disp is not None and max_disp < 0:
        raise InputError(f"{fn}(): 'max_disp' must be >= 0 pixels, got {max_disp}")
    bound = [0.04 * s for s in sizes] if max_disp is None else float(max_disp)
    image, _ = mni_atlas(1)
    mask = image.data > 0
    area = mask.sum(axis=(0, 1))
    candidates = np.flatnonzero(area >= 0.25 * area.max())
    test = (np.arange(candidates.size) % 4) == 2
    planes = candidates[test] if split == "test" else candidates[~test]
    projection = Image(mask.any(axis=2).astype(np.float32), image.affine, False, "projection")
    grid = WorkingGrid.around(projection, sizes, margin=0.08)
    ratio = grid.spacing / min(image.spacing)
    out = []
    for i in range(int(n)):
        gen = random_stream(seed, stream, i)
        z = int(planes[int(torch.randint(planes.size, (1,), generator=gen))])
        affine = image.affine.copy()
        affine[:3, 3] = image.affine[:3, :3] @ np.array([0.0, 0.0, z]) + image.affine[:3, 3]
        plane = _antialias(np.array(image.data[:, :, z]), ratio)
        slice_grid = np.array(grid.affine)
        slice_grid[2, 3] = affine[2, 3]
        data = resample_array(plane, affine, slice_grid, sizes, order=1)
        t = torch.from_numpy(np.clip(data, 0.0, 1.0))[None, None]
        disp = random_smooth_disp(sizes, max_disp=bound, generator=gen)
        t = warp(t, disp)
        if augment:
            t = random_intensity_augment(t, generator=gen, noise_std=(0.0, 0.0))
        out.append(
            Image(
                t[0, 0].numpy().astype(np.float32),
                slice_grid,
                False,
                f"embedded {split} slice {i} (seed {seed}, MNI z={z})",
            )
        )
    return out
