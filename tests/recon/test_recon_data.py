"""Slices from volumes, 2-D files, folders and fastMRI-style HDF5 files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from medistill.errors import InputError
from medistill.io import Image, save
from medistill.recon.data import SliceSet, fit_square, read_fastmri, read_slice_set, select_slices


def test_fit_square_pads_centred_then_resizes():
    plane = np.ones((4, 8), np.float32)
    out = fit_square(plane, 8)  # padded to 8x8: two zero rows above and below
    assert out.shape == (8, 8)
    np.testing.assert_array_equal(out[2:6], 1.0)
    np.testing.assert_array_equal(out[:2], 0.0)
    np.testing.assert_array_equal(out[6:], 0.0)
    const = fit_square(np.full((3, 20, 20), 0.5, np.float32), 10)  # stacks and downsampling
    assert const.shape == (3, 10, 10)
    np.testing.assert_allclose(const, 0.5, atol=1e-6)


def test_select_slices_keeps_large_planes():
    vol = np.zeros((10, 10, 5), np.float32)
    vol[:, :, 1] = 1.0  # full plane
    vol[:5, :, 2] = 1.0  # half
    vol[:2, :2, 3] = 1.0  # 4 %
    np.testing.assert_array_equal(select_slices(vol, 0.25), [1, 2])
    np.testing.assert_array_equal(select_slices(vol, 0.01), [1, 2, 3])


def test_read_slice_set_from_volume_file_and_folder(tmp_path):
    vol = np.zeros((12, 12, 6), np.float32)
    vol[2:10, 2:10, 1:5] = np.arange(1, 5, dtype=np.float32) * 2.0  # brightest plane = 8
    save(Image(vol), tmp_path / "v.nii.gz")
    folder = tmp_path / "slices"
    folder.mkdir()
    for i in range(2):
        save(Image(np.full((8, 8), 3.0 + i, np.float32)), folder / f"s{i}.nii.gz")
    (folder / "notes.txt").write_text("ignored")
    s = read_slice_set([tmp_path / "v.nii.gz", folder], 12)
    assert isinstance(s, SliceSet)
    assert s.names == ["v", "s0", "s1"]
    assert s.images.shape == (6, 12, 12) and s.images.dtype == np.float32
    np.testing.assert_array_equal(s.volume, [0, 0, 0, 0, 1, 2])
    # per-volume scaling: the brightest plane of v reaches 1, the others keep their ratio
    np.testing.assert_allclose(s.slices_of(0).max(axis=(1, 2)), [0.25, 0.5, 0.75, 1.0], atol=1e-6)
    assert s.images.min() >= 0 and s.images.max() <= 1
    limited = read_slice_set([tmp_path / "v.nii.gz"], 12, max_slices=2)
    assert len(limited) == 2


def test_read_fastmri_targets_and_kspace(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.random((2, 8, 8)).astype(np.float32)
    k = np.fft.fftshift(
        np.fft.fft2(np.fft.ifftshift(img, axes=(-2, -1)), norm="ortho"), axes=(-2, -1)
    )
    with h5py.File(tmp_path / "sc.h5", "w") as f:
        f["kspace"] = k.astype(np.complex64)
    np.testing.assert_allclose(read_fastmri(tmp_path / "sc.h5"), img, atol=1e-5)
    with h5py.File(tmp_path / "mc.h5", "w") as f:  # two coils 3*img and 4*img: RSS = 5*img
        f["kspace"] = np.stack([3 * k, 4 * k], axis=1).astype(np.complex64)
    np.testing.assert_allclose(read_fastmri(tmp_path / "mc.h5"), 5 * img, atol=1e-4)
    with h5py.File(tmp_path / "esc.h5", "w") as f:
        f["kspace"] = k.astype(np.complex64)
        f["reconstruction_esc"] = 2 * img
    np.testing.assert_allclose(read_fastmri(tmp_path / "esc.h5"), 2 * img)
    s = read_slice_set([tmp_path / "esc.h5"], 8, min_area=0.0)
    assert len(s) == 2 and s.names == ["esc"]
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["something"] = img
    with pytest.raises(InputError, match="no 'kspace'"):
        read_fastmri(tmp_path / "other.h5")


def test_read_slice_set_errors(tmp_path):
    with pytest.raises(InputError, match="no such"):
        read_slice_set([tmp_path / "missing.nii.gz"], 16)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no image files"):
        read_slice_set([tmp_path / "empty"], 16)
    save(Image(np.zeros((8, 8), np.float32)), tmp_path / "zero.nii.gz")
    with pytest.raises(InputError, match="no non-empty slices"):
        read_slice_set([tmp_path / "zero.nii.gz"], 16)
