"""Readers for the image formats medistill accepts; every reader returns an :class:`Image`.

Formats: NIfTI (``.nii``, ``.nii.gz``), NRRD / MetaImage (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``),
NumPy archives (``.npz`` with ``vol`` / ``seg`` keys, VoxelMorph style), RCN-style HDF5 (one group
per scan holding ``volume``, ``segmentation``, ``point``), DICOM series (a folder),
and 2-D PNG / JPEG.

Every failure a user can cause (missing file, truncated archive, NaN voxels, wrong dimensionality)
raises :class:`medistill.errors.InputError` with one line of explanation.
"""

from __future__ import annotations

import os
import re
import zlib
from pathlib import Path

import numpy as np

from medistill.errors import InputError
from medistill.io.image import Image
from medistill.typing import PathLike

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
PIL_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
H5_SUFFIXES = (".h5", ".hdf5")
LABEL_NAME_HINT = re.compile(r"(seg|label|tissue|aseg|mask|parc)", re.IGNORECASE)
# RAS <-> LPS: negate the first two world axes.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _name(path: PathLike) -> str:
    return os.fspath(path)


def _finite(data: np.ndarray, source: str) -> None:
    if np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.complexfloating):
        bad = ~np.isfinite(data)
        if bad.any():
            raise InputError(f"{source}: {int(bad.sum())} voxels are NaN or Inf")


def _squeeze_to(data: np.ndarray, source: str, dims: int | None) -> np.ndarray:
    """Drop trailing singleton axes; check the spatial dimensionality."""
    while data.ndim > 2 and data.shape[-1] == 1 and (dims is None or data.ndim > dims):
        data = data[..., 0]
    if dims is not None and data.ndim != dims:
        raise InputError(
            f"{source}: expected a {dims}-D image, got a {data.ndim}-D array of shape "
            f"{tuple(data.shape)}"
        )
    if data.ndim not in (2, 3):
        raise InputError(
            f"{source}: expected a 2-D or 3-D scalar image, got shape {tuple(data.shape)}"
        )
    if min(data.shape) < 1:
        raise InputError(f"{source}: image is empty, shape {tuple(data.shape)}")
    return data


def _guess_label(data: np.ndarray, source: str) -> bool:
    if LABEL_NAME_HINT.search(Path(source).name):
        return _integer_valued(data)
    if np.issubdtype(data.dtype, np.integer) and data.dtype.itemsize <= 2:
        return np.unique(data).size <= 256
    return False


def _integer_valued(data: np.ndarray) -> bool:
    if np.issubdtype(data.dtype, np.integer) or data.dtype == bool:
        return True
    return bool(np.all(np.mod(data, 1) == 0))


def finalize(
    data: np.ndarray,
    affine: np.ndarray,
    source: str,
    *,
    is_label: bool | None,
    dims: int | None,
) -> Image:
    """Common checks and dtype policy: float32 intensities, int32 label maps.

    Raises:
        InputError: NaN/Inf voxels, wrong dimensionality, non-integer or empty label map.
    """
    data = np.asarray(data)
    if data.dtype.names is not None:  # RGB(A) NIfTI and other records per voxel
        raise InputError(
            f"{source}: {len(data.dtype.names)} values per voxel ({', '.join(data.dtype.names)}); "
            "expected one grey value per voxel (convert the colour image to greyscale)"
        )
    if not (np.issubdtype(data.dtype, np.number) or data.dtype == bool):
        raise InputError(f"{source}: voxels of type {data.dtype} are not numbers")
    data = _squeeze_to(data, source, dims)
    if dims == 3 and min(data.shape) < 2:
        raise InputError(
            f"{source}: a 3-D image needs at least 2 voxels along every axis, got shape "
            f"{tuple(data.shape)}"
        )
    if np.iscomplexobj(data):
        raise InputError(f"{source}: complex-valued image; expected real voxel values")
    _finite(data, source)
    if np.issubdtype(data.dtype, np.floating) and data.dtype.itemsize > 4 and data.size:
        peak = float(np.abs(data).max())
        if peak > float(np.finfo(np.float32).max):
            raise InputError(
                f"{source}: values up to {peak:.3g} exceed the float32 range medistill computes "
                "in; rescale the image"
            )
    if is_label is None:
        is_label = _guess_label(data, source)
    if is_label:
        if not _integer_valued(data):
            raise InputError(f"{source}: label map has non-integer values")
        if data.size and float(data.min()) < 0:
            raise InputError(
                f"{source}: label map has negative values (min {float(data.min()):g}); "
                "labels must be integers >= 0 (0 = background)"
            )
        if data.size and float(data.max()) > np.iinfo(np.int32).max:
            raise InputError(f"{source}: label values beyond the int32 range")
        data = data.astype(np.int32)
        if not np.any(data != 0):
            raise InputError(f"{source}: label map is empty (every voxel is background 0)")
    else:
        data = data.astype(np.float32, copy=False)
    if data.ndim == 2:
        affine = affine_2d(affine)
    return Image(data=data, affine=affine, is_label=bool(is_label), source=source)


def affine_2d(affine: np.ndarray) -> np.ndarray:
    """Keep the in-plane part of a 4x4 affine for a 2-D grid (third axis a unit normal)."""
    out = np.eye(4)
    out[:3, :2] = affine[:3, :2]
    out[:3, 3] = affine[:3, 3]
    normal = np.cross(out[:3, 0], out[:3, 1])
    norm = np.linalg.norm(normal)
    out[:3, 2] = normal / norm if norm > 0 else np.array([0.0, 0.0, 1.0])
    return out


def available_memory() -> int:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``; else physical
    free pages; else a large number, so that the check never refuses on an unknown system)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 1 << 50


def check_declared_size(shape: tuple[int, ...], dtype: np.dtype, source: str) -> None:
    """Refuse, from the header alone, an image whose voxels (as float32, as medistill holds them)
    would not fit in the available memory.

    Raises:
        InputError: the declared size and the memory available, in GiB.
    """
    voxels = int(np.prod([int(n) for n in shape], dtype=np.float64))
    need = voxels * max(np.dtype(dtype).itemsize, 4)
    free = available_memory()
    if need > free:
        dims = "x".join(str(int(n)) for n in shape)
        raise InputError(
            f"{source}: header declares {dims} voxels ({need / 2**30:.1f} GiB as float32), more "
            f"than the {free / 2**30:.1f} GiB of memory available"
        )


# ---------------------------------------------------------------------------------- formats
def read_nifti(path: Path, *, is_label: bool | None = None, dims: int | None = None) -> Image:
    """NIfTI-1/2 through nibabel; the affine is nibabel's best affine (sform, else qform)."""
    import nibabel as nib

    source = _name(path)
    try:
        img = nib.load(source)
    except (EOFError, zlib.error, OSError, ValueError) as err:
        raise InputError(f"{source}: cannot read NIfTI (truncated or corrupt file)") from err
    except nib.filebasedimages.ImageFileError as err:
        raise InputError(f"{source}: not a NIfTI file") from err
    check_declared_size(img.shape, img.get_data_dtype(), source)
    try:
        data = np.asanyarray(img.dataobj)
    except (EOFError, zlib.error, OSError, ValueError) as err:
        raise InputError(f"{source}: cannot read NIfTI (truncated or corrupt file)") from err
    return finalize(data, np.asarray(img.affine), source, is_label=is_label, dims=dims)


def sitk_to_array_affine(img: object) -> tuple[np.ndarray, np.ndarray]:
    """SimpleITK image -> (array in (x, y[, z]) index order, 4x4 RAS affine)."""
    import SimpleITK as sitk

    data = sitk.GetArrayFromImage(img)  # (z, y, x) order
    ndim = img.GetDimension()
    if img.GetNumberOfComponentsPerPixel() > 1:
        raise InputError("vector-valued image; expected one scalar per voxel")
    data = np.transpose(data, tuple(range(ndim))[::-1])
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(ndim, ndim)
    spacing = np.asarray(img.GetSpacing(), dtype=np.float64)
    origin = np.asarray(img.GetOrigin(), dtype=np.float64)
    lps = np.eye(4)
    lps[:ndim, :ndim] = direction @ np.diag(spacing)
    lps[:ndim, 3] = origin
    return data, LPS_TO_RAS @ lps


def read_itk(path: Path, *, is_label: bool | None = None, dims: int | None = None) -> Image:
    """NRRD / MetaImage through SimpleITK (LPS world converted to RAS)."""
    import SimpleITK as sitk

    source = _name(path)
    try:
        data, affine = sitk_to_array_affine(sitk.ReadImage(source))
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else "unreadable"
        raise InputError(f"{source}: cannot read image ({first})") from err
    except InputError as err:
        raise InputError(f"{source}: {err}") from err
    return finalize(data, affine, source, is_label=is_label, dims=dims)


def read_dicom_series(
    folder: Path, *, is_label: bool | None = None, dims: int | None = None
) -> Image:
    """The largest DICOM series in ``folder`` (SimpleITK / GDCM), sorted by slice position."""
    import SimpleITK as sitk

    source = _name(folder)
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(source)
    if not series:
        raise InputError(f"{source}: folder holds no DICOM series")
    files = max((reader.GetGDCMSeriesFileNames(source, s) for s in series), key=len)
    reader.SetFileNames(files)
    try:
        data, affine = sitk_to_array_affine(reader.Execute())
    except RuntimeError as err:
        raise InputError(f"{source}: cannot read DICOM series ({str(err).strip()[:200]})") from err
    return finalize(data, affine, source, is_label=is_label, dims=dims)


def read_pil(path: Path, *, is_label: bool | None = None, dims: int | None = None) -> Image:
    """A 2-D PNG/JPEG/TIFF as a grey-level image (colour is converted to luminance).

    Array axis 0 is the image row, axis 1 the column; the affine is the identity (1 mm pixels).
    """
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    source = _name(path)
    try:
        with PILImage.open(source) as pil:
            if pil.mode not in ("L", "I", "I;16", "F"):
                pil = pil.convert("L")
            data = np.asarray(pil)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise InputError(f"{source}: cannot read 2-D image ({err})") from err
    return finalize(data, np.eye(4), source, is_label=is_label, dims=dims)


def read_npz(
    path: Path, *, key: str | None = None, is_label: bool | None = None, dims: int | None = None
) -> Image:
    """A NumPy archive with ``vol`` (image) and/or ``seg`` (labels), VoxelMorph style.

    An optional ``affine`` array (4x4) in the archive is used; otherwise the identity (1 mm voxels).
    """
    source = _name(path)
    try:
        with np.load(source, allow_pickle=False) as archive:
            keys = list(archive.keys())
            chosen = key or next((k for k in ("vol", "image", "img") if k in keys), None)
            if chosen is None and len(keys) == 1:
                chosen = keys[0]
            if chosen not in keys:
                raise InputError(
                    f"{source}: no array {chosen or 'vol'!r} in the archive (has {', '.join(keys)})"
                )
            data = archive[chosen]
            affine = archive["affine"] if "affine" in keys else np.eye(4)
    except (OSError, ValueError, zlib.error, EOFError) as err:
        raise InputError(f"{source}: cannot read NPZ archive ({err})") from err
    if is_label is None and chosen in ("seg", "label", "labels"):
        is_label = True
    return finalize(data, affine, f"{source}[{chosen}]", is_label=is_label, dims=dims)


def list_h5_scans(path: PathLike) -> list[str]:
    """Names of the scan groups in an RCN-style HDF5 file (groups holding ``volume``)."""
    import h5py

    source = _name(path)
    try:
        with h5py.File(source, "r") as f:
            return sorted(k for k in f.keys() if isinstance(f[k], h5py.Group) and "volume" in f[k])
    except OSError as err:
        raise InputError(f"{source}: cannot read HDF5 file ({err})") from err


def read_h5_scan(
    path: PathLike, group: str, *, dims: int | None = None
) -> tuple[Image, Image | None, np.ndarray | None]:
    """One scan of an RCN-style HDF5 file: ``(volume, segmentation or None, points or None)``.

    ``volume`` (RCN stores 0..255) is returned as float32 unchanged; ``point`` is an (N, 3) array of
    voxel landmarks where rows of -1 mean missing. The affine is the identity (RCN stores none).
    """
    import h5py

    source = _name(path)
    try:
        with h5py.File(source, "r") as f:
            if group not in f or "volume" not in f[group]:
                raise InputError(f"{source}: no scan group {group!r} holding 'volume'")
            g = f[group]
            vol = np.asarray(g["volume"])
            seg = np.asarray(g["segmentation"]) if "segmentation" in g else None
            pts = np.asarray(g["point"], dtype=np.float64) if "point" in g else None
    except OSError as err:
        raise InputError(f"{source}: cannot read HDF5 file ({err})") from err
    image = finalize(vol, np.eye(4), f"{source}[{group}]", is_label=False, dims=dims)
    labels = None
    if seg is not None and np.any(seg != 0):
        labels = finalize(
            seg, np.eye(4), f"{source}[{group}/segmentation]", is_label=True, dims=dims
        )
    return image, labels, pts


def load(
    path: PathLike,
    *,
    is_label: bool | None = None,
    key: str | None = None,
    dims: int | None = None,
) -> Image:
    """Read an image of any supported format.

    Args:
        path: file, or folder holding a DICOM series. HDF5 needs ``key`` = ``"scan"`` (the volume)
            or ``"scan/segmentation"``; NPZ takes ``key`` ``"vol"`` (default) or ``"seg"``.
        is_label: force label map (True) or intensity image (False); None guesses from the
            file name (``seg``, ``label``, ``tissue``, ...) and the dtype.
        key: array or group inside a container file.
        dims: required spatial dimensionality (2 or 3), checked after dropping trailing singleton
            axes.

    Returns:
        The :class:`Image` (float32 intensities or int32 labels) with its RAS affine in mm.

    Raises:
        InputError: missing or unreadable file, unsupported format, NaN/Inf voxels, wrong
            dimensionality, empty or non-integer label map.
    """
    p = Path(path)
    source = _name(p)
    if not p.exists():
        raise InputError(f"{source}: no such file or folder")
    if p.is_dir():
        return read_dicom_series(p, is_label=is_label, dims=dims)
    suffix = _suffix(p)
    if suffix in NIFTI_SUFFIXES:
        return read_nifti(p, is_label=is_label, dims=dims)
    if suffix in ITK_SUFFIXES:
        return read_itk(p, is_label=is_label, dims=dims)
    if suffix in PIL_SUFFIXES:
        return read_pil(p, is_label=is_label, dims=dims)
    if suffix == ".npz":
        return read_npz(p, key=key, is_label=is_label, dims=dims)
    if suffix == ".dcm":
        return read_dicom_series(p.parent, is_label=is_label, dims=dims)
    if suffix in H5_SUFFIXES:
        scans = list_h5_scans(p)
        if key is None:
            if not scans:
                raise InputError(f"{source}: no scan groups holding 'volume'")
            key = scans[0]
        group, _, member = key.partition("/")
        image, labels, _ = read_h5_scan(p, group, dims=dims)
        if member in ("segmentation", "seg"):
            if labels is None:
                raise InputError(f"{source}[{group}]: scan has no (non-empty) segmentation")
            return labels
        return image
    raise InputError(
        f"{source}: unsupported file type {suffix or '(none)'!r}; expected one of "
        ".nii, .nii.gz, .nrrd, .mha, .mhd, .npz, .h5, .png, .jpg or a DICOM folder"
    )
