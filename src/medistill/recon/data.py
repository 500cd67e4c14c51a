"""2-D training and test slices for reconstruction and super-resolution.

Sources: 3-D volumes (NIfTI, NRRD, NPZ, RCN-style HDF5: axial slices = planes of the last array
axis), 2-D images (PNG/JPEG/NRRD/NIfTI), folders of either, fastMRI-style HDF5 files
(``reconstruction_esc`` / ``reconstruction_rss`` targets, else the magnitude of ``kspace``:
single-coil ``(S, H, W)`` or multi-coil ``(S, C, H, W)`` combined by root-sum-of-squares), and the
embedded default data (axial slices of the MNI152 template shipped with nilearn:
:func:`medistill.data.embedded_slices`).

Every slice is put on a square ``size x size`` grid: zero-padded to a square (centred), then
resized bilinearly with anti-aliasing. Intensities are divided by the maximum of their volume and
clipped to [0, 1] (so a volume's slices keep their relative brightness).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from medistill.errors import InputError
from medistill.typing import PathLike

SLICE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd", ".npz", ".h5", ".hdf5")
SLICE_SUFFIXES += (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
FASTMRI_TARGETS = ("reconstruction_esc", "reconstruction_rss")

__all__ = [
    "SliceSet",
    "embedded_set",
    "fit_square",
    "plane_stack",
    "read_fastmri",
    "read_slice_set",
    "read_volume",
    "select_slices",
]


@dataclass
class SliceSet:
    """A stack of 2-D slices and the volume each came from.

    Attributes:
        images: ``(N, S, S)`` float32 in [0, 1].
        volume: ``(N,)`` int index into ``names`` of each slice's volume.
        names: one name per volume (file stem or description).
    """

    images: np.ndarray
    volume: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> int:
        """Side of the square slices."""
        return int(self.images.shape[-1])

    def slices_of(self, index: int) -> np.ndarray:
        """``(S_v, S, S)`` slices of volume ``index``."""
        return self.images[self.volume == index]

    @staticmethod
    def concat(sets: Sequence[SliceSet]) -> SliceSet:
        """One set holding all slices of ``sets`` (volume indices renumbered)."""
        images, volume, names = [], [], []
        for s in sets:
            images.append(s.images)
            volume.append(s.volume + len(names))
            names.extend(s.names)
        if not images:
            raise InputError("SliceSet.concat(): no slice sets given")
        return SliceSet(np.concatenate(images), np.concatenate(volume), names)


def fit_square(plane: np.ndarray, size: int) -> np.ndarray:
    """Zero-pad a 2-D array to a centred square, then resize it to ``size x size``.

    Args:
        plane: ``(H, W)`` array (or ``(N, H, W)``: each plane alike).
        size: output side.

    Returns:
        ``(size, size)`` (or ``(N, size, size)``) float32.
    """
    arr = np.asarray(plane, dtype=np.float32)
    h, w = arr.shape[-2:]
    side = max(h, w)
    if (h, w) != (side, side):
        pad = [(0, 0)] * (arr.ndim - 2)
        pad += [((side - h) // 2, side - h - (side - h) // 2)]
        pad += [((side - w) // 2, side - w - (side - w) // 2)]
        arr = np.pad(arr, pad)
    if side == size:
        return np.ascontiguousarray(arr)
    t = torch.from_numpy(np.ascontiguousarray(arr)).reshape(-1, 1, side, side)
    t = F.interpolate(t, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return t.reshape(*arr.shape[:-2], size, size).numpy()


def select_slices(volume: np.ndarray, min_area: float = 0.25, threshold: float = 0.1) -> np.ndarray:
    """Indices of the planes (last axis) whose foreground area is at least ``min_area`` of the
    largest; foreground = voxels above ``threshold`` times the volume maximum."""
    if volume.ndim == 2:
        return np.zeros(1, dtype=np.int64)
    top = float(volume.max())
    area = (volume > threshold * top).sum(axis=(0, 1)) if top > 0 else np.zeros(volume.shape[2])
    if area.max() == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(area >= min_area * area.max())


def _stack(volume: np.ndarray, size: int, min_area: float, max_slices: int | None) -> np.ndarray:
    top = float(volume.max())
    if not np.isfinite(top) or top <= 0:
        return np.zeros((0, size, size), dtype=np.float32)
    idx = select_slices(volume, min_area)
    if max_slices is not None and idx.size > max_slices:
        idx = idx[np.round(np.linspace(0, idx.size - 1, max_slices)).astype(int)]
    planes = volume[None] if volume.ndim == 2 else np.moveaxis(volume[:, :, idx], 2, 0)
    planes = np.clip(planes / top, 0.0, 1.0)
    return fit_square(planes, size).clip(0.0, 1.0).astype(np.float32)


def plane_stack(
    volume: np.ndarray,
    size: int,
    *,
    axis: int = -1,
    min_area: float = 0.25,
    max_slices: int | None = None,
) -> np.ndarray:
    """The planes of a volume across ``axis`` as square training slices.

    Planes are kept by :func:`select_slices` (foreground area), at most ``max_slices`` of them
    evenly spread, divided by the volume's maximum, clipped to [0, 1] and put on a
    ``size x size`` grid by :func:`fit_square`.

    Args:
        volume: ``(X, Y, Z)`` array (or ``(X, Y)``: one plane, ``axis`` ignored).
        size: side of the output slices.
        axis: the axis the planes are perpendicular to.
        min_area: see :func:`select_slices`.
        max_slices: at most this many planes, all when ``None``.

    Returns:
        ``(N, size, size)`` float32 in [0, 1]; ``N = 0`` for an empty volume.
    """
    vol = np.asarray(volume)
    if vol.ndim == 3:
        vol = np.moveaxis(vol, axis, -1)
    return _stack(vol, int(size), min_area, max_slices)


def read_fastmri(path: PathLike) -> np.ndarray:
    """Magnitude target slices ``(S, H, W)`` of a fastMRI-style HDF5 file.

    ``reconstruction_esc`` or ``reconstruction_rss`` when present, else ``|IFFT(kspace)|``
    (centred layout; multi-coil ``(S, C, H, W)`` combined by root-sum-of-squares).

    Raises:
        InputError: unreadable file, or none of the expected datasets.
    """
    import h5py

    from medistill.recon.kspace import ifft2, rss

    source = str(path)
    try:
        with h5py.File(source, "r") as f:
            key = next((k for k in FASTMRI_TARGETS if k in f), None)
            if key is not None:
                data = np.asarray(f[key], dtype=np.float32)
            elif "kspace" in f:
                k = torch.from_numpy(np.asarray(f["kspace"]).astype(np.complex64))
                if not k.is_complex():
                    raise InputError(f"{source}: 'kspace' must be complex")
                images = ifft2(k, "centered")
                data = (rss(images, dim=1) if k.dim() == 4 else images.abs()).numpy()
            else:
                raise InputError(
                    f"{source}: no 'kspace', 'reconstruction_esc' or 'reconstruction_rss' dataset"
                )
    except OSError as err:
        raise InputError(f"{source}: cannot read HDF5 file ({err})") from err
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise InputError(f"{source}: expected (slices, H, W) data, got shape {data.shape}")
    if not np.all(np.isfinite(data)):
        raise InputError(f"{source}: target holds NaN or Inf values")
    return data


def _is_fastmri(path: Path) -> bool:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return any(k in f for k in ("kspace", *FASTMRI_TARGETS))
    except OSError as err:
        raise InputError(f"{path}: cannot read HDF5 file ({err})") from err


def read_volume(path: PathLike) -> np.ndarray:
    """The voxel array of one file: ``(X, Y)`` or ``(X, Y, Z)`` (fastMRI files: ``(H, W, S)``).

    Raises:
        InputError: as :func:`medistill.io.load` (unreadable, NaN, wrong dimensionality).
    """
    from medistill.io import load

    p = Path(path)
    if p.suffix.lower() in (".h5", ".hdf5") and p.is_file() and _is_fastmri(p):
        return np.moveaxis(read_fastmri(p), 0, -1)
    return load(p, is_label=False).data


def _files(path: Path) -> list[Path]:
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_file():
        return [path]
    found = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and any(p.name.lower().endswith(s) for s in SLICE_SUFFIXES)
    )
    if not found:
        raise InputError(f"{path}: folder holds no image files ({', '.join(SLICE_SUFFIXES)})")
    return found


def _stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(SLICE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_slice_set(
    paths: Sequence[PathLike],
    size: int,
    *,
    min_area: float = 0.25,
    max_slices: int | None = None,
) -> SliceSet:
    """Slices of files and folders (each file is one volume; folders are expanded).

    Args:
        paths: files or folders (see the module docstring for formats).
        size: side of the square output slices.
        min_area: keep planes of a 3-D volume whose foreground is at least this fraction of the
            largest plane's.
        max_slices: at most this many planes per volume (evenly spread), all when ``None``.

    Returns:
        A :class:`SliceSet`.

    Raises:
        InputError: missing files, unreadable images, or no usable slice at all.
    """
    if int(size) != size or size < 8:
        raise InputError(f"read_slice_set(): 'size' must be an integer >= 8, got {size!r}")
    images, volume, names = [], [], []
    for entry in paths:
        for f in _files(Path(entry)):
            stack = _stack(read_volume(f), int(size), min_area, max_slices)
            if len(stack) == 0:
                continue
            images.append(stack)
            volume.append(np.full(len(stack), len(names), dtype=np.int64))
            names.append(_stem(f))
    if not images:
        raise InputError(f"read_slice_set(): no non-empty slices in {', '.join(map(str, paths))}")
    return SliceSet(np.concatenate(images), np.concatenate(volume), names)


def embedded_set(n: int, size: int, *, seed: int = 0, split: str = "train") -> SliceSet:
    """``n`` embedded slices (MNI152 template, deformed and intensity-augmented), each its own
    volume, scaled to max 1.

    Args:
        n: number of slices.
        size: side of the square slices.
        seed: seed of :func:`medistill.data.embedded_slices`.
        split: ``"train"`` or ``"test"`` (disjoint template planes).
    """
    from medistill.data import embedded_slices

    slices = embedded_slices(n, shape=(size, size), seed=seed, split=split)
    images = np.stack([s.data / max(float(s.data.max()), 1e-12) for s in slices])
    names = [f"embedded_{split}_{i}" for i in range(n)]
    return SliceSet(images.astype(np.float32).clip(0, 1), np.arange(n, dtype=np.int64), names)
