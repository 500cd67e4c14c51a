"""Tests of medistill.data.embedded: the MNI atlas from nilearn and the subjects made from it."""

from __future__ import annotations

import numpy as np
import pytest

from medistill.data.embedded import embedded_slices, embedded_subjects, mni_atlas
from medistill.errors import InputError
from medistill.io import Image, WorkingGrid

SHAPE = (64, 64, 64)


def dice(a: np.ndarray, b: np.ndarray, k: int) -> float:
    x, y = a == k, b == k
    return 2.0 * float((x & y).sum()) / max(float(x.sum() + y.sum()), 1.0)


def world_box(mask: np.ndarray, image: Image) -> tuple[np.ndarray, np.ndarray]:
    """World (mm) bounding box of the voxel centres of ``mask``."""
    world = image.index_to_world(np.argwhere(mask))
    return world.min(0), world.max(0)


# ----------------------------------------------------------------------------- atlas
def test_atlas_grid_range_and_classes():
    image, labels = mni_atlas(2)
    assert image.shape == labels.shape == (99, 117, 95)
    assert np.allclose(image.spacing, 2.0) and image.orientation == "RAS"
    assert np.array_equal(image.affine, labels.affine) and labels.is_label
    assert image.data.dtype == np.float32 and np.issubdtype(labels.data.dtype, np.integer)
    assert image.data.min() == 0.0 and image.data.max() == pytest.approx(1.0)
    assert set(np.unique(labels.data)) == {0, 1, 2, 3}
    # skull-stripped: the image is zero exactly where the labels are background
    assert np.array_equal(image.data > 0, labels.data > 0)
    # T1 contrast: CSF darker than grey matter, darker than white matter
    means = [float(image.data[labels.data == k].mean()) for k in (1, 2, 3)]
    assert means[0] < means[1] < means[2]
    # plausible adult volumes in ml (the mask is generous: it includes the sulcal CSF)
    ml = {k: (labels.data == k).sum() * 8 / 1000 for k in (1, 2, 3)}
    assert 50 < ml[1] < 400 and 800 < ml[2] < 1300 and 450 < ml[3] < 800, ml
    # the brain is where MNI space says it is (the AC near the origin, within the volume)
    lo, hi = world_box(labels.data > 0, labels)
    assert np.all(lo < -50) and np.all(hi > 50) and hi[2] < 90 and lo[1] > -115


def test_atlas_resolutions_agree_and_bad_resolution():
    fine, fine_labels = mni_atlas(1)
    coarse, coarse_labels = mni_atlas(2)
    assert fine.shape == (197, 233, 189) and np.allclose(fine.spacing, 1.0)
    # same world volume per class at both resolutions (within 5 %)
    for k in (2, 3):
        v1 = (fine_labels.data == k).sum() * 1.0
        v2 = (coarse_labels.data == k).sum() * 8.0
        assert v2 == pytest.approx(v1, rel=0.05)
    # the 2 mm grid shares the origin of the 1 mm grid
    assert np.allclose(fine.affine[:3, 3], coarse.affine[:3, 3])
    with pytest.raises(InputError, match="resolution"):
        mni_atlas(3)


# ----------------------------------------------------------------------------- subjects
def test_subjects_grid_types_and_classes():
    subjects = embedded_subjects(3, shape=SHAPE)
    assert len(subjects) == 3
    for image, labels in subjects:
        assert image.shape == labels.shape == SHAPE
        assert image.data.dtype == np.float32 and labels.is_label and not image.is_label
        assert 0.0 <= image.data.min() and image.data.max() <= 1.0
        assert set(np.unique(labels.data)) == {0, 1, 2, 3}
        assert np.array_equal(image.affine, labels.affine)
        spacing = np.asarray(image.spacing)
        assert np.allclose(spacing, spacing[0]) and image.orientation == "RAS"
        # the brain fits in the grid: nothing labelled on the outer faces
        d = labels.data
        faces = [d[0], d[-1], d[:, 0], d[:, -1], d[:, :, 0], d[:, :, -1]]
        assert all((f == 0).all() for f in faces)
        # the labels still describe the image: T1 contrast per class
        means = [float(image.data[d == k].mean()) for k in (1, 2, 3)]
        assert means[0] < means[1] < means[2]


def test_subject_affine_places_the_atlas_correctly():
    """Undeformed subjects coincide in world space with the atlas resampled by its affine."""
    atlas_image, atlas_labels = mni_atlas(2)
    (image, labels) = embedded_subjects(1, shape=SHAPE, max_disp=0.0, augment=False)[0]
    grid = WorkingGrid(SHAPE, image.affine)
    reference = grid.resample(atlas_labels).data
    for k in (1, 2, 3):
        assert dice(labels.data, reference, k) > (0.6 if k == 1 else 0.85)
    # the grid covers the brain with a margin: spacing ~ largest brain extent * 1.2 / 64
    lo, hi = world_box(atlas_labels.data > 0, atlas_labels)
    extent = float(np.max(hi - lo)) + 2.0
    assert image.spacing[0] == pytest.approx(extent * 1.2 / 64, rel=0.05)
    glo, ghi = world_box(np.ones(SHAPE, bool), image)
    assert np.all(glo < lo) and np.all(ghi > hi)


def test_subjects_differ_from_each_other_and_from_the_atlas():
    subjects = embedded_subjects(4, shape=SHAPE)
    plain = embedded_subjects(1, shape=SHAPE, max_disp=0.0, augment=False)[0]
    for i, (image, labels) in enumerate(subjects):
        assert np.mean(labels.data != plain[1].data) > 0.01
        assert np.abs(image.data - plain[0].data).mean() > 0.005
        for other, other_labels in subjects[i + 1 :]:
            assert np.mean(labels.data != other_labels.data) > 0.01
            assert np.abs(image.data - other.data).mean() > 0.005


def test_subjects_deterministic_prefix_and_splits_disjoint():
    a = embedded_subjects(3, shape=SHAPE, seed=7)
    b = embedded_subjects(2, shape=SHAPE, seed=7)
    for (x, xl), (y, yl) in zip(a, b, strict=False):
        assert np.array_equal(x.data, y.data) and np.array_equal(xl.data, yl.data)
        assert np.array_equal(x.affine, y.affine)
    other_seed = embedded_subjects(1, shape=SHAPE, seed=8)[0]
    assert not np.array_equal(other_seed[1].data, a[0][1].data)
    test = embedded_subjects(3, shape=SHAPE, seed=7, split="test")
    for t_image, t_labels in test:
        for image, labels in a:
            assert np.mean(t_labels.data != labels.data) > 0.01
            assert not np.array_equal(t_image.data, image.data)
    with pytest.raises(InputError, match="split"):
        embedded_subjects(1, split="val")
    with pytest.raises(InputError, match="shape"):
        embedded_subjects(1, shape=(64, 64))


def test_subjects_other_shape():
    ((image, labels),) = embedded_subjects(1, shape=(48, 56, 40), seed=1)
    assert image.shape == (48, 56, 40)
    assert set(np.unique(labels.data)) == {0, 1, 2, 3}
    # isotropic voxels chosen so that the brain and its margin fit along every axis
    assert np.allclose(image.spacing, image.spacing[0])


# ----------------------------------------------------------------------------- slices
def test_slices_shape_range_determinism_and_split_planes():
    train = embedded_slices(12, shape=(96, 96), seed=0)
    again = embedded_slices(12, shape=(96, 96), seed=0)
    test = embedded_slices(12, shape=(96, 96), seed=0, split="test")
    for s, t in zip(train, again, strict=True):
        assert s.ndim == 2 and s.shape == (96, 96) and s.data.dtype == np.float32
        assert 0.0 <= s.data.min() and s.data.max() <= 1.0 and s.data.max() > 0.5
        assert s.data[0].max() < 1e-3 and s.data[:, -1].max() < 1e-3  # brain inside the grid
        assert np.array_equal(s.data, t.data) and np.array_equal(s.affine, t.affine)
        assert np.allclose(s.spacing, s.spacing[0])
    assert not np.array_equal(train[0].data, train[1].data)
    # planes (S position in the affine) of train and test never coincide
    z_train = {round(s.affine[2, 3], 3) for s in train}
    z_test = {round(s.affine[2, 3], 3) for s in test}
    assert z_train.isdisjoint(z_test) and len(z_train) > 1
