"""Checks of user inputs at the boundary (before any work or any write): one line each, naming
the option or the file."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medistill.errors import InputError
from medistill.io.image import Image

__all__ = ["check_image_values", "check_output_folder"]


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
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"{option} {folder}: no permission to write in {ancestor}")
    return folder


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
