"""Pairing schemes for registration (random ordered pairs, atlas-to-subject, explicit pairs)
and the dataset that puts both images of a pair on the fixed image's working grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from medistill.errors import InputError
from medistill.io import WorkingGrid
from medistill.typing import PathLike

from .datasets import (
    SubjectSource,
    load_subject,
    prepare_on_grid,
    read_csv_rows,
    resolve,
)

Pair = tuple[int, int]  # (fixed index, moving index)


def all_ordered_pairs(n: int) -> list[Pair]:
    """Every ordered pair ``(fixed, moving)`` with ``fixed != moving``: ``n * (n - 1)`` pairs."""
    return [(i, j) for i in range(n) for j in range(n) if i != j]


def random_pairs(n: int, num_pairs: int, *, seed: int = 0) -> list[Pair]:
    """``num_pairs`` random ordered pairs of distinct subjects (without repeats while possible)."""
    if n < 2:
        raise InputError(f"random_pairs(): need at least 2 subjects, got {n}")
    rng = np.random.default_rng(seed)
    pool = all_ordered_pairs(n)
    out: list[Pair] = []
    while len(out) < num_pairs:
        order = rng.permutation(len(pool))
        out.extend(pool[k] for k in order[: num_pairs - len(out)])
    return out


def atlas_pairs(n: int, atlas: int = 0, *, atlas_as: str = "moving") -> list[Pair]:
    """Pairs of every subject with one atlas.

    Args:
        n: number of subjects (the atlas among them).
        atlas: index of the atlas.
        atlas_as: ``"moving"`` (atlas warped to each subject, as for label transfer) or ``"fixed"``
            (each subject warped to the atlas, as in LPBA40 evaluations against S01).
    """
    if atlas_as not in ("moving", "fixed"):
        raise InputError(f"atlas_pairs(): atlas_as must be 'moving' or 'fixed', got {atlas_as!r}")
    if not 0 <= atlas < n:
        raise InputError(f"atlas_pairs(): atlas index {atlas} outside 0..{n - 1}")
    others = [i for i in range(n) if i != atlas]
    return [(i, atlas) if atlas_as == "moving" else (atlas, i) for i in others]


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
    ``fixed_labels``, ``moving_labels``, ``fixed_landmarks``, ``moving_landmarks``.

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
            landmarks = resolve(path.parent, row.get(f"{side}_landmarks", ""))
            key = (image, labels, landmarks)
            if key not in index:
                index[key] = len(sources)
                sources.append(SubjectSource(image.name, image, labels, landmarks))
            pair.append(index[key])
        pairs.append((pair[0], pair[1]))
    return sources, pairs


class PairDataset(Dataset):
    """Registration pairs on the FIXED image's working grid (moving resampled through world space).

    Each item holds ``fixed``, ``moving`` (1, *S) float32 in [0, 1], and when available
    ``fixed_labels``, ``moving_labels`` (1, *S) int64 and ``fixed_landmarks``,
    ``moving_landmarks`` (N, ndim) in working-grid voxel indices, plus ``grid_affine`` (4, 4)
    and the subject names.
    """

    def __init__(
        self,
        sources: list[SubjectSource],
        pairs: list[Pair],
        shape: tuple[int, ...] | int = 64,
        *,
        margin: float = 0.1,
    ) -> None:
        bad = [p for p in pairs if not all(0 <= k < len(sources) for k in p)]
        if bad:
            raise InputError(f"PairDataset(): pair {bad[0]} refers to a missing subject")
        self.sources = sources
        self.pairs = list(pairs)
        self.shape = shape
        self.margin = margin

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        fi, mi = self.pairs[index]
        fixed, moving = load_subject(self.sources[fi]), load_subject(self.sources[mi])
        if fixed.image.ndim != moving.image.ndim:
            raise InputError(
                f"{moving.name}: a {moving.image.ndim}-D moving image cannot be paired with the "
                f"{fixed.image.ndim}-D fixed image {fixed.name}"
            )
        grid = WorkingGrid.around(fixed.image, self.shape, margin=self.margin)
        item: dict = {"grid_affine": torch.from_numpy(grid.affine)}
        for side, subject in (("fixed", fixed), ("moving", moving)):
            tensors = prepare_on_grid(subject, grid)
            item[side] = tensors["image"]
            for key in ("labels", "landmarks"):
                if key in tensors:
                    item[f"{side}_{key}"] = tensors[key]
            item[f"{side}_name"] = subject.name
        return item
