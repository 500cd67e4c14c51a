"""The teacher-flow cache: the trained teacher runs once over the fixed training pairs; its final
composed fields (and the pair images) are stored as float16 memory-mapped arrays on disk with a JSON
index, and streamed during student training (only the requested pairs are read).

The cache is keyed by the teacher (the SHA-256 of a checkpoint, or a description of an optimiser's
settings) and a description of the pair source: when either changes the cache is rebuilt (into a
temporary folder, then renamed into place).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from medistill.errors import InputError
from medistill.typing import PathLike

INDEX = "index.json"


def file_sha256(path: PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class FlowCache:
    """Read access to a built cache.

    Files: ``images.f16`` (P, 2, *S) fixed and moving, ``flows.f16`` (P, ndim, *S) teacher fields
    in voxels, ``labels.i16`` (P, 2, *S) when the pairs have labels, and ``index.json``.
    """

    def __init__(self, folder: PathLike) -> None:
        self.folder = Path(folder)
        try:
            self.index = json.loads((self.folder / INDEX).read_text())
        except (OSError, ValueError) as err:
            raise InputError(f"{self.folder}: not a teacher-flow cache ({err})") from err
        p, shape = self.index["pairs"], tuple(self.index["shape"])
        ndim = len(shape)
        self.images = np.memmap(self.folder / "images.f16", np.float16, "r", shape=(p, 2, *shape))
        self.flows = np.memmap(self.folder / "flows.f16", np.float16, "r", shape=(p, ndim, *shape))
        self.labels = None
        if self.index.get("labels"):
            self.labels = np.memmap(self.folder / "labels.i16", np.int16, "r", shape=(p, 2, *shape))

    def __len__(self) -> int:
        return int(self.index["pairs"])

    @property
    def key(self) -> dict:
        return self.index["key"]

    def get(self, index: int) -> dict[str, Tensor]:
        """Pair ``index``: ``fixed``, ``moving`` (1, *S) float32, ``teacher_disp`` (ndim, *S)."""
        images = torch.from_numpy(np.asarray(self.images[index], dtype=np.float32))
        item = {
            "fixed": images[0:1],
            "moving": images[1:2],
            "teacher_disp": torch.from_numpy(np.asarray(self.flows[index], dtype=np.float32)),
        }
        if self.labels is not None:
            labels = torch.from_numpy(np.asarray(self.labels[index], dtype=np.int64))
            item["fixed_labels"], item["moving_labels"] = labels[0:1], labels[1:2]
        return item


def build_flow_cache(
    folder: PathLike,
    *,
    teacher_checkpoint: PathLike | None = None,
    teacher_key: str | None = None,
    run_teacher: Callable[..., Tensor],
    pair: Callable[[int], dict[str, Tensor]],
    pairs: int,
    shape: tuple[int, ...],
    source_key: str,
    has_labels: bool,
    batch_size: int = 2,
    progress: bool = False,
    build: bool = True,
    wait_s: float = 3600.0,
    teacher_labels: bool = False,
) -> FlowCache:
    """Build (or reuse) the cache for ``pairs`` pairs.

    Args:
        folder: cache folder.
        teacher_checkpoint: the teacher's checkpoint file (its hash keys the cache), or
        teacher_key: a description of a teacher without a file (e.g. the optimiser's settings).
        run_teacher: ``(fixed, moving) -> disp``: batches ``(B, 1, *S)`` to ``(B, ndim, *S)``;
            with ``teacher_labels`` it also gets ``fixed_labels=``, ``moving_labels=``.
        pair: ``index -> pair dict`` (see :class:`~medistill.registration.pairs.PairSource`).
        pairs: number of pairs P.
        shape: working grid.
        source_key: description of the pair source (changes -> rebuild).
        has_labels: store the pairs' label maps too.
        teacher_labels: hand the pairs' label maps to the teacher (privileged terms).
        build: False in the other processes of a distributed run: wait (up to ``wait_s``) for
            the main process to build the cache instead of building it too.

    Returns:
        The :class:`FlowCache`, rebuilt when its key differs from the current teacher and source.
    """
    folder = Path(folder)
    if (teacher_checkpoint is None) == (teacher_key is None):
        raise InputError("build_flow_cache(): give one of teacher_checkpoint and teacher_key")
    key = {
        "teacher_sha256": file_sha256(teacher_checkpoint)
        if teacher_checkpoint is not None
        else hashlib.sha256(str(teacher_key).encode()).hexdigest(),
        "source": source_key,
        "pairs": int(pairs),
        "shape": list(shape),
    }
    deadline = time.monotonic() + wait_s
    while True:
        if (folder / INDEX).exists():
            try:
                cache = FlowCache(folder)
                if cache.key == key:
                    return cache
            except (InputError, KeyError, ValueError):
                pass
        if build:
            break
        if time.monotonic() > deadline:
            raise InputError(f"{folder}: timed out waiting for the main process to build the cache")
        time.sleep(2.0)
    ndim = len(shape)
    tmp = folder.with_name(folder.name + f".building-{int(time.time() * 1000)}")
    tmp.mkdir(parents=True)
    try:
        images = np.memmap(tmp / "images.f16", np.float16, "w+", shape=(pairs, 2, *shape))
        flows = np.memmap(tmp / "flows.f16", np.float16, "w+", shape=(pairs, ndim, *shape))
        labels = (
            np.memmap(tmp / "labels.i16", np.int16, "w+", shape=(pairs, 2, *shape))
            if has_labels
            else None
        )
        iterator = range(0, pairs, batch_size)
        if progress:
            from tqdm import tqdm

            iterator = tqdm(iterator, desc="teacher flows", unit="batch")
        for start in iterator:
            idx = list(range(start, min(pairs, start + batch_size)))
            items = [pair(i) for i in idx]
            fixed = torch.stack([it["fixed"] for it in items])
            moving = torch.stack([it["moving"] for it in items])
            extra = {}
            if teacher_labels and has_labels:
                extra = {
                    "fixed_labels": torch.stack([it["fixed_labels"] for it in items]),
                    "moving_labels": torch.stack([it["moving_labels"] for it in items]),
                }
            with torch.no_grad():  # an optimiser teacher turns gradients on for itself
                disp = run_teacher(fixed, moving, **extra).float().cpu()
            images[idx[0] : idx[-1] + 1, 0] = fixed[:, 0].numpy().astype(np.float16)
            images[idx[0] : idx[-1] + 1, 1] = moving[:, 0].numpy().astype(np.float16)
            flows[idx[0] : idx[-1] + 1] = disp.numpy().astype(np.float16)
            if labels is not None:
                labels[idx[0] : idx[-1] + 1, 0] = torch.stack(
                    [it["fixed_labels"][0] for it in items]
                ).numpy()
                labels[idx[0] : idx[-1] + 1, 1] = torch.stack(
                    [it["moving_labels"][0] for it in items]
                ).numpy()
        for arr in (images, flows, labels):
            if arr is not None:
                arr.flush()
        index = {
            "key": key,
            "pairs": int(pairs),
            "shape": list(shape),
            "labels": has_labels,
            "dtype": "float16",
            "units": "voxels",
        }
        (tmp / INDEX).write_text(json.dumps(index, indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return FlowCache(folder)
