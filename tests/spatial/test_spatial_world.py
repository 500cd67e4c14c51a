"""Tests of medistill.spatial.world: mm conversion, grid changes and the ITK/ANTs export."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

from medistill.errors import InputError
from medistill.spatial import (
    disp_voxel_to_world,
    disp_world_to_voxel,
    identity_grid,
    itk_displacement_nifti,
    lps_to_ras,
    random_smooth_disp,
    ras_to_lps,
    resample_disp_between_grids,
)


def rotation(angles):
    a, b, c = np.deg2rad(angles)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


def oblique_affine():
    """Oblique, anisotropic RAS affine (rotation x spacing, no shear)."""
    aff = np.eye(4)
    aff[:3, :3] = rotation((10, -20, 30)) @ np.diag([0.8, 1.2, 2.5])
    aff[:3, 3] = [10.0, -5.0, 3.0]
    return aff


def world_points(affine, vox):
    """(3, *S) voxel coordinates -> (3, *S) world coordinates."""
    return np.tensordot(affine[:3, :3], vox, axes=([1], [0])) + affine[:3, 3].reshape(
        3, *([1] * (vox.ndim - 1))
    )


def test_voxel_world_round_trip_and_values(gen, device):
    aff = oblique_affine()
    disp = torch.randn(2, 3, 4, 5, 6, generator=gen, dtype=torch.float64).to(device)
    mm = disp_voxel_to_world(disp, aff)
    assert mm.device.type == device.type
    ref = np.einsum("ij,bj...->bi...", aff[:3, :3], disp.cpu().numpy())
    np.testing.assert_allclose(mm.cpu().numpy(), ref, atol=1e-12)
    # p + d_mm is the world position of the displaced voxel
    y = np.array([1.0, 2.0, 3.0])
    d = disp[0, :, 1, 2, 3].cpu().numpy()
    np.testing.assert_allclose(
        aff[:3, :3] @ y + aff[:3, 3] + mm[0, :, 1, 2, 3].cpu().numpy(),
        aff[:3, :3] @ (y + d) + aff[:3, 3],
    )
    back = disp_world_to_voxel(mm, torch.as_tensor(aff))
    assert torch.allclose(back, disp, atol=1e-12)
    # 2-D uses the block acting on (i, j)
    d2 = torch.randn(1, 2, 4, 5, generator=gen, dtype=torch.float64)
    mm2 = disp_voxel_to_world(d2, aff)
    np.testing.assert_allclose(
        mm2[0, :, 1, 1].numpy(), aff[:2, :2] @ d2[0, :, 1, 1].numpy(), atol=1e-12
    )


def test_lps_flip():
    disp = torch.arange(1.0, 4.0).view(1, 3, 1, 1, 1)
    assert torch.equal(ras_to_lps(disp).flatten(), torch.tensor([-1.0, -2.0, 3.0]))
    assert torch.equal(lps_to_ras(ras_to_lps(disp)), disp)
    last = np.array([[1.0, 2.0, 3.0]])
    np.testing.assert_array_equal(ras_to_lps(last, dim=-1), [[-1.0, -2.0, 3.0]])
    assert torch.equal(ras_to_lps(torch.ones(1, 2, 3, 3)), -torch.ones(1, 2, 3, 3))


def test_resample_between_ras_and_lia_grids(gen):
    # the same physical grid stored RAS and LIA: every destination voxel must map to the same
    # world point as its source voxel (source voxels are integers: exact interpolation)
    shape = (6, 7, 8)
    src_aff = np.diag([1.5, 1.0, 2.0, 1.0])
    src_aff[:3, 3] = [-4.0, 2.0, 7.0]
    ornt = ornt_transform(axcodes2ornt("RAS"), axcodes2ornt("LIA"))
    dst_aff = src_aff @ inv_ornt_aff(ornt, shape)
    dst_shape = apply_orientation(np.zeros(shape), ornt).shape
    assert "".join(nib.aff2axcodes(dst_aff)) == "LIA" and dst_shape == (6, 8, 7)
    disp = random_smooth_disp(shape, batch=2, max_disp=3.0, generator=gen, dtype=torch.float64)
    out = resample_disp_between_grids(disp, src_aff, dst_aff, dst_shape)
    assert out.shape == (2, 3, *dst_shape)
    y = identity_grid(dst_shape, dtype=torch.float64).numpy()
    p = world_points(dst_aff, y)
    s = np.rint(world_points(np.linalg.inv(src_aff), p)).astype(int)
    for b in range(2):
        d_src = disp[b].numpy()[(slice(None), *s)]
        target_src = world_points(src_aff, s + d_src)
        target_dst = world_points(dst_aff, y + out[b].numpy())
        np.testing.assert_allclose(target_dst, target_src, atol=1e-10)
    # and it is the reoriented array with transformed vector components
    vec = apply_orientation(np.moveaxis(disp[0].numpy(), 0, -1), ornt)
    lin = np.linalg.solve(dst_aff[:3, :3], src_aff[:3, :3])
    np.testing.assert_allclose(out[0].numpy(), np.einsum("ij,...j->i...", lin, vec), atol=1e-10)


def test_resample_linear_field_onto_an_oblique_finer_grid(gen):
    # a linear voxel field is a world affine map; on another grid (rotated, finer, offset)
    # interpolation is exact, so world targets must agree where the dst grid is inside the src
    shape = (12, 12, 12)
    src_aff = oblique_affine()
    dst_aff = src_aff.copy()
    dst_aff[:3, :3] = src_aff[:3, :3] @ rotation((0, 0, 15)) @ np.diag([0.6, 0.7, 0.8])
    dst_aff[:3, 3] = world_points(src_aff, np.array([5.5, 5.5, 5.5]))  # dst voxel 0 at src centre
    dst_shape = (4, 5, 6)
    w = 0.05 * torch.randn(3, 3, generator=gen, dtype=torch.float64)
    grid = identity_grid(shape, dtype=torch.float64)
    disp = (torch.einsum("ij,j...->i...", w, grid) + 0.5)[None]
    out = resample_disp_between_grids(disp, torch.as_tensor(src_aff), dst_aff, dst_shape)
    y = identity_grid(dst_shape, dtype=torch.float64).numpy()
    s = world_points(np.linalg.solve(src_aff, dst_aff), y)
    assert (s > 0).all() and (s < 11).all()
    d_src = np.einsum("ij,j...->i...", w.numpy(), s) + 0.5
    np.testing.assert_allclose(
        world_points(dst_aff, y + out[0].numpy()), world_points(src_aff, s + d_src), atol=1e-9
    )


def test_itk_displacement_nifti_header_and_sign():
    aff = np.diag([2.0, 3.0, 4.0, 1.0])
    disp = np.zeros((3, 4, 5, 6))
    disp[0] = 1.0  # +1 voxel along i = +2 mm towards R = -2 mm in LPS
    disp[2] = -0.5  # -0.5 voxel along k = -2 mm towards S, unchanged in LPS
    img = itk_displacement_nifti(torch.as_tensor(disp), aff)
    assert img.shape == (4, 5, 6, 1, 3)
    assert int(img.header["intent_code"]) == 1007 and img.header.get_intent()[0] == "vector"
    assert img.get_data_dtype() == np.float32
    np.testing.assert_allclose(img.affine, aff)
    assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1
    data = np.asarray(img.dataobj)
    np.testing.assert_allclose(data[..., 0, 0], -2.0)
    np.testing.assert_allclose(data[..., 0, 1], 0.0)
    np.testing.assert_allclose(data[..., 0, 2], -2.0)
    two_d = itk_displacement_nifti(np.ones((2, 4, 5)), np.eye(4))
    assert two_d.shape == (4, 5, 1, 1, 2)
    np.testing.assert_allclose(np.asarray(two_d.dataobj), -1.0)
    with pytest.raises(InputError, match="'disp_vox'"):
        itk_displacement_nifti(np.zeros((3, 4, 5)), aff)


def test_itk_reads_it_as_the_same_transform(tmp_path, gen):
    # SimpleITK's DisplacementFieldTransform maps fixed point p (LPS) to p + d(p): it must be
    # the world position of voxel y + u(y), the backward-warp convention
    aff = oblique_affine()
    shape = (5, 6, 7)
    disp = random_smooth_disp(shape, max_disp=2.0, generator=gen, dtype=torch.float64)
    path = tmp_path / "warp.nii.gz"
    nib.save(itk_displacement_nifti(disp[0], aff), path)
    field = sitk.ReadImage(str(path))
    assert field.GetSize() == shape and field.GetNumberOfComponentsPerPixel() == 3
    transform = sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))
    lps = np.array([-1.0, -1.0, 1.0])
    for y in [(1, 2, 3), (4, 0, 6), (2, 5, 1)]:
        y_arr = np.array(y, dtype=float)
        p = (aff[:3, :3] @ y_arr + aff[:3, 3]) * lps
        np.testing.assert_allclose(field.TransformIndexToPhysicalPoint(y), p, atol=1e-4)
        target = aff[:3, :3] @ (y_arr + disp[0][(slice(None), *y)].numpy()) + aff[:3, 3]
        np.testing.assert_allclose(transform.TransformPoint(tuple(p)), target * lps, atol=1e-4)


def test_errors():
    with pytest.raises(InputError, match="'affine'"):
        disp_voxel_to_world(torch.zeros(1, 3, 2, 2, 2), np.zeros((4, 4)))
    with pytest.raises(InputError, match="'dst_shape'"):
        resample_disp_between_grids(torch.zeros(1, 3, 2, 2, 2), np.eye(4), np.eye(4), (2, 2))
