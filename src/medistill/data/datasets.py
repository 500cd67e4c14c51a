"""Subjects (image + optional labels + optional landmarks) from a folder, a CSV or an HDF5 file.

A :class:`SubjectSource` says where one subject's files are; :func:`load_subject` reads it into a
:class:`Subject` of :class:`~medistill.io.Image` objects on the image's own grid. Datasets put
subjects on a working grid for the networks (:class:`VolumeDataset`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from medistill.errors import InputError
from medistill.io import (
    Image,
    WorkingGrid,
    check_same_grid,
    list_h5_scans,
    load,
    normalize_percentile,
    read_h5_scan,
)
from medistill.io.atomic import split_suffix
from medistill.io.readers import LABEL_NAME_HINT
from medistill.typing import PathLike

IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd", ".npz")
LABEL_SUFFIXES = ("_seg", "_labels", "_label", "_tissue", "_aseg", "-seg", "_mask")


@dataclass
class SubjectSource:
    """Where one subject's files are (nothing is read until :func:`load_subject`).

    Attributes:
        name: subject identifier.
        image: image file; for HDF5, the file with ``group`` set.
        labels: label-map file, or None.
        landmarks: landmark file (``.csv``/``.txt`` rows of coordinates, or ``.npy``), or None.
        landmarks_space: ``"voxel"`` (indices on the image's grid) or ``"world"`` (RAS mm, the
            NIfTI world of the image's affine).
        group: scan group inside an RCN-style HDF5 file.
        key: array inside an NPZ archive for the image (labels use ``seg`` when ``labels`` is the
            same archive).
    """

    name: str
    image: Path
    labels: Path | None = None
    landmarks: Path | None = None
    group: str | None = None
    landmarks_space: str = "voxel"
    key: str | None = None


@dataclass
class Subject:
    """One subject on its own grid.

    Attributes:
        name: identifier.
        image: intensity image.
        labels: label map on the image's grid (same affine), or None.
        landmarks: ``(N, ndim)`` voxel indices on the image's grid; rows of NaN are missing.
    """

    name: str
    image: Image
    labels: Image | None = None
    landmarks: np.ndarray | None = None
    meta: dict = field(default_factory=dict)


def read_landmarks(path: PathLike, image: Image, space: str = "voxel") -> np.ndarray:
    """Landmarks ``(N, ndim)`` as voxel indices on ``image``'s grid, from ``.npy`` or
    whitespace/comma separated text holding voxel indices (``space="voxel"``) or world RAS
    coordinates in mm (``space="world"``, converted with the image's affine).

    Rows holding -1 (the RCN convention for a missing landmark; voxel files only) become NaN.

    Raises:
        InputError: unreadable file, wrong number of columns, or a landmark outside the volume.
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            points = np.load(path, allow_pickle=False)
        else:
            text = path.read_text().replace(",", " ")
            rows = [r.split() for r in text.splitlines() if r.strip() and not r.startswith("#")]
            # tolerate a header row
            if rows and not _is_number(rows[0][0]):
                rows = rows[1:]
            points = np.array(rows, dtype=np.float64)
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: cannot read landmarks ({err})") from err
    if space not in ("voxel", "world"):
        raise InputError(f"landmark space must be 'voxel' or 'world', got {space!r}")
    points = np.atleast_2d(np.asarray(points, dtype=np.float64))
    what = "voxel indices" if space == "voxel" else "world RAS mm"
    if points.size == 0 or points.shape[1] != image.ndim:
        raise InputError(
            f"{path}: landmarks need {image.ndim} columns ({what}), got "
            f"{points.shape[1] if points.size else 0}"
        )
    if not np.isfinite(points).all():
        raise InputError(f"{path}: landmarks hold NaN or infinite coordinates")
    if space == "world":
        padded = np.zeros((len(points), 3))
        padded[:, : points.shape[1]] = points  # a 2-D image's plane: z = 0
        points = image.world_to_index(padded)
    missing = np.all(points == -1, axis=1) if space == "voxel" else np.zeros(len(points), bool)
    points[missing] = np.nan
    valid = points[~missing]
    upper = np.asarray(image.shape) - 1
    outside = np.any((valid < -0.5) | (valid > upper + 0.5), axis=1)
    if outside.any():
        raise InputError(
            f"{path}: {int(outside.sum())} landmark(s) lie outside the {image.shape} volume, "
            f"e.g. {valid[outside][0].tolist()}"
        )
    return points


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_subject(source: SubjectSource, *, dims: int | None = None) -> Subject:
    """Read a subject; labels are checked to lie on the image's grid (header rounding tolerated)."""
    if source.group is not None:
        image, labels, points = read_h5_scan(source.image, source.group, dims=dims)
        if points is not None:
            points = points.copy()
            points[np.all(points == -1, axis=1)] = np.nan
        return Subject(source.name, image, labels, points)
    image = load(source.image, key=source.key, is_label=False, dims=dims)
    labels = None
    if source.labels is not None:
        key = "seg" if source.labels == source.image else None
        labels = check_same_grid(image, load(source.labels, key=key, is_label=True, dims=dims))
    landmarks = (
        read_landmarks(source.landmarks, image, source.landmarks_space)
        if source.landmarks
        else None
    )
    return Subject(source.name, image, labels, landmarks)


def _stem(path: Path) -> str:
    return Path(split_suffix(path.name)[0]).name


def sources_from_folder(folder: PathLike) -> list[SubjectSource]:
    """Subjects in a folder: every image file, with ``NAME_seg`` / ``_labels`` / ``_tissue`` ...
    beside ``NAME`` taken as its label map and ``NAME.csv`` / ``NAME_landmarks.txt`` as landmarks.

    NPZ archives holding both ``vol`` and ``seg`` give image and labels from the one file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if split_suffix(p.name)[1].lower() in IMAGE_SUFFIXES)
    by_stem = {_stem(p): p for p in files}
    sources = []
    for path in files:
        stem = _stem(path)
        if LABEL_NAME_HINT.search(stem) and any(stem.endswith(s) for s in LABEL_SUFFIXES):
            continue
        labels = next((by_stem[stem + s] for s in LABEL_SUFFIXES if stem + s in by_stem), None)
        if labels is None and path.suffix == ".npz":
            with np.load(path) as archive:
                labels = path if "seg" in archive.files else None
        landmarks = next(
            (
                folder / f"{stem}{s}"
                for s in ("_landmarks.txt", "_landmarks.csv", "_landmarks.npy")
                if (folder / f"{stem}{s}").exists()
            ),
            None,
        )
        sources.append(SubjectSource(stem, path, labels, landmarks))
    if not sources:
        raise InputError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found")
    return sources


def read_csv_rows(path: PathLike, required: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts; paths are left as text.

    Raises:
        InputError: unreadable file, no rows, or a required column missing (all named).
    """
    path = Path(path)
    try:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            rows = []
            for row in reader:
                # a short row gets None values, a long one a None key: both are broken rows
                if None in row or any(v is None for v in row.values()):
                    count = sum(v is not None for k, v in row.items() if k is not None)
                    count += len(row.get(None) or [])
                    raise InputError(
                        f"{path}: row {reader.line_num} has {count} fields, the header has "
                        f"{len(columns)}"
                    )
                rows.append({k.strip(): (v or "").strip() for k, v in row.items() if k})
    except UnicodeDecodeError as err:
        raise InputError(f"{path}: not a text CSV file (not UTF-8)") from err
    except csv.Error as err:
        raise InputError(f"{path}: not a valid CSV file (line {reader.line_num})") from err
    except IsADirectoryError as err:
        raise InputError(f"{path}: is a folder, not a CSV file") from err
    except FileNotFoundError as err:
        raise InputError(f"{path}: no such CSV file") from err
    except OSError as err:
        raise InputError(f"{path}: cannot read CSV ({err.strerror or 'read error'})") from err
    missing = [c for c in required if c not in columns]
    if missing:
        raise InputError(
            f"{path}: missing column(s) {', '.join(missing)} (has {', '.join(columns) or 'none'})"
        )
    if not rows:
        raise InputError(f"{path}: CSV has no rows")
    return rows


def resolve(base: Path, text: str) -> Path | None:
    """A path from a CSV cell, relative to the CSV's folder; None for an empty cell."""
    if not text:
        return None
    p = Path(text).expanduser()
    return p if p.is_absolute() else base / p


def sources_from_csv(path: PathLike) -> list[SubjectSource]:
    """Subjects from a CSV: column ``image``; optional ``labels``, ``landmarks``, ``name``."""
    path = Path(path)
    sources = []
    for i, row in enumerate(read_csv_rows(path, ("image",))):
        image = resolve(path.parent, row["image"])
        if image is None:
            raise InputError(f"{path}: row {i + 2} has an empty 'image' cell")
        sources.append(
            SubjectSource(
                row.get("name") or _stem(image),
                image,
                resolve(path.parent, row.get("labels", "")),
                resolve(path.parent, row.get("landmarks", "")),
            )
        )
    return sources


def sources_from_h5(path: PathLike) -> list[SubjectSource]:
    """Subjects from an RCN-style HDF5 file (one group per scan)."""
    return [SubjectSource(g, Path(path), group=g) for g in list_h5_scans(path)]


def discover(location: PathLike) -> list[SubjectSource]:
    """Subjects from a folder, a ``.csv`` file or an ``.h5`` file."""
    location = Path(location)
    if location.is_dir():
        return sources_from_folder(location)
    suffix = location.suffix.lower()
    if suffix == ".csv":
        return sources_from_csv(location)
    if suffix in (".h5", ".hdf5"):
        return sources_from_h5(location)
    raise InputError(f"{location}: expected a folder, a .csv or an .h5 file")


def prepare_on_grid(
    subject: Subject, grid: WorkingGrid, *, normalize: bool = True
) -> dict[str, torch.Tensor]:
    """Tensors of a subject resampled onto ``grid``.

    Returns:
        ``image`` (1, *S) float32 in [0, 1] (percentile-normalised when ``normalize``);
        ``labels`` (1, *S) int64 if present; ``landmarks`` (N, ndim) float64 in working-grid voxel
        indices (NaN rows missing) if present.
    """
    image = subject.image
    if normalize:
        image = image.with_data(normalize_percentile(image.data, 0.5, 99.5))
    out = {"image": torch.from_numpy(grid.resample(image, cval=0.0).data[None].copy())}
    if subject.labels is not None:
        out["labels"] = torch.from_numpy(grid.resample(subject.labels).data[None].astype(np.int64))
    if subject.landmarks is not None:
        world = subject.image.index_to_world(np.nan_to_num(subject.landmarks, nan=0.0))
        inv = np.linalg.inv(grid.affine)
        idx = (world @ inv[:3, :3].T + inv[:3, 3])[:, : grid.ndim]
        idx[np.isnan(subject.landmarks).any(axis=1)] = np.nan
        out["landmarks"] = torch.from_numpy(idx)
    return out


class VolumeDataset(Dataset):
    """Subjects on fixed-shape working grids (each around its own content), loaded lazily.

    Each item is a dict with ``image`` (1, *S) float32 in [0, 1], optionally ``labels`` (1, *S)
    int64 and ``landmarks`` (N, ndim), plus ``name``.
    """

    def __init__(
        self,
        sources: list[SubjectSource] | PathLike,
        shape: tuple[int, ...] | int = 64,
        *,
        margin: float = 0.1,
        normalize: bool = True,
    ) -> None:
        self.sources = discover(sources) if isinstance(sources, (str, Path)) else list(sources)
        self.shape = shape
        self.margin = margin
        self.normalize = normalize

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> dict:
        subject = load_subject(self.sources[index])
        grid = WorkingGrid.around(subject.image, self.shape, margin=self.margin)
        item = prepare_on_grid(subject, grid, normalize=self.normalize)
        item["name"] = subject.name
        return item
