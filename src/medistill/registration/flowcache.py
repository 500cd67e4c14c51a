"""The teacher-flow cache: the trained teacher runs once over the fixed training pairs; its final
composed fields (and the pair images) are stored as float16 memory-mapped arrays on disk with a JSON
index, and streamed during student training (only the requested pairs are read).

The cache is keyed by the teacher (the SHA-256 of a checkpoint, or a description of an optimiser's
settings) and a description of the pair source: when either changes the cache is rebuilt (into a
temporary folder, then renamed into place). A build in one process is resumable: the temporary
folder is named by the key and records how many batches are done, so a build that was killed (or
interrupted) continues where it stopped the next time the same cache is asked for.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from medistill.errors import InputError
from medistill.io.atomic import file_sha256
from medistill.typing import PathLike

INDEX = "index.json"
log = logging.getLogger(__name__)


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


def _fill(
    arrays: dict[str, np.memmap],
    run_teacher: Callable[..., Tensor],
    pair: Callable[[int], dict[str, Tensor]],
    pairs: int,
    batch_size: int,
    rank: int,
    shards: int,
    teacher_labels: bool,
    progress: bool,
    first: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> None:
    """Run the teacher over this rank's share of the pairs (batches ``rank::shards``) from pair
    ``first`` on (one process only); ``on_batch(n)`` once pairs ``0..n-1`` are written."""
    starts = list(range(first, pairs, batch_size))[rank::shards]
    if shards > 1:
        log.info("teacher-flow cache: rank %d of %d runs %d batches", rank, shards, len(starts))
    iterator = starts
    if progress:
        from tqdm import tqdm

        iterator = tqdm(starts, desc="teacher flows", unit="batch")
    images, flows, labels = arrays["images"], arrays["flows"], arrays.get("labels")
    for start in iterator:
        idx = list(range(start, min(pairs, start + batch_size)))
        items = [pair(i) for i in idx]
        fixed = torch.stack([it["fixed"] for it in items])
        moving = torch.stack([it["moving"] for it in items])
        extra = {}
        if teacher_labels:
            extra = {
                "fixed_labels": torch.stack([it["fixed_labels"] for it in items]),
                "moving_labels": torch.stack([it["moving_labels"] for it in items]),
            }
        with torch.no_grad():  # an optimiser teacher turns gradients on for itself
            disp = run_teacher(fixed, moving, **extra).float().cpu()
        rows = slice(idx[0], idx[-1] + 1)
        images[rows, 0] = fixed[:, 0].numpy().astype(np.float16)
        images[rows, 1] = moving[:, 0].numpy().astype(np.float16)
        flows[rows] = disp.numpy().astype(np.float16)
        if labels is not None:
            labels[rows, 0] = torch.stack([it["fixed_labels"][0] for it in items]).numpy()
            labels[rows, 1] = torch.stack([it["moving_labels"][0] for it in items]).numpy()
        if on_batch is not None:
            on_batch(idx[-1] + 1)


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
    rank: int = 0,
    world: int = 1,
    run_id: str = "",
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
        rank, world, run_id: with ``world > 1`` and a ``run_id`` shared by the processes of one
            run (``torchrun`` sets ``TORCHELASTIC_RUN_ID``), every process runs the teacher on
            its share of the pairs (batches ``rank::world``) into one set of memory maps that
            rank 0 creates and finally publishes; without a ``run_id`` rank 0 builds alone.

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

    def reuse() -> FlowCache | None:
        if (folder / INDEX).exists():
            try:
                cache = FlowCache(folder)
                if cache.key == key:
                    return cache
            except (InputError, KeyError, ValueError):
                pass
        return None

    def until(get: Callable[[], object], what: str):
        """``get()`` once it is truthy; one line after ``wait_s`` seconds in all."""
        while not (value := get()):
            if time.monotonic() > deadline:
                raise InputError(f"{folder}: timed out waiting for {what}")
            time.sleep(1.0)
        return value

    cache = reuse()
    if cache is not None:
        return cache
    shards = world if world > 1 and run_id else 1
    if shards == 1 and not build:  # the main process builds it alone
        return until(reuse, "the main process to build the cache")
    build_args = dict(
        until=until,
        reuse=reuse,
        run_teacher=run_teacher,
        pair=pair,
        pairs=pairs,
        shape=shape,
        has_labels=has_labels,
        batch_size=batch_size,
        progress=progress,
        teacher_labels=teacher_labels,
    )
    if shards == 1:  # one builder per cache folder at a time; the others wait, then reuse it
        lock = folder.with_name(folder.name + ".lock")
        with _exclusive(lock, until):
            cache = reuse() or _build(folder, key, 1, 0, run_id, **build_args)
            # published: whoever waits finds the cache; after a failure the file stays, so that
            # two later builders still meet on one lock
            lock.unlink(missing_ok=True)
        return cache
    return _build(folder, key, shards, rank, run_id, **build_args)


def _build(
    folder: Path,
    key: dict,
    shards: int,
    rank: int,
    run_id: str,
    *,
    until: Callable,
    reuse: Callable,
    run_teacher: Callable[..., Tensor],
    pair: Callable[[int], dict[str, Tensor]],
    pairs: int,
    shape: tuple[int, ...],
    has_labels: bool,
    batch_size: int,
    progress: bool,
    teacher_labels: bool,
) -> FlowCache:
    ndim = len(shape)
    key_text = json.dumps(key, sort_keys=True)
    if shards > 1:
        name = f".building-{run_id}"
    else:  # named by the key: a later build of the same cache finds and continues it
        name = f".building-{hashlib.sha256(key_text.encode()).hexdigest()[:16]}"
    tmp = folder.with_name(folder.name + name)
    main = rank == 0 or shards == 1
    files = {
        "images": (tmp / "images.f16", np.float16, (pairs, 2, *shape)),
        "flows": (tmp / "flows.f16", np.float16, (pairs, ndim, *shape)),
    }
    if has_labels:
        files["labels"] = (tmp / "labels.i16", np.int16, (pairs, 2, *shape))
    done = 0  # pairs 0..done-1 are in the maps (one process)
    arrays: dict[str, np.memmap] = {}

    def record(n: int) -> None:  # after a batch is written: flush, then count it (atomically)
        nonlocal done
        for arr in arrays.values():
            arr.flush()
        (tmp / "progress.tmp").write_text(str(n))
        os.replace(tmp / "progress.tmp", tmp / "progress")
        done = n

    try:
        if main:
            done = _partial_build(tmp, key_text, files) if shards == 1 else 0
            if done:
                arrays = {k: np.memmap(p, t, "r+", shape=sh) for k, (p, t, sh) in files.items()}
                log.info("teacher-flow cache: continuing %s after %d of %d pairs", tmp, done, pairs)
            else:
                if tmp.exists():
                    shutil.rmtree(tmp)
                if shards == 1:  # under the lock: partial builds for another teacher or pairs
                    for old in folder.parent.glob(f"{glob.escape(folder.name)}.building-*"):
                        if (old / "key.json").is_file():
                            log.info("teacher-flow cache: removing the stale partial %s", old)
                            shutil.rmtree(old, ignore_errors=True)
                tmp.mkdir(parents=True)
                if shards == 1:
                    (tmp / "key.json").write_text(key_text)
                arrays = {k: np.memmap(p, t, "w+", shape=sh) for k, (p, t, sh) in files.items()}
            (tmp / "ready").write_text("ok")
        else:
            until((tmp / "ready").exists, "rank 0 to start the cache")
            arrays = {k: np.memmap(p, t, "r+", shape=sh) for k, (p, t, sh) in files.items()}
        _fill(
            arrays,
            run_teacher,
            pair,
            pairs,
            batch_size,
            rank if shards > 1 else 0,
            shards,
            has_labels and teacher_labels,
            progress and main,
            first=done,
            on_batch=record if shards == 1 else None,
        )
        for arr in arrays.values():
            arr.flush()
        arrays.clear()  # close the memory maps before the folder is renamed
        (tmp / f"done-{rank if shards > 1 else 0}").write_text("ok")
        if not main:  # rank 0 finishes the cache; wait for it like a non-building rank
            return until(reuse, "rank 0 to finish the cache")
        for r in range(shards):
            until((tmp / f"done-{r}").exists, f"rank {r} to fill its share of the cache")
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
        for name in ("key.json", "progress", "ready"):
            (tmp / name).unlink(missing_ok=True)
        tmp.rename(folder)
    except BaseException as err:
        if main and tmp.exists():
            interrupted = isinstance(err, (KeyboardInterrupt, SystemExit))
            if shards == 1 and done and interrupted:  # the next build of this cache continues
                log.warning(
                    "teacher-flow cache: stopped after %d of %d pairs; %s is kept and the next "
                    "run with the same teacher and pairs continues it",
                    done,
                    pairs,
                    tmp,
                )
            else:  # an error would come back at the same pair: start clean next time
                shutil.rmtree(tmp)
        raise
    return FlowCache(folder)


@contextlib.contextmanager
def _exclusive(lock: Path, until: Callable) -> Iterator[None]:
    """Hold an exclusive ``flock`` on the file ``lock`` (waiting with ``until``); without
    ``fcntl`` (not POSIX) no lock is taken."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return

    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:

        def take() -> bool:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        until(take, f"another process building {lock.with_suffix('')}")
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _partial_build(tmp: Path, key_text: str, files: dict) -> int:
    """Pairs done by an earlier build in ``tmp`` of the cache keyed ``key_text`` (0: none, or
    one of another key or with files of other sizes)."""
    try:
        if (tmp / "key.json").read_text() != key_text:
            return 0
        for path, dtype, shape in files.values():
            if path.stat().st_size != int(np.prod(shape)) * np.dtype(dtype).itemsize:
                return 0
        return max(0, int((tmp / "progress").read_text()))
    except (OSError, ValueError):
        return 0
