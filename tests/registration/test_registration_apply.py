"""Applying a network on a working grid: outputs land on the fixed image's own grid, and the
world-space chain (initial translation, working grid, field conversion, ITK export) is exact."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from medistill.errors import InputError
from medistill.io import Image
from medistill.nets import Cascade
from medistill.registration.apply import register_images
from tests.utils import oblique_affine


class ZeroField(nn.Module):
    """A 'network' that predicts no deformation: only the initial alignment remains."""

    def forward(self, fixed, moving):
        return torch.zeros(fixed.shape[0], fixed.dim() - 2, *fixed.shape[2:], dtype=fixed.dtype)


class ConstantField(nn.Module):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, fixed, moving):
        out = torch.zeros(fixed.shape[0], fixed.dim() - 2, *fixed.shape[2:], dtype=fixed.dtype)
        out[:, 0] = self.value
        return out


def _blob(shape=(30, 34, 26)):
    idx = np.indices(shape).astype(float)
    centre = np.array([13.0, 17.0, 11.0]).reshape(3, 1, 1, 1)
    return np.exp(-(((idx - centre) / 4.0) ** 2).sum(0)).astype(np.float32)


def test_world_translation_recovered_on_fixed_grid(tmp_path):
    affine = oblique_affine(spacing=(1.5, 1.0, 2.0), angle=0.25)
    fixed = Image(_blob(), affine, source="fixed")
    moved_affine = affine.copy()
    moved_affine[:3, 3] += [10.0, -4.0, 6.0]  # same voxels, shifted in the world (mm, RAS)
    labels = (fixed.data > 0.5).astype(np.int32)
    moving = Image(fixed.data.copy(), moved_affine, source="moving")
    moving_labels = Image(labels, moved_affine, is_label=True)
    reg = register_images(
        Cascade([ZeroField()]), fixed, moving, shape=(32, 32, 32), moving_labels=moving_labels
    )
    np.testing.assert_allclose(reg.translation_mm, [10.0, -4.0, 6.0], atol=1e-6)
    # fixed voxel y corresponds to the same voxel index in the moving image
    np.testing.assert_allclose(reg.warped.data, fixed.data, atol=1e-4)
    np.testing.assert_array_equal(reg.warped_labels.data, labels)
    np.testing.assert_array_equal(reg.warped.affine, affine)
    np.testing.assert_allclose(reg.jacobian, 1.0, atol=1e-6)
    files = reg.save(tmp_path)
    assert [f.name for f in files] == [
        "warped.nii.gz",
        "warped_labels.nii.gz",
        "disp_voxel.nii.gz",
        "disp_mm.nii.gz",
        "jacobian.nii.gz",
    ]
    disp_mm = nib.load(tmp_path / "disp_mm.nii.gz")
    assert disp_mm.shape == (30, 34, 26, 1, 3)
    np.testing.assert_allclose(disp_mm.affine, affine, atol=1e-5)
    # ITK/ANTs convention: LPS millimetres
    np.testing.assert_allclose(
        np.asarray(disp_mm.dataobj)[5, 6, 7, 0], [-10.0, 4.0, 6.0], atol=1e-4
    )
    vox = np.asarray(nib.load(tmp_path / "disp_voxel.nii.gz").dataobj)[5, 6, 7, 0]
    np.testing.assert_allclose(affine[:3, :3] @ vox, [10.0, -4.0, 6.0], atol=1e-4)


def test_network_field_is_converted_through_world_space():
    fixed = Image(_blob(), np.diag([2.0, 1.0, 1.0, 1.0]), source="fixed")
    moving = Image(fixed.data.copy(), fixed.affine.copy(), source="moving")
    shape = (32, 32, 32)
    reg = register_images(Cascade([ConstantField(1.0)]), fixed, moving, shape=shape, initial="none")
    # one working voxel along axis 0 = the working spacing in mm along world x
    from medistill.io import WorkingGrid

    spacing = WorkingGrid.around(fixed, shape).spacing
    np.testing.assert_allclose(reg.disp_voxel[0], spacing / 2.0, atol=1e-5)
    np.testing.assert_allclose(reg.disp_voxel[1:], 0.0, atol=1e-6)
    points = reg.moving_points(np.array([[10.0, 10.0, 10.0]]))
    np.testing.assert_allclose(points[0], [20.0 + spacing, 10.0, 10.0], atol=1e-5)


def test_dimensionality_mismatch_is_input_error():
    fixed = Image(np.random.rand(20, 20).astype(np.float32))
    with pytest.raises(InputError, match="2-D but the model registers 3-D"):
        register_images(Cascade([ZeroField()]), fixed, fixed, shape=(32, 32, 32))
