"""TRE from landmarks in voxel or world coordinates, against a known translation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medistill.io import Image, save
from medistill.registration.evaluate import evaluate_pairs
from medistill.spatial.native import register_images

SHIFT_MM = np.array([6.0, -4.0, 3.0])


def _zero_field(fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
    return torch.zeros(fixed.shape[0], 3, *fixed.shape[2:])


def identity_registrar(fixed, moving, *, moving_labels=None, fixed_labels=None, initial="com"):
    """Registers nothing: the world-space identity, so the TRE is the landmarks' offset."""
    return register_images(
        _zero_field, fixed, moving, shape=(16, 16, 16), moving_labels=moving_labels, initial="none"
    )


@pytest.mark.parametrize("space", ["voxel", "world"])
def test_tre_equals_a_known_world_translation(tmp_path, space, blob_image):
    """The moving image is the fixed one with its header translated by SHIFT_MM; the same
    anatomical points (same voxel indices) are SHIFT_MM apart in world space, so with the identity
    registration the TRE must be |SHIFT_MM| exactly, given as voxel indices or as world mm."""
    labels = Image((blob_image.data > 0.3).astype(np.int32), blob_image.affine, is_label=True)
    moved = blob_image.affine.copy()
    moved[:3, 3] += SHIFT_MM
    save(blob_image, tmp_path / "fixed.nii.gz")
    save(labels, tmp_path / "fixed_seg.nii.gz")
    save(Image(blob_image.data, moved), tmp_path / "moving.nii.gz")
    save(Image(labels.data, moved, is_label=True), tmp_path / "moving_seg.nii.gz")
    index = np.array([[5.0, 6.0, 4.0], [12.0, 15.0, 9.0], [3.5, 20.0, 11.0]])
    if space == "voxel":
        fixed_pts, moving_pts, column = index, index, "landmarks"
    else:
        fixed_pts = blob_image.index_to_world(index)
        moving_pts, column = fixed_pts + SHIFT_MM, "landmarks_mm"
    np.savetxt(tmp_path / "f.txt", fixed_pts)
    np.savetxt(tmp_path / "m.txt", moving_pts)
    (tmp_path / "pairs.csv").write_text(
        f"fixed,moving,fixed_labels,moving_labels,fixed_{column},moving_{column}\n"
        "fixed.nii.gz,moving.nii.gz,fixed_seg.nii.gz,moving_seg.nii.gz,f.txt,m.txt\n"
    )
    summary = evaluate_pairs(identity_registrar, tmp_path / "pairs.csv", tmp_path / "out")
    assert summary["tre_mean"] == pytest.approx(float(np.linalg.norm(SHIFT_MM)), abs=1e-4)
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["tre_mean"] > 0


def test_both_landmark_columns_in_one_row_are_refused(tmp_path, blob_image):
    from medistill.data import read_pairs_csv
    from medistill.errors import InputError

    (tmp_path / "pairs.csv").write_text(
        "fixed,moving,fixed_landmarks,fixed_landmarks_mm\na.nii.gz,b.nii.gz,f.txt,g.txt\n"
    )
    with pytest.raises(InputError, match="give one"):
        read_pairs_csv(tmp_path / "pairs.csv")
