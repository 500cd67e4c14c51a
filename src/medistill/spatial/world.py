"""Displacements in physical units (mm) and on other grids, and export for ANTs/ITK.

Frames: a *voxel* displacement ``d`` (``(B, ndim, *S)``, channel ``k`` along array axis ``k``
of the NIfTI grid) becomes a *world* displacement ``A_lin d`` in mm, where ``A`` is the 4x4
voxel-to-world affine (RAS+ for NIfTI, see :class:`medistill.io.image.Image`) and ``A_lin`` its
linear block (upper-left ``ndim x ndim``; in 2-D the block acting on ``(i, j)``). ITK and ANTs
work in LPS+: the first two world components change sign (:func:`ras_to_lps`).
"""

from __future__ import annotations

from collections.abc import Sequence

import nibabel as nib
import numpy as np
import torch
from torch import Tensor

from medistill.errors import InputError
from medistill.io.geometry import separable_weights
from medistill.kernels import contract_axes, grid_sample
from medistill.spatial._checks import check_field
from medistill.spatial.grid import affine_sampling_grid

__all__ = [
    "disp_voxel_to_world",
    "disp_world_to_voxel",
    "itk_displacement_nifti",
    "lps_to_ras",
    "ras_to_lps",
    "resample_disp_between_grids",
]

NIFTI_INTENT_VECTOR = 1007


def _homogeneous(fn: str, name: str, affine: np.ndarray | Tensor, nd: int) -> np.ndarray:
    """The ``(nd + 1, nd + 1)`` float64 voxel-to-world matrix from a 4x4 (or 3x3 in 2-D) one."""
    mat = affine.detach().cpu().numpy() if isinstance(affine, Tensor) else np.asarray(affine)
    mat = mat.astype(np.float64)
    if mat.shape == (4, 4) and nd == 2:
        mat = mat[np.ix_([0, 1, 3], [0, 1, 3])]
    if mat.shape != (nd + 1, nd + 1):
        raise InputError(
            f"{fn}(): '{name}' must be a 4x4 affine (or 3x3 in 2-D), got shape {mat.shape}"
        )
    lin = mat[:nd, :nd]
    if not np.all(np.isfinite(mat)) or abs(np.linalg.det(lin)) < 1e-12:
        raise InputError(f"{fn}(): '{name}' is singular or not finite")
    return mat


def _apply_linear(matrix: np.ndarray, field: Tensor) -> Tensor:
    """``out[:, i] = sum_j matrix[i, j] * field[:, j]`` for a ``(B, n, *S)`` field."""
    mat = torch.as_tensor(matrix, dtype=field.dtype, device=field.device)
    return torch.einsum("ij,bj...->bi...", mat, field)


def disp_voxel_to_world(disp: Tensor, affine: np.ndarray | Tensor) -> Tensor:
    """Convert a voxel displacement into mm in the affine's world frame: ``d_mm = A_lin d_vox``.

    Args:
        disp: ``(B, ndim, *S)`` displacement in voxels (channel ``k`` along array axis ``k``).
        affine: ``(4, 4)`` voxel-to-world affine in mm (RAS for NIfTI); in 2-D its block acting
            on ``(i, j)`` is used (a ``(3, 3)`` 2-D affine is also accepted).

    Returns:
        ``(B, ndim, *S)`` displacement in mm, world components (``x, y[, z]``).

    Raises:
        InputError: on a wrong shape or a singular affine.
    """
    check_field("disp_voxel_to_world", "disp", disp)
    nd = disp.dim() - 2
    mat = _homogeneous("disp_voxel_to_world", "affine", affine, nd)
    return _apply_linear(mat[:nd, :nd], disp)


def disp_world_to_voxel(disp_mm: Tensor, affine: np.ndarray | Tensor) -> Tensor:
    """Inverse of :func:`disp_voxel_to_world`: ``d_vox = A_lin^-1 d_mm``.

    Args:
        disp_mm: ``(B, ndim, *S)`` displacement in mm in the affine's world frame.
        affine: ``(4, 4)`` voxel-to-world affine (see :func:`disp_voxel_to_world`).

    Returns:
        ``(B, ndim, *S)`` displacement in voxels.

    Raises:
        InputError: on a wrong shape or a singular affine.
    """
    check_field("disp_world_to_voxel", "disp_mm", disp_mm)
    nd = disp_mm.dim() - 2
    mat = _homogeneous("disp_world_to_voxel", "affine", affine, nd)
    return _apply_linear(np.linalg.inv(mat[:nd, :nd]), disp_mm)


def _flip_xy(fn: str, disp: Tensor | np.ndarray, dim: int) -> Tensor | np.ndarray:
    n = disp.shape[dim]
    if n not in (2, 3):
        raise InputError(f"{fn}(): axis {dim} must hold 2 or 3 components, got {disp.shape}")
    sign = [-1.0, -1.0, 1.0][:n]
    view = [1] * disp.ndim
    view[dim] = n
    if isinstance(disp, Tensor):
        return disp * torch.tensor(sign, dtype=disp.dtype, device=disp.device).view(view)
    return np.asarray(disp) * np.asarray(sign).reshape(view)


def ras_to_lps(disp_mm: Tensor | np.ndarray, dim: int = 1) -> Tensor | np.ndarray:
    """World displacement from RAS+ (NIfTI) to LPS+ (ITK/DICOM): negate components 0 and 1.

    Args:
        disp_mm: displacement in mm with its components along axis ``dim`` (2 or 3 of them),
            e.g. ``(B, 3, *S)``; a tensor or a numpy array.
        dim: the component axis (default 1).

    Returns:
        Same shape and type, components 0 and 1 negated.
    """
    return _flip_xy("ras_to_lps", disp_mm, dim)


def lps_to_ras(disp_mm: Tensor | np.ndarray, dim: int = 1) -> Tensor | np.ndarray:
    """World displacement from LPS+ to RAS+ (the same sign flip as :func:`ras_to_lps`)."""
    return _flip_xy("lps_to_ras", disp_mm, dim)


def resample_disp_between_grids(
    disp: Tensor,
    src_affine: np.ndarray | Tensor,
    dst_affine: np.ndarray | Tensor,
    dst_shape: Sequence[int],
) -> Tensor:
    """Express a voxel displacement defined on one grid on another grid.

    ``disp`` lives on the source grid: the world point ``p`` of source voxel ``s`` maps to
    ``p + A_src_lin disp(s)``. For each destination voxel ``y``: ``p = A_dst y``,
    ``s = A_src^-1 p``, ``d_mm = A_src_lin disp(s)`` (linear interpolation, border padding) and
    the result is ``A_dst_lin^-1 d_mm``, so destination voxel ``y`` maps to the same world
    point as before. Use it to move a field between orientations (RAS vs LIA), resolutions or
    crops of the same physical space.

    Args:
        disp: ``(B, ndim, *S_src)`` displacement in source voxels.
        src_affine: ``(4, 4)`` voxel-to-world affine of the source grid (mm).
        dst_affine: ``(4, 4)`` voxel-to-world affine of the destination grid (mm, same world
            frame).
        dst_shape: destination spatial size, ``ndim`` entries.

    Returns:
        ``(B, ndim, *dst_shape)`` displacement in destination voxels (dtype/device of ``disp``).

    Raises:
        InputError: on wrong shapes or singular affines.
    """
    fn = "resample_disp_between_grids"
    check_field(fn, "disp", disp)
    nd = disp.dim() - 2
    if len(dst_shape) != nd:
        raise InputError(f"{fn}(): 'dst_shape' must have {nd} entries, got {tuple(dst_shape)}")
    src = _homogeneous(fn, "src_affine", src_affine, nd)
    dst = _homogeneous(fn, "dst_affine", dst_affine, nd)
    dst_to_src = np.linalg.solve(src, dst)  # A_src^-1 A_dst, voxel y -> source voxel s
    separable = separable_weights(
        dst_to_src[:nd], tuple(int(s) for s in dst_shape), tuple(disp.shape[2:]), padding="border"
    )
    if separable is not None:  # no obliquity between the grids: exact, 1.7x faster at 64^3
        perm, weights = separable[:2]
        mats = [torch.as_tensor(w, device=disp.device).to(disp.dtype) for w in weights]
        sampled = contract_axes(disp, perm, mats)
    else:
        grid = affine_sampling_grid(
            dst_to_src, dst_shape, disp.shape[2:], dtype=disp.dtype, device=disp.device
        )
        sampled = grid_sample(
            disp,
            grid.expand(disp.shape[0], *grid.shape[1:]),
            mode="bilinear",
            padding_mode="border",
        )
    return _apply_linear(np.linalg.solve(dst[:nd, :nd], src[:nd, :nd]), sampled)


def itk_displacement_nifti(
    disp_vox: np.ndarray | Tensor, affine: np.ndarray | Tensor
) -> nib.Nifti1Image:
    """A NIfTI image that ANTs/ITK read as a displacement-field transform.

    Layout (ITK's NIfTI vector-image convention): data shape ``(X, Y, Z, 1, 3)`` (``dim[4] = 1``
    time point, ``dim[5]`` = vector components; 2-D: ``(X, Y, 1, 1, 2)``), float32, intent
    ``NIFTI_INTENT_VECTOR`` (1007), the image's affine in the sform and qform (code 1), and the
    vectors in mm in ITK's **LPS+** physical frame: ``d_lps = diag(-1, -1, 1) A_lin d_vox``. ITK
    stores vector components unchanged for intent 1007 (it converts RAS->LPS only for
    ``NIFTI_INTENT_DISPVECT``, 1006, from ITK 5.4), so the LPS sign flip is done here.
    Sources: ITK pull request #3884 and Slicer pull request #6799 (NIfTI displacement vector
    handling, 2023); nitransforms ``io/itk.py`` (``ITKDisplacementsField.to_image``, which
    writes the same layout).

    Meaning: the field is an ITK (resampling) transform ``T(p) = p + d(p)`` from the fixed grid
    (the one ``disp_vox`` and ``affine`` describe) to the moving image, matching the backward
    warp ``warped(x) = moving(x + u(x))`` for a moving image on the same grid; pass it to
    ``antsApplyTransforms -t`` to warp the moving image onto the fixed one. ITK keeps only the
    rotation and spacing of the affine (no shear).

    Args:
        disp_vox: ``(3, X, Y, Z)`` (or ``(2, X, Y)``; a leading batch of 1 is allowed)
            displacement in voxels, numpy array or tensor.
        affine: ``(4, 4)`` voxel-to-world affine (RAS+, mm) of the grid.

    Returns:
        :class:`nibabel.Nifti1Image` ready for ``nibabel.save``.

    Raises:
        InputError: on a wrong shape or a singular affine.
    """
    fn = "itk_displacement_nifti"
    if isinstance(disp_vox, Tensor):
        data = disp_vox.detach().cpu().numpy()
    else:
        data = np.asarray(disp_vox)
    data = data.astype(np.float64)
    if data.ndim in (4, 5) and data.shape[0] == 1 and data.shape[1] == data.ndim - 2:
        data = data[0]
    nd = data.ndim - 1
    if nd not in (2, 3) or data.shape[0] != nd:
        raise InputError(
            f"{fn}(): 'disp_vox' must be (3, X, Y, Z) or (2, X, Y), got shape {data.shape}"
        )
    mat = _homogeneous(fn, "affine", affine, nd)
    d_mm = np.tensordot(mat[:nd, :nd], data, axes=([1], [0]))
    d_lps = np.asarray(ras_to_lps(d_mm, dim=0))
    vectors = np.moveaxis(d_lps, 0, -1)
    spatial = data.shape[1:] + (1,) * (3 - nd)
    vectors = vectors.reshape(*spatial, 1, nd).astype(np.float32)
    full = np.asarray(
        affine.detach().cpu().numpy() if isinstance(affine, Tensor) else affine, dtype=np.float64
    )
    if full.shape != (4, 4):  # a 3x3 2-D affine: embed it with a unit third axis
        full = np.eye(4)
        full[np.ix_([0, 1, 3], [0, 1, 3])] = mat
    img = nib.Nifti1Image(vectors, full)
    img.header.set_intent(NIFTI_INTENT_VECTOR)
    img.set_qform(full, code=1)
    img.set_sform(full, code=1)
    img.header.set_xyzt_units(xyz="mm")
    return img
