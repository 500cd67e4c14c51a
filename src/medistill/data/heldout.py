"""The held-out brain subjects: one fixed split of the label maps, and registration pairs made
from the held-out maps that no training ever touches.

The label maps are FreeSurfer / SynthSeg-style maps such as ``../shared/data/labelmaps``
(``training_seg_01..20.nii.gz``: 256^3, 1 mm, LIA). :func:`split_label_maps` is THE split: training
uses only its first list, evaluation only its second (the last :data:`HELDOUT_COUNT` maps by file
name). :func:`make_heldout_pairs` turns the held-out maps into skull-stripped images with their
label maps on a coarser grid, each with its own random rigid world-space offset, and a
``pairs.csv`` of every ordered pair (readable by :func:`medistill.data.read_pairs_csv`).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from medistill.errors import InputError, check_option
from medistill.io import Image, resample_array, save
from medistill.io.atomic import atomic_path, split_suffix
from medistill.spatial import rotation_matrix
from medistill.typing import PathLike

__all__ = [
    "HELDOUT_COUNT",
    "MIN_LABEL_MAPS",
    "make_heldout_pairs",
    "random_rigid",
    "split_label_maps",
]

HELDOUT_COUNT = 5
"""Number of label maps held out (the last ones by file name)."""
MIN_LABEL_MAPS = HELDOUT_COUNT + 2
"""Fewest label maps a folder must hold for the split (at least 2 remain for training)."""
CONTRASTS = ("t1", "t2", "random")
MANIFEST = "heldout.json"
"""File beside ``pairs.csv`` recording the parameters and per-subject offsets."""


def label_map_files(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if split_suffix(p.name)[1].lower() in (".nii", ".nii.gz")),
        key=lambda p: p.name,
    )


def split_label_maps(folder: PathLike) -> tuple[list[Path], list[Path]]:
    """THE subject split of a folder of label maps: ``(training, held_out)``.

    Every ``.nii`` / ``.nii.gz`` file of ``folder`` is a subject; the files are sorted by name and
    the last :data:`HELDOUT_COUNT` (5) are held out; for ``../shared/data/labelmaps`` that is
    ``training_seg_16..20``. All training (teachers, students, optimiser tuning, synthesis) must use
    only the first list; the second is for the final comparisons only (see
    :func:`make_heldout_pairs`). The split depends on the file names only, so it is the same on
    every machine and run.

    Args:
        folder: folder of label maps.

    Returns:
        Two disjoint lists of paths, each sorted by file name.

    Raises:
        InputError: ``folder`` is not a folder or holds fewer than :data:`MIN_LABEL_MAPS` maps.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"split_label_maps(): {folder} is not a folder")
    files = label_map_files(folder)
    if len(files) < MIN_LABEL_MAPS:
        raise InputError(
            f"split_label_maps(): {folder} holds {len(files)} label maps (.nii/.nii.gz), "
            f"need at least {MIN_LABEL_MAPS}"
        )
    return files[:-HELDOUT_COUNT], files[-HELDOUT_COUNT:]


def random_rigid(
    rng: np.random.Generator,
    centre: np.ndarray,
    *,
    max_offset_mm: float,
    max_rotation_deg: float,
) -> np.ndarray:
    """A random rigid world transform ``(4, 4)`` (mm) rotating about ``centre`` then translating.

    The rotation is about a uniformly random axis by an angle uniform in
    ``[max_rotation_deg / 2, max_rotation_deg]``; the translation has a uniformly random direction
    and a length uniform in ``[max_offset_mm / 2, max_offset_mm]`` (so every draw moves the subject
    noticeably). Zero bounds give no rotation / translation.

    Args:
        rng: random generator.
        centre: ``(3,)`` world point (mm, RAS) kept fixed by the rotation.
        max_offset_mm: bound of the translation length in mm.
        max_rotation_deg: bound of the rotation angle in degrees.

    Returns:
        ``T`` with ``T @ [x, 1] = R (x - centre) + centre + t``.
    """
    if max_offset_mm < 0 or max_rotation_deg < 0:
        raise InputError(
            f"random_rigid(): bounds must be >= 0, got max_offset_mm={max_offset_mm}, "
            f"max_rotation_deg={max_rotation_deg}"
        )
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = math.radians(max_rotation_deg) * rng.uniform(0.5, 1.0)
    rot = rotation_matrix(torch.from_numpy(axis * angle)[None])[0].numpy()
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    shift = direction * max_offset_mm * rng.uniform(0.5, 1.0)
    centre = np.asarray(centre, dtype=np.float64)
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = centre + shift - rot @ centre
    return out


def _subject_name(path: Path, index: int) -> str:
    stem = Path(split_suffix(path.name)[0]).name
    digits = re.search(r"(\d+)$", stem)
    return f"sub{digits.group(1)}" if digits else f"sub{index:02d}"


def _read_label_map(path: Path) -> Image:
    from medistill.io import load

    labels = load(path, is_label=True)
    if labels.ndim != 3:
        raise InputError(f"{path}: expected a 3-D label map, got shape {labels.shape}")
    return labels


def _synthesise(labels: np.ndarray, contrast: str, seed: int) -> np.ndarray:
    """A skull-stripped image in [0, 1] (background 0) from an int label map, float32."""
    from medistill.data.synthesis import synth_image_from_labels, synth_t1_like, synth_t2_like

    gen = torch.Generator().manual_seed(seed)
    tensor = torch.from_numpy(labels.astype(np.int64))[None, None]
    if contrast == "t1":
        image = synth_t1_like(tensor, gen)
    elif contrast == "t2":
        image = synth_t2_like(tensor, gen)
    else:
        image = synth_image_from_labels(tensor, generator=gen, zero_background=True).float()
        image = image * (tensor != 0)
    return image[0, 0].numpy().astype(np.float32)


def _brain_box(labels: Image, margin_mm: float) -> tuple[slice, ...] | None:
    """Crop slices of ``labels`` (its own grid) around the non-zero voxels plus ``margin_mm``."""
    coords = np.nonzero(labels.data)
    if coords[0].size == 0:
        return None
    pad = np.ceil(margin_mm / np.asarray(labels.spacing)).astype(int)
    lo = np.maximum(np.array([c.min() for c in coords]) - pad, 0)
    hi = np.minimum(np.array([c.max() for c in coords]) + pad, np.asarray(labels.shape) - 1)
    return tuple(slice(int(a), int(b) + 1) for a, b in zip(lo, hi, strict=True))


def _heldout_subject(
    path: Path, contrast: str, spacing: float, seed: int, margin_mm: float
) -> tuple[Image, Image]:
    """Skull-stripped image and label map of one map on its cropped ``spacing``-mm grid (no
    world offset yet); both share one affine."""
    from medistill.data.synthesis import strip_extracerebral

    raw = _read_label_map(path)
    stripped = strip_extracerebral(raw.data).astype(np.int32)
    labels = raw.with_data(stripped, is_label=True)
    box = _brain_box(labels, margin_mm)
    if box is None:
        raise InputError(f"{path}: no brain label left after removing extra-cerebral classes")
    start = np.array([s.start for s in box], dtype=np.float64)
    crop = stripped[box]
    crop_affine = labels.affine.copy()
    crop_affine[:3, 3] = labels.affine[:3, :3] @ start + labels.affine[:3, 3]
    image = _synthesise(crop, contrast, seed)

    factor = spacing / np.asarray(labels.spacing)  # original voxels per output voxel, per axis
    shape = tuple(int(n) for n in np.ceil(np.asarray(crop.shape) / factor))
    scale = np.eye(4)
    scale[:3, :3] = np.diag(factor)
    scale[:3, 3] = (factor - 1) / 2  # output voxel 0 covers crop voxels 0..factor-1
    grid = crop_affine @ scale
    sigma = np.maximum((factor - 1) / 2, 0)  # anti-aliasing before linear downsampling
    smooth = ndimage.gaussian_filter(image, sigma) if np.any(sigma > 0) else image
    image_out = resample_array(smooth, crop_affine, grid, shape, order=1)
    labels_out = resample_array(crop, crop_affine, grid, shape, order=0).astype(np.int32)
    return (
        Image(np.clip(image_out, 0, 1).astype(np.float32), grid, False, str(path)),
        Image(labels_out, grid.copy(), True, str(path)),
    )


def make_heldout_pairs(
    folder: PathLike,
    out: PathLike,
    *,
    contrast: str = "t1",
    spacing: float = 2.0,
    seed: int = 0,
    max_offset_mm: float = 20.0,
    max_rotation_deg: float = 10.0,
    margin_mm: float = 6.0,
    subjects: int | None = None,
) -> Path:
    """Write the held-out registration pairs of a folder of label maps; returns ``pairs.csv``.

    For each held-out map of :func:`split_label_maps` (or only the first ``subjects`` of them):

    1. extra-cerebral classes are removed (:func:`medistill.data.strip_extracerebral`: labels
       500-999 and the outer CSF 24); only brain structures remain, as integers;
    2. a skull-stripped image is synthesised on the 1 mm grid cropped to the brain's bounding box
       plus ``margin_mm``: ``contrast="t1"`` gives a T1-like image
       (:func:`medistill.data.synthesis.synth_t1_like`), ``"t2"`` a T2-like one
       (:func:`~medistill.data.synthesis.synth_t2_like`: the same random draws as ``"t1"`` for
       the same seed, only the tissue means differ), ``"random"`` a random intensity per
       label (:func:`medistill.data.synth_image_from_labels`), background 0, values in [0, 1];
    3. image (Gaussian anti-aliasing, linear) and labels (nearest) are resampled to ``spacing``
       mm voxels along the original array axes (orientation kept; about 70x75x100 voxels at 2 mm
       for these maps); both share one voxel grid (same shape and affine);
    4. the header affine of both is left-multiplied by a random rigid transform
       (:func:`random_rigid` about the grid's centre: rotation up to ``max_rotation_deg``, shift
       up to ``max_offset_mm``), so world space no longer aligns the subjects. The voxel data is
       not resampled for this.

    Files in ``out``: ``subNN.nii.gz`` (float32 image), ``subNN_seg.nii.gz`` (int labels),
    ``pairs.csv`` (columns ``fixed, moving, fixed_labels, moving_labels``, paths relative to the
    CSV: every ordered pair of distinct subjects, 20 for 5 maps, fixed-major order) and
    ``heldout.json`` (the parameters; per subject its source map, unshifted grid affine and world
    offset). All writes are atomic. The result is fully determined by the arguments (each
    subject's random numbers come from ``seed`` and its position among the held-out maps).

    Args:
        folder: folder of label maps (e.g. ``../shared/data/labelmaps``); never modified.
        out: output folder (created).
        contrast: ``"t1"``, ``"t2"`` or ``"random"``.
        spacing: isotropic output voxel size in mm (> 0).
        seed: random seed of the synthesis and the offsets.
        max_offset_mm: bound of each subject's world translation in mm.
        max_rotation_deg: bound of each subject's world rotation in degrees.
        margin_mm: extent kept around the brain's bounding box in mm.
        subjects: use only the first this many held-out maps (>= 2; default all 5; for quick
            tests).

    Returns:
        Path of ``pairs.csv``.

    Raises:
        InputError: on a bad argument, too few label maps (see :func:`split_label_maps`) or an
            unreadable map.
    """
    fn = "make_heldout_pairs"
    contrast = check_option(fn, "contrast", contrast, CONTRASTS)
    if not (math.isfinite(spacing) and spacing > 0):
        raise InputError(f"{fn}(): 'spacing' must be a positive number of mm, got {spacing}")
    if margin_mm < 0:
        raise InputError(f"{fn}(): 'margin_mm' must be >= 0, got {margin_mm}")
    _, held = split_label_maps(folder)
    if subjects is not None:
        if not 2 <= subjects <= len(held):
            raise InputError(f"{fn}(): 'subjects' must be in 2..{len(held)}, got {subjects}")
        held = held[:subjects]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names, records = [], []
    for k, path in enumerate(held):
        name = _subject_name(path, k)
        rng = np.random.default_rng([int(seed), k])
        image, labels = _heldout_subject(
            path, contrast, float(spacing), int(rng.integers(2**31)), margin_mm
        )
        centre = image.index_to_world((np.asarray(image.shape)[None] - 1) / 2)[0]
        offset = random_rigid(
            rng, centre, max_offset_mm=max_offset_mm, max_rotation_deg=max_rotation_deg
        )
        grid = image.affine.copy()
        save(Image(image.data, offset @ grid, False, name), out / f"{name}.nii.gz")
        save(Image(labels.data, offset @ grid, True, name), out / f"{name}_seg.nii.gz")
        names.append(name)
        records.append(
            {
                "name": name,
                "source": str(path),
                "image": f"{name}.nii.gz",
                "labels": f"{name}_seg.nii.gz",
                "shape": list(image.shape),
                "grid_affine": grid.tolist(),
                "world_offset": offset.tolist(),
            }
        )
    lines = ["fixed,moving,fixed_labels,moving_labels"]
    for f in names:
        for m in names:
            if f != m:
                lines.append(f"{f}.nii.gz,{m}.nii.gz,{f}_seg.nii.gz,{m}_seg.nii.gz")
    manifest = {
        "folder": str(Path(folder)),
        "contrast": contrast,
        "spacing": float(spacing),
        "seed": int(seed),
        "max_offset_mm": float(max_offset_mm),
        "max_rotation_deg": float(max_rotation_deg),
        "margin_mm": float(margin_mm),
        "subjects": records,
    }
    with atomic_path(out / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    with atomic_path(out / "pairs.csv") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return out / "pairs.csv"
