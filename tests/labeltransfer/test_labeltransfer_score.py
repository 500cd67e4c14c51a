"""score_transfers: any transfer function (network, optimiser) scored against the images' label
maps; known overlaps give known Dice and HD95, folding comes from the Jacobian handed back."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medistill.io import Image, save
from medistill.labeltransfer.evaluate import score_transfers


def test_known_shift_gives_known_dice_and_folding(tmp_path):
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    labels = np.zeros((20, 20, 20), np.int32)
    labels[4:14, 5:15, 5:15] = 1  # a 10-voxel box
    labels[15:19, 2:6, 2:6] = 2
    save(Image(labels.astype(np.float32), affine), tmp_path / "img.nii.gz")
    save(Image(labels, affine, True), tmp_path / "img_seg.nii.gz")
    (tmp_path / "images.csv").write_text("image,labels\nimg.nii.gz,img_seg.nii.gz\n")
    atlas_labels = Image(labels, affine, True)

    def shifted(image):
        out = np.zeros_like(labels)
        out[6:16, 5:15, 5:15] = 1  # label 1 shifted by 2 voxels: overlap 8 of 10
        jac = np.ones(image.shape, np.float32)
        jac[0, 0, :10] = -1.0  # 10 folded voxels of 8000
        return Image(out, image.affine, True), jac, 0.25

    summary = score_transfers(shifted, atlas_labels, tmp_path / "images.csv", tmp_path / "ev",
                              ndim=3, meta={"method": "test"})  # fmt: skip
    assert summary["method"] == "test" and summary["images"] == 1 and summary["labels"] == [1, 2]
    assert summary["dice_per_label"]["1"] == pytest.approx(0.8)
    assert summary["dice_per_label"]["2"] == pytest.approx(0.0)
    assert summary["dice_mean"] == pytest.approx(0.4)
    assert summary["folding_pct"] == pytest.approx(100 * 10 / 8000)
    # 2-voxel shift at 2 mm: HD95 4 mm; label 2 is missing from the prediction (infinite HD95)
    # and does not enter the mean
    assert summary["hd95_mean"] == pytest.approx(4.0)
    assert summary["seconds_per_image"] == pytest.approx(0.25)
    assert json.loads((tmp_path / "ev" / "summary.json").read_text())["dice_mean"] == 0.4
