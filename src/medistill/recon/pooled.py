"""The ``pooled`` reconstruction data source: every real 2-D MR slice under the given roots, split
into train / validation / test by subject.

Each entry of ``data.paths`` is one of:

- a **root** laid out like ``../shared/data`` (any folder holding at least one of the entries of
  :data:`POOLED_LAYOUT`): its 2-D OASIS slices ``brain2d/oasis2d/*.nrrd``, ANTs slices
  ``brain2d/ants/*.jpg``, 3-D brains ``brain3d/oasis_?.nii.gz`` and ``brain3d/vxm_subject.npz``
  (array ``vol``) and the 4-coil brain ``mri/img_brain_4ch.mat`` (complex coil images combined by
  root-sum-of-squares); label maps, CT and other files of the root are not used;
- a **folder** of images (the formats of :func:`medistill.recon.data.read_slice_set`, plus
  ``.mat`` coil images), each file one subject;
- a **file**: a NIfTI / NRRD / NPZ volume or 2-D image, a fastMRI-style HDF5 file (its slices), or
  a ``.mat`` file; one subject.

With ``data.paths`` empty the root is ``../shared/data`` relative to the current directory, when
that folder exists.

Subjects and groups: every file is one subject, named ``group/stem``; the group is the layout
entry's name (``oasis2d``, ``ants``, ``brain3d``, ``coils``), a listed folder's name, or ``files``
for files listed one by one. Slices: a 3-D volume with (nearly, within 5 %) isotropic voxels and
at least 32 voxels along every axis gives its planes across all three axes (axial, coronal and
sagittal for a brain); other volumes and HDF5 files give the planes across their last axis; 2-D
images give themselves. Planes are chosen, scaled and resized as for ``files``
(:func:`medistill.recon.data.plane_stack`: ``data.min_area``, ``data.slices`` per volume and axis,
``data.size``).

Split (:func:`split_subjects`): within each group, the subjects (sorted by name) are shuffled by a
generator of ``(data.seed, group)``, the first ``round(n * data.test_fraction)`` go to ``test``, the
next ``round(n * data.val_fraction)`` to ``val``, the rest to ``train`` (rounding half up). So a
subject is in exactly one split, the split depends on the seed, the fractions and the subject names
only (not on the order of ``data.paths``), and every large enough group is represented in each
split. With the default fractions (0.1, 0.1) on ``../shared/data``: 10 OASIS 2-D slices and one ANTs
slice each for validation and test, the 3-D brains and the coil brain (groups of 3 and 1) train.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from medistill.errors import InputError
from medistill.recon.config import DataConfig, check_fractions
from medistill.recon.data import SLICE_SUFFIXES, SliceSet, plane_stack, read_volume
from medistill.seeding import stream
from medistill.typing import PathLike

#: (group, glob pattern relative to a root) of the files a root contributes.
POOLED_LAYOUT: tuple[tuple[str, str], ...] = (
    ("oasis2d", "brain2d/oasis2d/*.nrrd"),
    ("ants", "brain2d/ants/*.jpg"),
    ("brain3d", "brain3d/oasis_?.nii.gz"),
    ("brain3d", "brain3d/vxm_subject.npz"),
    ("coils", "mri/img_brain_4ch.mat"),
)
SPLITS: tuple[str, ...] = ("train", "val", "test")
DEFAULT_ROOT = Path("..") / "shared" / "data"
POOLED_SUFFIXES = (*SLICE_SUFFIXES, ".mat")

__all__ = [
    "DEFAULT_ROOT",
    "POOLED_LAYOUT",
    "SPLITS",
    "Subject",
    "pooled_roots",
    "pooled_set",
    "pooled_split",
    "pooled_subjects",
    "read_coil_mat",
    "read_subject",
    "split_subjects",
]


@dataclass(frozen=True)
class Subject:
    """One subject of the pooled source: one file.

    Attributes:
        name: unique ``group/stem``.
        group: the group its split is drawn within.
        path: the file.
    """

    name: str
    group: str
    path: Path


def pooled_roots(cfg: DataConfig) -> list[Path]:
    """``data.paths``, or the default root ``../shared/data`` (current directory) when empty.

    Raises:
        InputError: ``data.paths`` is empty and the default root does not exist.
    """
    if cfg.paths:
        return [Path(p) for p in cfg.paths]
    root = Path.cwd() / DEFAULT_ROOT
    if not root.is_dir():
        raise InputError(
            f"data.source 'pooled' needs data.paths (roots, folders or files of images): the "
            f"default {DEFAULT_ROOT} does not exist in {Path.cwd()}"
        )
    return [root.resolve()]


def _stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(POOLED_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _layout_files(root: Path) -> list[tuple[str, Path]]:
    return [(group, p) for group, pattern in POOLED_LAYOUT for p in sorted(root.glob(pattern))]


def _entry_files(entry: Path) -> list[tuple[str, Path]]:
    if not entry.exists():
        raise InputError(f"data.paths: {entry}: no such file or folder")
    if entry.is_file():
        return [("files", entry)]
    layout = _layout_files(entry)
    if layout:
        return layout
    found = sorted(
        p
        for p in entry.iterdir()
        if p.is_file() and any(p.name.lower().endswith(s) for s in POOLED_SUFFIXES)
    )
    if not found:
        raise InputError(
            f"data.paths: {entry}: neither a root like ../shared/data nor a folder of images "
            f"({', '.join(POOLED_SUFFIXES)})"
        )
    return [(entry.resolve().name or "files", p) for p in found]


def pooled_subjects(paths: Sequence[PathLike]) -> list[Subject]:
    """The subjects of roots, folders and files (see the module docstring), sorted by name.

    A file reached twice (e.g. a root listed twice) is one subject; two different files with the
    same ``group/stem`` get ``~2``, ``~3`` ... appended in the order they are listed.

    Raises:
        InputError: a missing path, or a folder holding no image files.
    """
    seen: set[Path] = set()
    names: set[str] = set()
    subjects = []
    for entry in paths:
        for group, path in _entry_files(Path(entry)):
            key = path.resolve()
            if key in seen:
                continue
            seen.add(key)
            name, k = f"{group}/{_stem(path)}", 1
            while name in names:
                k += 1
                name = f"{group}/{_stem(path)}~{k}"
            names.add(name)
            subjects.append(Subject(name, group, path))
    return sorted(subjects, key=lambda s: s.name)


def _count(n: int, fraction: float) -> int:
    return int(math.floor(n * fraction + 0.5))


def split_subjects(
    subjects: Sequence[Subject], *, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[Subject]]:
    """Split subjects into ``train``, ``val`` and ``test`` within each group (module docstring).

    Args:
        subjects: the subjects (names unique).
        val_fraction: fraction of each group for validation, in [0, 1).
        test_fraction: fraction of each group for testing, in [0, 1).
        seed: split seed (``data.seed``).

    Returns:
        ``{"train": [...], "val": [...], "test": [...]}``, each sorted by name; together they hold
        every subject exactly once.

    Raises:
        InputError: fractions outside [0, 1) or summing to 1 or more, or no subject left to train.
    """
    check_fractions(val_fraction, test_fraction)
    out: dict[str, list[Subject]] = {s: [] for s in SPLITS}
    for group in sorted({s.group for s in subjects}):
        members = sorted((s for s in subjects if s.group == group), key=lambda s: s.name)
        n = len(members)
        n_test = _count(n, test_fraction)
        n_val = min(_count(n, val_fraction), n - n_test)
        order = torch.randperm(n, generator=stream(seed, "recon-pooled-split", group)).tolist()
        out["test"] += [members[i] for i in order[:n_test]]
        out["val"] += [members[i] for i in order[n_test : n_test + n_val]]
        out["train"] += [members[i] for i in order[n_test + n_val :]]
    if not out["train"]:
        raise InputError(
            f"data.source 'pooled': no subject left for training ({len(subjects)} subjects, "
            f"val_fraction {val_fraction}, test_fraction {test_fraction})"
        )
    return {k: sorted(v, key=lambda s: s.name) for k, v in out.items()}


def _split(cfg: DataConfig) -> dict[str, list[Subject]]:
    roots = pooled_roots(cfg)
    subjects = pooled_subjects(roots)
    if not subjects:
        raise InputError(f"data.source 'pooled': no images in {', '.join(map(str, roots))}")
    return split_subjects(
        subjects, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed
    )


def pooled_split(cfg: DataConfig) -> dict[str, list[str]]:
    """Subject names of each split of a ``pooled`` config (no image is read).

    Returns:
        ``{"train": [names], "val": [names], "test": [names]}``.
    """
    return {k: [s.name for s in v] for k, v in _split(cfg).items()}


def read_coil_mat(path: PathLike) -> np.ndarray:
    """Magnitude image ``(H, W)`` of a MATLAB file of coil images (e.g. ``img_brain_4ch.mat``).

    The array is ``img`` when present, else the file's only array: ``(H, W, C)`` coil images
    (complex or real, coil axis last) are combined by root-sum-of-squares; a 2-D array gives its
    magnitude.

    Raises:
        InputError: unreadable file (MATLAB v7.3 files included), no single image array, or an
            array of another dimensionality.
    """
    from scipy.io import loadmat

    from medistill.recon.kspace import rss

    source = str(path)
    try:
        content = loadmat(source)
    except (OSError, ValueError, NotImplementedError) as err:
        raise InputError(f"{source}: cannot read MATLAB file ({err})") from err
    arrays = {k: v for k, v in content.items() if not k.startswith("__") and hasattr(v, "ndim")}
    key = "img" if "img" in arrays else (next(iter(arrays)) if len(arrays) == 1 else None)
    if key is None:
        raise InputError(f"{source}: expected an array 'img' or a single array, got {list(arrays)}")
    data = np.asarray(arrays[key])
    if not np.issubdtype(data.dtype, np.number):
        raise InputError(f"{source}: '{key}' is not numeric ({data.dtype})")
    if data.ndim == 3:
        image = rss(torch.from_numpy(data.astype(np.complex64)), dim=-1).numpy()
    elif data.ndim == 2:
        image = np.abs(data).astype(np.float32)
    else:
        raise InputError(f"{source}: '{key}' must be (H, W) or (H, W, coils), got {data.shape}")
    if not np.all(np.isfinite(image)):
        raise InputError(f"{source}: '{key}' holds NaN or Inf values")
    return image


def _plane_axes(shape: tuple[int, ...], spacing: Sequence[float]) -> tuple[int, ...]:
    if len(shape) == 2:
        return (-1,)
    iso = max(spacing) <= 1.05 * min(spacing) and min(shape) >= 32
    return (0, 1, 2) if iso else (2,)


def read_subject(
    subject: Subject | PathLike, size: int, *, min_area: float = 0.25, max_slices: int | None = None
) -> np.ndarray:
    """The slices of one subject (module docstring: which planes).

    Args:
        subject: a :class:`Subject` or a file.
        size: side of the square slices.
        min_area: see :func:`medistill.recon.data.select_slices`.
        max_slices: at most this many planes per axis, all when ``None``.

    Returns:
        ``(N, size, size)`` float32 in [0, 1] (``N = 0``: nothing above the foreground threshold).

    Raises:
        InputError: an unreadable file.
    """
    from medistill.io import load

    path = subject.path if isinstance(subject, Subject) else Path(subject)
    suffix = path.suffix.lower()
    if suffix == ".mat":
        volume, axes = read_coil_mat(path), (-1,)
    elif suffix in (".h5", ".hdf5"):
        volume, axes = read_volume(path), (-1,)  # fastMRI or RCN scans: slices on the last axis
    else:
        image = load(path, is_label=False)
        volume, axes = image.data, _plane_axes(image.shape, image.spacing)
    stacks = [
        plane_stack(volume, size, axis=a, min_area=min_area, max_slices=max_slices) for a in axes
    ]
    return np.concatenate(stacks).astype(np.float32)


def pooled_set(cfg: DataConfig, split: str = "train") -> SliceSet:
    """The slices of one split of a ``pooled`` config; each subject is one volume of the set.

    Args:
        cfg: data settings (``paths``, ``size``, ``slices``, ``min_area``, ``seed``, fractions).
        split: ``"train"``, ``"val"`` or ``"test"``.

    Returns:
        A :class:`~medistill.recon.data.SliceSet`; subjects without a usable plane are left out.

    Raises:
        InputError: unknown split, bad paths or fractions, unreadable files, or an empty split.
    """
    if split not in SPLITS:
        raise InputError(f"pooled_set(): 'split' must be one of {', '.join(SPLITS)}, got {split!r}")
    if int(cfg.size) != cfg.size or cfg.size < 8:
        raise InputError(f"data.size must be an integer >= 8, got {cfg.size!r}")
    subjects = _split(cfg)[split]
    images, volume, names = [], [], []
    for subject in subjects:
        stack = read_subject(
            subject, int(cfg.size), min_area=cfg.min_area, max_slices=cfg.slices or None
        )
        if len(stack) == 0:
            continue
        images.append(stack)
        volume.append(np.full(len(stack), len(names), dtype=np.int64))
        names.append(subject.name)
    if not images:
        raise InputError(
            f"data.source 'pooled': the {split} split has no slices ({len(subjects)} subjects; "
            "raise data.val_fraction / data.test_fraction or add data)"
        )
    return SliceSet(np.concatenate(images), np.concatenate(volume), names)
