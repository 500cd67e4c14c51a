"""Atomic file writing: write to a temporary file beside the target, then rename."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from medistill.typing import PathLike


def split_suffix(path: PathLike) -> tuple[str, str]:
    """Split ``'a/b.nii.gz'`` into ``('a/b', '.nii.gz')``, keeping double suffixes whole."""
    name = str(path)
    lower = name.lower()
    for double in (".nii.gz", ".tar.gz"):
        if lower.endswith(double):
            return name[: -len(double)], name[-len(double) :]
    stem, ext = os.path.splitext(name)
    return stem, ext


def file_sha256(path: PathLike) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    If the body raises, the temporary file is removed and an existing ``path`` is left untouched.
    The temporary name keeps the suffix of ``path`` so that format detection by extension works.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _, suffix = split_suffix(target.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs should be readable like any file
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def __getattr__(name: str) -> Any:
    """``write_metrics`` moved to :mod:`medistill.metrics.summary`; the old import path works."""
    if name == "write_metrics":
        from medistill.metrics.summary import write_metrics

        return write_metrics
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
