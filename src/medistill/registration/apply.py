"""Applying a trained registration network to images on their own grids.

The pipeline: intensities to [0, 1] (percentile clip), a working grid around the FIXED image's
content, an initial translation that matches the intensity centres of mass (so scans that are not
aligned in world space start close), the network on the working grid, and the composed
transform brought back to the fixed image's original grid through world space:

    D(p) = t + A_w[:3,:3] u_w(A_w^-1 p)        (world displacement in mm, RAS, at fixed point p)

where ``u_w`` is the network's field in working-grid voxels and ``t`` the initial translation.
The fixed point ``p`` corresponds to the moving point ``p + D(p)``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from medistill.errors import InputError
from medistill.io import Image, WorkingGrid, normalize_percentile, resample_array, save, save_nifti
from medistill.nets import Cascade
from medistill.spatial import (
    itk_displacement_nifti,
    jacobian_det,
    resample,
    resample_disp_between_grids,
)
from medistill.typing import PathLike


@dataclass
class Registration:
    """A registration result on the fixed image's original grid.

    Attributes:
        fixed: the fixed image.
        disp_voxel: ``(ndim, *fixed.shape)`` displacement in fixed-grid voxel units (channel k
            along fixed array axis k): fixed voxel ``y`` corresponds to moving world point
            ``A_f (y + disp_voxel(y))``.
        warped: moving image resampled onto the fixed grid (original intensities).
        warped_labels: moving labels resampled (nearest) onto the fixed grid, or None.
        jacobian: ``(*fixed.shape)`` Jacobian determinant of the transform.
        translation_mm: initial world translation (RAS mm).
        seconds_network: time of the network forward pass.
        seconds_total: time of the whole pipeline (no file I/O).
    """

    fixed: Image
    disp_voxel: np.ndarray
    warped: Image
    warped_labels: Image | None
    jacobian: np.ndarray
    translation_mm: np.ndarray
    seconds_network: float
    seconds_total: float

    def moving_points(self, fixed_points: np.ndarray) -> np.ndarray:
        """World points (mm, RAS) in the moving image for fixed-grid voxel indices ``(N, ndim)``."""
        coords = np.asarray(fixed_points, dtype=np.float64)
        disp = np.stack(
            [
                ndimage.map_coordinates(c, coords.T, order=1, mode="nearest")
                for c in self.disp_voxel
            ],
            axis=1,
        )
        return self.fixed.index_to_world(coords + disp)

    def save(self, out: PathLike) -> list[Path]:
        """Write warped, warped_labels, disp_voxel, disp_mm and jacobian as ``.nii.gz``."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        aff = self.fixed.affine
        written = [out / "warped.nii.gz"]
        save(self.warped, written[-1])
        if self.warped_labels is not None:
            written.append(out / "warped_labels.nii.gz")
            save(self.warped_labels, written[-1])
        vox = np.moveaxis(self.disp_voxel, 0, -1)[..., None, :].astype(np.float32)
        if self.fixed.ndim == 2:
            vox = vox[:, :, None]
        written.append(out / "disp_voxel.nii.gz")
        save_nifti(vox, aff, written[-1], intent=1007)
        itk = itk_displacement_nifti(self.disp_voxel.astype(np.float32), aff)
        written.append(out / "disp_mm.nii.gz")
        save_nifti(np.asarray(itk.dataobj), aff, written[-1], intent=1007)
        written.append(out / "jacobian.nii.gz")
        save_nifti(self.jacobian.astype(np.float32), aff, written[-1])
        return written


def centre_of_mass_mm(image: Image) -> np.ndarray:
    """Intensity-weighted centre (world mm) of the voxels above 5 % of the robust range."""
    data = image.data.astype(np.float64)
    lo, hi = np.percentile(data, [1, 99])
    weights = np.clip(data - (lo + 0.05 * (hi - lo)), 0, None)
    if weights.sum() <= 0:
        weights = np.ones_like(data)
    com = np.array(ndimage.center_of_mass(weights))
    return image.index_to_world(com[None])[0]


def moving_coordinates(fixed: Image, moving: Image, disp_voxel: np.ndarray) -> np.ndarray:
    """Voxel coordinates in ``moving`` (float32, ``(ndim, *fixed.shape)``) of every fixed voxel
    ``y`` displaced by ``disp_voxel(y)`` (fixed-grid voxels), through world space."""
    ndim = fixed.ndim
    # one affine: fixed voxel -> world -> moving voxel, applied to y + u(y)
    m = np.linalg.inv(moving.affine) @ fixed.affine
    lin, off = m[:ndim, :ndim], m[:ndim, 3]
    idx = np.indices(fixed.shape, dtype=np.float32)
    idx += disp_voxel.astype(np.float32)
    out = np.tensordot(lin.astype(np.float32), idx, axes=1)
    out += off.astype(np.float32).reshape((ndim,) + (1,) * ndim)
    return out


def register_images(
    model: Cascade,
    fixed: Image,
    moving: Image,
    *,
    shape: tuple[int, ...],
    moving_labels: Image | None = None,
    initial: str = "com",
    margin: float = 0.1,
) -> Registration:
    """Register ``moving`` to ``fixed`` with ``model`` on a working grid of ``shape``.

    Args:
        model: a trained :class:`~medistill.nets.Cascade` (eval mode).
        fixed, moving: images (any grids, orientations, spacings; same dimensionality as the model).
        shape: working grid the model was trained on.
        moving_labels: label map on the moving image's grid, warped (nearest) if given.
        initial: ``"com"`` matches intensity centres of mass first; ``"none"`` trusts world space.
        margin: working-grid margin around the fixed content (as in training).

    Raises:
        InputError: dimensionality of images and model differ.
    """
    ndim = len(shape)
    for name, img in (("fixed", fixed), ("moving", moving)):
        if img.ndim != ndim:
            raise InputError(
                f"{img.source}: {name} image is {img.ndim}-D "
                f"but the model registers {ndim}-D images"
            )
    t0 = time.perf_counter()
    grid = WorkingGrid.around(fixed, shape, margin=margin)
    t = np.zeros(3)
    if initial == "com":
        t = centre_of_mass_mm(moving) - centre_of_mass_mm(fixed)
        if ndim == 2:
            t[2] = 0.0
    elif initial != "none":
        raise InputError(f"initial alignment must be 'com' or 'none', got {initial!r}")
    shifted = grid.affine.copy()
    shifted[:3, 3] += t  # working voxel -> world point in the moving image
    f_work = resample_array(normalize_percentile(fixed.data), fixed.affine, grid.affine, grid.shape)
    m_work = resample_array(normalize_percentile(moving.data), moving.affine, shifted, grid.shape)
    f_t = torch.from_numpy(f_work)[None, None]
    m_t = torch.from_numpy(m_work)[None, None]
    t1 = time.perf_counter()
    with torch.inference_mode():
        disp_w = model(f_t, m_t).disp.float()
    seconds_network = time.perf_counter() - t1
    disp_f = resample_disp_between_grids(disp_w, grid.affine, fixed.affine, fixed.shape)
    disp_f = disp_f[0].numpy().astype(np.float64)
    lin = fixed.affine[:ndim, :ndim]
    t_vox = np.linalg.solve(lin, t[:ndim])
    disp_f += t_vox.reshape((ndim,) + (1,) * ndim)
    jac = jacobian_det(torch.from_numpy(disp_f.astype(np.float32))[None])[0, 0].numpy()
    coords = moving_coordinates(fixed, moving, disp_f)
    # edge voxels extend half a voxel; farther outside the moving image is background (0)
    outside = np.zeros(fixed.shape, dtype=bool)
    for axis in range(ndim):
        outside |= (coords[axis] < -0.5) | (coords[axis] > moving.shape[axis] - 0.5)
    crd = torch.from_numpy(coords)[None]
    img = torch.from_numpy(np.ascontiguousarray(moving.data, dtype=np.float32))[None, None]
    warped = resample(img, crd, mode="linear", padding="border")[0, 0].numpy()
    warped[outside] = 0
    warped_img = Image(warped, fixed.affine.copy(), False, "warped")
    warped_labels = None
    if moving_labels is not None:
        lab = torch.from_numpy(moving_labels.data.astype(np.int32))[None, None]
        lab = resample(lab, crd, mode="nearest", padding="border")[0, 0].numpy()
        lab[outside] = 0
        warped_labels = Image(lab, fixed.affine.copy(), True, "warped_labels")
    return Registration(
        fixed=fixed,
        disp_voxel=disp_f,
        warped=warped_img,
        warped_labels=warped_labels,
        jacobian=jac,
        translation_mm=t,
        seconds_network=seconds_network,
        seconds_total=time.perf_counter() - t0,
    )
