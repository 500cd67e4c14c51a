"""Registration pairs: every ordered pair of a set, and explicit pairs from a CSV."""

from __future__ import annotations

from pathlib import Path

from medistill.errors import InputError
from medistill.typing import PathLike

from .datasets import SubjectSource, read_csv_rows, resolve

Pair = tuple[int, int]  # (fixed index, moving index)


def all_ordered_pairs(n: int) -> list[Pair]:
    """Every ordered pair ``(fixed, moving)`` with ``fixed != moving``: ``n * (n - 1)`` pairs."""
    return [(i, j) for i in range(n) for j in range(n) if i != j]


PAIR_COLUMNS = ("fixed", "moving")
OPTIONAL_PAIR_COLUMNS = (
    "fixed_labels",
    "moving_labels",
    "fixed_landmarks",
    "moving_landmarks",
)


def read_pairs_csv(
    path: PathLike, *, required: tuple[str, ...] = PAIR_COLUMNS
) -> tuple[list[SubjectSource], list[Pair]]:
    """Explicit pairs from a CSV with columns ``fixed``, ``moving`` and optional
    ``fixed_labels``, ``moving_labels``, ``fixed_landmarks``, ``moving_landmarks`` (files of
    voxel indices on each image's grid) or ``fixed_landmarks_mm``, ``moving_landmarks_mm``
    (files of world RAS coordinates in mm).

    Returns:
        The distinct subjects and the pairs as indices into them. Paths are relative to the CSV.
    """
    path = Path(path)
    rows = read_csv_rows(path, tuple(dict.fromkeys(PAIR_COLUMNS + tuple(required))))
    sources: list[SubjectSource] = []
    index: dict[tuple, int] = {}
    pairs: list[Pair] = []
    for line, row in enumerate(rows, start=2):
        pair = []
        for side in ("fixed", "moving"):
            image = resolve(path.parent, row[side])
            if image is None:
                raise InputError(f"{path}: row {line} has an empty {side!r} cell")
            labels = resolve(path.parent, row.get(f"{side}_labels", ""))
            voxel = resolve(path.parent, row.get(f"{side}_landmarks", ""))
            world = resolve(path.parent, row.get(f"{side}_landmarks_mm", ""))
            if voxel is not None and world is not None:
                raise InputError(
                    f"{path}: row {line} gives both {side}_landmarks (voxel indices) and "
                    f"{side}_landmarks_mm (world mm); give one"
                )
            landmarks = voxel if world is None else world
            space = "voxel" if world is None else "world"
            key = (image, labels, landmarks, space)
            if key not in index:
                index[key] = len(sources)
                sources.append(
                    SubjectSource(image.name, image, labels, landmarks, landmarks_space=space)
                )
            pair.append(index[key])
        pairs.append((pair[0], pair[1]))
    return sources, pairs
