"""Readers and writer: every format returns the right array order and RAS affine."""

from __future__ import annotations

import gzip

import h5py
import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image as PILImage

from medistill.errors import InputError
from medistill.io import Image, list_h5_scans, load, read_h5_scan, save, save_nifti
from tests.utils import oblique_affine


def test_nifti_roundtrip_keeps_data_and_affine(tmp_path, blob_image):
    path = tmp_path / "blob.nii.gz"
    save(blob_image, path)
    back = load(path)
    np.testing.assert_array_equal(back.data, blob_image.data)
    np.testing.assert_allclose(back.affine, blob_image.affine, atol=1e-5)
    assert back.orientation == blob_image.orientation
    assert not back.is_label


def test_label_roundtrip_is_integer(tmp_path):
    labels = np.zeros((6, 7, 8), np.int32)
    labels[1:3, 2:5, 3:7] = 4
    labels[4, 4, 4] = 17
    path = tmp_path / "x_seg.nii.gz"
    save(Image(labels, oblique_affine(), is_label=True), path)
    back = load(path)
    assert back.is_label and back.data.dtype == np.int32
    np.testing.assert_array_equal(back.data, labels)
    np.testing.assert_array_equal(back.labels(), [4, 17])


@pytest.mark.parametrize(
    ("values", "stored"),
    [((0, 255), np.uint8), ((0, 256), np.int16), ((3, 2035), np.int16), ((0, 40000), np.int32)],
)  # fmt: skip
def test_labels_are_stored_in_the_smallest_integer_type_that_holds_them(tmp_path, values, stored):
    import nibabel as nib

    labels = np.zeros((4, 5, 6), np.int32)
    labels[0, 0, 0], labels[1, 2, 3] = values
    path = tmp_path / "x_seg.nii.gz"
    save(Image(labels, oblique_affine(), is_label=True), path)
    assert nib.load(path).get_data_dtype() == stored
    np.testing.assert_array_equal(load(path).data, labels)


def test_save_is_atomic_and_keeps_old_file_on_failure(tmp_path, blob_image, monkeypatch):
    path = tmp_path / "keep.nii.gz"
    save(blob_image, path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(nib, "save", boom)
    with pytest.raises(RuntimeError):
        save(blob_image.with_data(blob_image.data * 2), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.nii.gz"]


def test_nrrd_lps_header_becomes_ras_affine(tmp_path):
    data = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6)  # (x, y, z)
    img = sitk.GetImageFromArray(np.transpose(data, (2, 1, 0)))
    img.SetSpacing((2.0, 3.0, 4.0))
    img.SetOrigin((10.0, 20.0, 30.0))
    img.SetDirection((0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0))
    for suffix in (".nrrd", ".mha"):
        path = tmp_path / f"vol{suffix}"
        sitk.WriteImage(img, str(path))
        image = load(path)
        np.testing.assert_array_equal(image.data, data)
        # voxel (1, 2, 3) in LPS: origin + D @ (spacing * idx); RAS negates x and y
        lps = np.array([10.0, 20.0, 30.0]) + np.array([[0, 1, 0], [1, 0, 0], [0, 0, -1.0]]) @ (
            np.array([2.0, 3.0, 4.0]) * [1, 2, 3]
        )
        expected = lps * [-1, -1, 1]
        np.testing.assert_allclose(image.index_to_world(np.array([[1, 2, 3]]))[0], expected)
        assert image.spacing == pytest.approx((2.0, 3.0, 4.0))


def test_npz_vol_and_seg(tmp_path):
    vol = np.random.default_rng(0).random((5, 6, 7))
    seg = np.zeros((5, 6, 7))
    seg[1:3, 1:3, 1:3] = 2.0
    path = tmp_path / "subject.npz"
    np.savez(path, vol=vol, seg=seg)
    image = load(path)
    labels = load(path, key="seg")
    assert not image.is_label and labels.is_label
    np.testing.assert_allclose(image.data, vol.astype(np.float32))
    np.testing.assert_array_equal(labels.labels(), [2])
    with pytest.raises(InputError, match="no array 'nope'"):
        load(path, key="nope")


def test_rcn_hdf5_groups(tmp_path):
    path = tmp_path / "rcn.h5"
    vol = (np.random.default_rng(1).random((8, 8, 8)) * 255).astype(np.uint8)
    seg = np.zeros((8, 8, 8), np.uint8)
    seg[2:5, 2:5, 2:5] = 1
    points = np.array([[1, 2, 3], [-1, -1, -1]], float)
    with h5py.File(path, "w") as f:
        for name in ("scan_b", "scan_a"):
            g = f.create_group(name)
            g["volume"] = vol
            g["segmentation"] = seg
            g["point"] = points
    assert list_h5_scans(path) == ["scan_a", "scan_b"]
    image, labels, pts = read_h5_scan(path, "scan_b")
    np.testing.assert_array_equal(image.data, vol.astype(np.float32))
    np.testing.assert_array_equal(labels.data, seg)
    np.testing.assert_array_equal(pts, points)
    assert load(path, key="scan_a/segmentation").is_label


def test_png_is_row_column_2d(tmp_path):
    data = np.zeros((10, 20), np.uint8)
    data[2, 15] = 200
    path = tmp_path / "slice.png"
    PILImage.fromarray(data).save(path)
    image = load(path)
    assert image.ndim == 2 and image.shape == (10, 20)
    assert image.data[2, 15] == 200
    with pytest.raises(InputError, match="expected a 3-D image"):
        load(path, dims=3)


def test_dicom_series_slices_sorted_and_positioned(tmp_path):
    data = np.random.default_rng(2).integers(0, 1000, size=(6, 5, 4)).astype(np.int16)  # (x, y, z)
    folder = tmp_path / "dicom"
    folder.mkdir()
    spacing, origin = (0.8, 0.9, 2.5), (-50.0, -60.0, 10.0)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in reversed(range(data.shape[2])):  # written out of order on purpose
        sl = sitk.GetImageFromArray(data[:, :, z].T[np.newaxis])
        sl.SetSpacing(spacing)
        position = (origin[0], origin[1], origin[2] + spacing[2] * z)
        for tag, value in {
            "0008|0060": "MR",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|000e": "1.2.826.0.1.3680043.2.1125.2",
            "0020|0032": "\\".join(f"{v:g}" for v in position),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0020|0013": str(z + 1),
            "0028|0030": f"{spacing[1]:g}\\{spacing[0]:g}",
            "0018|0050": f"{spacing[2]:g}",
        }.items():
            sl.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"s{z:03d}.dcm"))
        writer.Execute(sl)
    image = load(folder)
    np.testing.assert_array_equal(image.data, data.astype(np.float32))
    np.testing.assert_allclose(image.spacing, spacing, atol=1e-4)
    # DICOM patient coordinates are LPS: the RAS origin negates x and y
    np.testing.assert_allclose(image.origin, (50.0, 60.0, 10.0), atol=1e-4)


def test_vector_field_nifti_has_intent(tmp_path):
    field = np.zeros((4, 5, 6, 1, 3), np.float32)
    path = tmp_path / "disp.nii.gz"
    save_nifti(field, np.eye(4), path, intent=1007)
    img = nib.load(path)
    assert img.shape == (4, 5, 6, 1, 3)
    assert img.header.get_intent()[0] == "vector"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p, "no such file"),
        (lambda p: _truncated(p), "truncated or corrupt"),
        (lambda p: _nifti(p, np.full((4, 4, 4), np.nan, np.float32)), "NaN or Inf"),
        (lambda p: _nifti(p, np.ones((4, 4, 4, 3), np.float32)), "expected a 3-D image"),
        (lambda p: _nifti(p, np.zeros((4, 4, 4), np.int16), name="empty_seg.nii.gz"), "empty"),
        (lambda p: _text(p), "unsupported file type"),
    ],
)
def test_bad_files_raise_one_line_input_error(tmp_path, make, message):
    path = make(tmp_path / "bad.nii.gz")
    with pytest.raises(InputError) as err:
        load(path, dims=3, is_label=True if "empty" in str(path) else None)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def _nifti(path, data, name=None):
    path = path.with_name(name) if name else path
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def _truncated(path):
    good = _nifti(path.with_name("good.nii.gz"), np.random.default_rng(0).random((16, 16, 16)))
    raw = good.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    assert gzip  # gzip stream cut in the middle
    return path


def _text(path):
    path = path.with_name("notes.txt")
    path.write_text("hello")
    return path
