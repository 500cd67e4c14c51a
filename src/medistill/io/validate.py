"""Checks of user inputs at the boundary (before any work or any write): one line each, naming
the option or the file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from medistill.errors import InputError
from medistill.io.image import Image

__all__ = ["check_image_values", "check_output_file", "check_output_folder"]


def check_output_folder(path: Path | str, option: str = "--out") -> Path:
    """A folder that outputs can be written into: an existing folder or a new one whose nearest
    existing ancestor is a writable folder. Nothing is created here.

    Raises:
        InputError: an empty path, an existing file, a path below a file, or no write permission.
    """
    text = str(path)
    if not text.strip():
        raise InputError(f"{option} is empty; give an output folder")
    folder = Path(text)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{option} {folder}: exists and is not a folder")
    ancestor = folder
    while not ancestor.exists():
        parent = ancestor.parent
        if parent == ancestor:
            break
        ancestor = parent
    if ancestor.exists() and not ancestor.is_dir():
        raise InputError(f"{option} {folder}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK) or not _can_create_in(ancestor):
        raise InputError(f"{option} {folder}: cannot write in {ancestor}")
    return folder


def _can_create_in(folder: Path) -> bool:
    """Whether a folder can be made in ``folder`` (tried and removed at once: permissions, a
    read-only or pseudo file system; ``os.access`` alone says yes to root everywhere)."""
    try:
        probe = tempfile.mkdtemp(prefix=".medistill-probe-", dir=folder)
    except OSError:
        return False
    os.rmdir(probe)
    return True


def check_output_file(
    path: Path | str, option: str = "--out", suffixes: tuple[str, ...] = ()
) -> Path:
    """A file path that an output can be written to (atomically, by rename): not empty, not an
    existing folder, with a suffix of ``suffixes`` (when given), in a folder that exists or can
    be made. Nothing is created here.

    Raises:
        InputError: one line naming ``option`` and what is wrong.
    """
    text = str(path)
    if not text.strip():
        raise InputError(f"{option} is empty; give an output file")
    target = Path(text)
    if target.is_dir():
        raise InputError(f"{option} {target}: is a folder; give a file name")
    if suffixes and not text.lower().endswith(suffixes):
        raise InputError(f"{option} must end in {' or '.join(suffixes)}, got {target}")
    check_output_folder(target.parent, option=f"{option} {target}: folder")
    return target


def check_image_values(image: Image, what: str = "image") -> Image:
    """Refuse an intensity image with NaN or infinite values, or with no contrast (constant or
    all zero: nothing to register).

    Raises:
        InputError: one line naming the file and the problem.
    """
    data = np.asarray(image.data)
    if not np.issubdtype(data.dtype, np.number):
        raise InputError(f"{image.source}: {what} has non-numeric voxels ({data.dtype})")
    finite = np.isfinite(data)
    if not finite.all():
        bad = int(data.size - finite.sum())
        raise InputError(
            f"{image.source}: {what} has {bad} NaN or infinite voxel(s) of {data.size}"
        )
    lo, hi = float(data.min()), float(data.max())
    if hi <= lo:
        raise InputError(
            f"{image.source}: {what} is constant ({lo:g} everywhere): nothing to align"
        )
    return image
