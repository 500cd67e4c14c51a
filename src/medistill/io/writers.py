"""Writing images as NIfTI, atomically (temporary file, then rename)."""

from __future__ import annotations

import numpy as np

from medistill.errors import InputError
from medistill.io.atomic import atomic_path, split_suffix
from medistill.io.image import Image
from medistill.typing import PathLike


def save_nifti(
    data: np.ndarray,
    affine: np.ndarray,
    path: PathLike,
    *,
    intent: int | None = None,
    is_label: bool = False,
) -> None:
    """Write an array with its voxel-to-world affine (mm, RAS) as ``.nii`` / ``.nii.gz``.

    Args:
        data: voxel values ``(X, Y[, Z[, ...]])``; vector fields use ``(X, Y, Z, 1, 3)``.
        affine: ``(4, 4)`` voxel-to-world matrix, stored as both sform and qform (code 1, scanner).
        path: target file; written to a temporary file beside it, then renamed.
        intent: optional NIfTI intent code (e.g. 1007 for a vector field).
        is_label: store integers (uint8 or int16 when the values fit, else int32).

    Raises:
        InputError: the suffix is not ``.nii`` or ``.nii.gz``.
    """
    import nibabel as nib

    _, suffix = split_suffix(path)
    if suffix.lower() not in (".nii", ".nii.gz"):
        raise InputError(f"{path}: output must end in .nii or .nii.gz, got {suffix or '(none)'!r}")
    data = np.asarray(data)
    if is_label:  # the smallest of uint8, int16, int32 that holds every value
        low, high = (int(data.min()), int(data.max())) if data.size else (0, 0)
        for dtype in (np.uint8, np.int16, np.int32):
            if np.iinfo(dtype).min <= low and high <= np.iinfo(dtype).max:
                break
        data = data.astype(dtype)
    elif data.dtype == np.float64 or data.dtype == bool:
        data = data.astype(np.float32)
    img = nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64))
    img.set_sform(img.affine, code=1)
    img.set_qform(img.affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    if intent is not None:
        img.header.set_intent(intent)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))


def save(image: Image, path: PathLike) -> None:
    """Write an :class:`Image` as NIfTI with its own affine (labels as integers)."""
    save_nifti(image.data, image.affine, path, is_label=image.is_label)
