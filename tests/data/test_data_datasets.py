"""Datasets from folder / CSV / HDF5, landmarks and pairs."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from medistill.data import (
    VolumeDataset,
    all_ordered_pairs,
    discover,
    load_subject,
    read_pairs_csv,
)
from medistill.errors import InputError
from medistill.io import Image, save


def _subject(folder, name, shift=0, affine=None):
    affine = np.diag([2.0, 2.0, 2.0, 1.0]) if affine is None else affine
    data = np.zeros((20, 22, 18), np.float32)
    labels = np.zeros((20, 22, 18), np.int32)
    data[5 + shift : 14 + shift, 6:16, 4:14] = 1.0
    labels[5 + shift : 14 + shift, 6:16, 4:14] = 1
    labels[8 + shift : 11 + shift, 9:13, 7:11] = 2
    save(Image(data, affine), folder / f"{name}.nii.gz")
    save(Image(labels, affine, is_label=True), folder / f"{name}_seg.nii.gz")
    (folder / f"{name}_landmarks.txt").write_text("10 11 9\n-1 -1 -1\n")


def test_folder_discovery_pairs_images_labels_landmarks(tmp_path):
    for k in range(3):
        _subject(tmp_path, f"s{k}", shift=k)
    sources = discover(tmp_path)
    assert [s.name for s in sources] == ["s0", "s1", "s2"]
    assert all(s.labels is not None and s.landmarks is not None for s in sources)
    subject = load_subject(sources[1])
    assert subject.labels.is_label and subject.image.shape == (20, 22, 18)
    np.testing.assert_array_equal(subject.landmarks[0], [10, 11, 9])
    assert np.isnan(subject.landmarks[1]).all()


def test_volume_dataset_working_grid(tmp_path):
    _subject(tmp_path, "a")
    item = VolumeDataset(tmp_path, shape=16)[0]
    assert item["image"].shape == (1, 16, 16, 16) and item["labels"].shape == (1, 16, 16, 16)
    assert float(item["image"].max()) == pytest.approx(1.0)
    assert set(np.unique(item["labels"].numpy())) == {0, 1, 2}
    # landmark maps to the same world point: content bbox centre is the grid centre here
    assert item["landmarks"].shape == (2, 3)


def test_pairs_csv(tmp_path):
    for k in range(2):
        _subject(tmp_path, f"s{k}", shift=2 * k)
    csv = tmp_path / "pairs.csv"
    csv.write_text(
        "fixed,moving,fixed_labels,moving_labels\n"
        "s0.nii.gz,s1.nii.gz,s0_seg.nii.gz,s1_seg.nii.gz\n"
        "s1.nii.gz,s0.nii.gz,s1_seg.nii.gz,s0_seg.nii.gz\n"
    )
    sources, pairs = read_pairs_csv(csv)
    assert len(sources) == 2 and pairs == [(0, 1), (1, 0)]


def test_pairs_csv_missing_columns(tmp_path):
    csv = tmp_path / "p.csv"
    csv.write_text("fixed,moved\na,b\n")
    with pytest.raises(InputError, match="missing column.*moving"):
        read_pairs_csv(csv)


def test_landmark_outside_volume(tmp_path):
    _subject(tmp_path, "a")
    (tmp_path / "a_landmarks.txt").write_text("10 11 99\n")
    with pytest.raises(InputError, match="outside"):
        load_subject(discover(tmp_path)[0])


def test_mismatched_label_grid(tmp_path):
    _subject(tmp_path, "a")
    labels = np.zeros((20, 22, 18), np.int32)
    labels[1, 1, 1] = 1
    save(Image(labels, np.diag([1.0, 1.0, 1.0, 1.0]), is_label=True), tmp_path / "a_seg.nii.gz")
    with pytest.raises(InputError, match="grid does not match"):
        load_subject(discover(tmp_path)[0])


def test_hdf5_subjects(tmp_path):
    path = tmp_path / "rcn.h5"
    with h5py.File(path, "w") as f:
        for name in ("x", "y"):
            g = f.create_group(name)
            g["volume"] = np.random.default_rng(0).integers(0, 255, (8, 8, 8)).astype(np.uint8)
            seg = np.zeros((8, 8, 8), np.uint8)
            seg[2:4, 2:4, 2:4] = 1
            g["segmentation"] = seg
            g["point"] = np.array([[1.0, 2, 3], [-1, -1, -1]])
    sources = discover(path)
    assert [s.name for s in sources] == ["x", "y"]
    subject = load_subject(sources[0])
    assert subject.labels is not None and np.isnan(subject.landmarks[1]).all()


def test_pairing_schemes():
    assert len(all_ordered_pairs(4)) == 12 and (0, 0) not in all_ordered_pairs(4)


def test_csv_rows_with_too_few_or_too_many_fields_are_refused(tmp_path):
    import pytest

    from medistill.data.datasets import read_csv_rows
    from medistill.errors import InputError

    short = tmp_path / "short.csv"
    short.write_text("fixed,moving,fixed_labels,moving_labels\na.nii.gz,b.nii.gz\n")
    with pytest.raises(InputError, match="row 2 has 2 fields, the header has 4"):
        read_csv_rows(short, ("fixed", "moving"))
    long = tmp_path / "long.csv"
    long.write_text("fixed,moving\na.nii.gz,b.nii.gz,c.nii.gz\n")
    with pytest.raises(InputError, match="row 2 has 3 fields, the header has 2"):
        read_csv_rows(long, ("fixed", "moving"))
    empty_cells = tmp_path / "ok.csv"
    empty_cells.write_text("fixed,moving,fixed_labels\na.nii.gz,b.nii.gz,\n")
    assert read_csv_rows(empty_cells, ("fixed", "moving"))[0]["fixed_labels"] == ""
