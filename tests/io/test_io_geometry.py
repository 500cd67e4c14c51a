"""Reorientation, working grids and grid checks: geometry is kept exactly."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from medistill.errors import InputError
from medistill.io import (
    Image,
    WorkingGrid,
    check_same_grid,
    ct_window,
    from_canonical,
    load,
    normalize_percentile,
    save,
    to_canonical,
    to_working_grid,
)
from tests.utils import oblique_affine


def _linear_in_world(shape, affine, coef=(0.3, -0.2, 0.5), offset=7.0):
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).reshape(-1, 3)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    return (world @ np.asarray(coef) + offset).reshape(shape).astype(np.float32)


def test_canonical_roundtrip_is_exact_and_keeps_world_positions(blob_image):
    blob_image.data[2, 3, 4] = 5.0  # a unique marker
    canon, how = to_canonical(blob_image)
    assert canon.orientation == "RAS"
    # the same voxel value sits at the same world point
    i = (2, 3, 4)
    j = np.unravel_index(np.argmax(canon.data), canon.shape)
    np.testing.assert_allclose(
        blob_image.index_to_world(np.array([i])), canon.index_to_world(np.array([j])), atol=1e-9
    )
    back = from_canonical(canon, how)
    np.testing.assert_array_equal(back.data, blob_image.data)
    np.testing.assert_array_equal(back.affine, blob_image.affine)


def test_canonical_2d():
    affine = np.eye(4)
    affine[:2, :2] = [[0, -2.0], [1.0, 0]]
    image = Image(np.arange(12, dtype=np.float32).reshape(3, 4), affine)
    canon, how = to_canonical(image)
    assert canon.orientation == "RA"
    back = from_canonical(canon, how)
    np.testing.assert_array_equal(back.data, image.data)


def test_working_grid_roundtrip_returns_original_grid_and_values(tmp_path):
    affine = oblique_affine(spacing=(1.2, 1.0, 1.5), angle=0.2)
    shape = (30, 34, 26)
    image = Image(_linear_in_world(shape, affine), affine, source="lin")
    path = tmp_path / "lin.nii.gz"
    save(image, path)
    loaded = load(path)
    canon, how = to_canonical(loaded)
    work, grid = to_working_grid(canon, 40, margin=0.0, threshold=-np.inf)
    assert work.shape == (40, 40, 40) and work.orientation == "RAS"
    assert np.allclose(np.linalg.norm(grid.affine[:3, :3], axis=0), grid.spacing)
    # linear interpolation reproduces a function linear in world coordinates exactly
    expected_work = _linear_in_world(work.shape, grid.affine)
    inside = work.data != work.data.min()
    np.testing.assert_allclose(work.data[inside], expected_work[inside], atol=1e-3)
    back_canon = grid.to_original(work.data, canon)
    back = from_canonical(back_canon, how)
    assert back.shape == image.shape
    np.testing.assert_array_equal(back.affine, loaded.affine)
    core = (slice(3, -3),) * 3  # away from the faces, where the working grid had no data outside
    np.testing.assert_allclose(back.data[core], image.data[core], atol=2e-3)


def test_working_grid_centres_content_and_fits_it():
    data = np.zeros((50, 60, 40), np.float32)
    data[10:20, 30:50, 5:35] = 1.0
    image = Image(data, np.diag([2.0, 1.0, 1.0, 1.0]))
    grid = WorkingGrid.around(image, (32, 32, 32), margin=0.0)
    # content extent in mm: 20 x 20 x 30 -> spacing 30/32
    assert grid.spacing == pytest.approx(30 / 32)
    centre = grid.affine[:3, :3] @ ((np.array(grid.shape) - 1) / 2) + grid.affine[:3, 3]
    np.testing.assert_allclose(centre, [29.0, 39.5, 19.5])


def test_labels_go_to_working_grid_by_nearest_neighbour():
    labels = np.zeros((20, 20, 20), np.int32)
    labels[5:15, 5:15, 5:15] = 3
    labels[8:12, 8:12, 8:12] = 7
    image = Image(labels, np.eye(4), is_label=True)
    work, grid = to_working_grid(image, 16)
    assert set(np.unique(work.data)) == {0, 3, 7}
    back = grid.to_original(work.data, image, is_label=True)
    assert back.data.dtype == np.int32 and set(np.unique(back.data)) == {0, 3, 7}


def test_header_rounding_accepted_with_warning(caplog):
    ref = Image(np.zeros((10, 10, 10), np.float32), np.eye(4), source="image")
    rounded = np.diag([0.98, 0.97, 1.0, 1.0])
    rounded[:3, 3] = [3.0, 6.0, 0.0]
    lab = np.zeros((10, 10, 10), np.int32)
    lab[2:4, 2:4, 2:4] = 1
    with caplog.at_level(logging.WARNING):
        out = check_same_grid(ref, Image(lab, rounded, True, "labels"))
    assert "resampled through its own header" in caplog.text
    np.testing.assert_array_equal(out.affine, ref.affine)
    # world space decides: label voxel (2, 2, 2) of the other header lies at
    # (2*0.98+3, 2*0.97+6, 2) mm, i.e. reference voxel (4.96, 7.94, 2) -> nearest (5, 8, 2)
    assert out.data[5, 8, 2] == 1 and out.data[2, 2, 2] == 0


@pytest.mark.parametrize(
    "affine, shape",
    [
        (np.diag([2.0, 1.0, 1.0, 1.0]), (10, 10, 10)),  # spacing differs by 100 %
        (np.diag([-1.0, 1.0, 1.0, 1.0]), (10, 10, 10)),  # orientation differs
        (np.eye(4), (10, 10, 11)),  # shape differs
    ],
)
def test_mismatched_grids_raise(affine, shape):
    ref = Image(np.zeros((10, 10, 10), np.float32), np.eye(4), source="image")
    with pytest.raises(InputError, match="labels"):
        check_same_grid(ref, Image(np.ones(shape, np.int32), affine, True, "labels"))


def test_real_oasis_tissue_map_accepted(shared_data):
    image = load(shared_data / "brain3d" / "oasis_A.nii.gz")
    tissue = load(shared_data / "brain3d" / "oasis_A_tissue.nii.gz")
    assert tissue.is_label
    out = check_same_grid(image, tissue)
    np.testing.assert_array_equal(out.affine, image.affine)
    # placed through its own header the tissue map covers exactly the brain (non-zero voxels)
    np.testing.assert_array_equal(out.data > 0, image.data > 0)


def test_real_lia_label_map_to_canonical(shared_data):
    labels = load(shared_data / "labelmaps" / "training_seg_01.nii.gz")
    assert labels.orientation == "LIA" and labels.is_label
    canon, how = to_canonical(labels)
    assert canon.orientation == "RAS"
    np.testing.assert_array_equal(from_canonical(canon, how).data, labels.data)


def test_intensity_normalisation():
    data = np.arange(101, dtype=np.float32)
    out = normalize_percentile(data, 10, 90)
    assert out[0] == 0 and out[-1] == 1 and out[50] == pytest.approx(0.5)
    hu = np.array([-1000.0, 120 - 145, 120.0, 120 + 145, 2000])
    np.testing.assert_allclose(ct_window(hu, 290, 120), [0, 0, 0.5, 1, 1])
    with pytest.raises(InputError):
        normalize_percentile(data, 90, 10)


def test_label_map_shifted_far_from_its_image_is_refused():
    """A header that differs by a rounding is accepted; an origin 60 mm away is another place."""
    import numpy as np
    import pytest

    from medistill.errors import InputError
    from medistill.io import Image, check_same_grid

    image = Image(np.random.default_rng(0).random((40, 40, 40)), np.eye(4), False, "img")
    near = np.eye(4)
    near[:3, 3] = 1.0
    accepted = check_same_grid(image, Image(np.zeros((40, 40, 40)), near, True, "near"))
    assert np.allclose(accepted.affine, image.affine)
    far = np.eye(4)
    far[:3, 3] = [60.0, 0.0, 0.0]
    with pytest.raises(InputError, match="far.*grid does not match"):
        check_same_grid(image, Image(np.zeros((40, 40, 40)), far, True, "far"))
