"""The held-out split of the label maps and the held-out registration pairs (needs
../shared/data/labelmaps; generated at 3 mm to stay quick)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medistill.data import load_subject, make_heldout_pairs, read_pairs_csv, split_label_maps
from medistill.errors import InputError
from tests.conftest import SHARED_DATA

LABELMAPS = SHARED_DATA / "labelmaps"
needs_maps = pytest.mark.skipif(
    not LABELMAPS.is_dir(), reason=f"label maps not found at {LABELMAPS}"
)


@pytest.fixture(scope="module")
def pairs_csv(tmp_path_factory) -> Path:
    """All 5 held-out subjects at 3 mm, seed 3."""
    out = tmp_path_factory.mktemp("heldout")
    return make_heldout_pairs(LABELMAPS, out, spacing=3.0, seed=3)


@pytest.mark.shared_data
@needs_maps
def test_split_is_disjoint_deterministic_and_holds_out_the_last_five():
    train, held = split_label_maps(LABELMAPS)
    assert [p.name for p in held] == [f"training_seg_{k}.nii.gz" for k in range(16, 21)]
    assert len(train) == 15 and not set(train) & set(held)
    assert split_label_maps(str(LABELMAPS)) == (train, held)


def test_split_needs_seven_maps(tmp_path):
    for k in range(6):
        (tmp_path / f"seg_{k}.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match=str(tmp_path)):
        split_label_maps(tmp_path)
    (tmp_path / "seg_6.nii.gz").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a map")
    train, held = split_label_maps(tmp_path)
    assert len(train) == 2 and len(held) == 5


@pytest.mark.shared_data
@needs_maps
def test_heldout_pairs(pairs_csv):
    lines = pairs_csv.read_text().splitlines()
    assert lines[0] == "fixed,moving,fixed_labels,moving_labels"
    sources, pairs = read_pairs_csv(pairs_csv)
    assert len(pairs) == 20 and len(sources) == 5
    assert len(set(pairs)) == 20 and all(f != m for f, m in pairs)
    manifest = json.loads((pairs_csv.parent / "heldout.json").read_text())
    offsets = {s["name"]: np.asarray(s["world_offset"]) for s in manifest["subjects"]}
    grids = {s["name"]: np.asarray(s["grid_affine"]) for s in manifest["subjects"]}
    subjects = [load_subject(s) for s in sources]
    for sub in subjects:
        name = sub.name.removesuffix(".nii.gz")
        # image and labels on the same grid; the grid is the unshifted one moved by the offset
        assert sub.image.shape == sub.labels.shape
        np.testing.assert_allclose(sub.image.affine, sub.labels.affine, atol=1e-6)
        np.testing.assert_allclose(sub.image.affine, offsets[name] @ grids[name], atol=1e-4)
        np.testing.assert_allclose(sub.image.spacing, 3.0, atol=1e-4)
        assert np.abs(sub.image.affine - grids[name]).max() > 1.0  # an offset was applied
        rot = offsets[name][:3, :3]
        np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-9)
        # skull-stripped: no extra-cerebral class or outer CSF left, integer values
        values = sub.labels.labels()
        assert np.issubdtype(sub.labels.data.dtype, np.integer)
        assert not np.any((values >= 500) & (values < 1000)) and 24 not in values
        assert sub.image.data.min() >= 0 and sub.image.data.max() <= 1
        assert sub.image.data[0, 0, 0] == 0  # background outside the brain
    # the offsets differ between subjects, so world space does not align them
    names = list(offsets)
    assert not np.allclose(offsets[names[0]], offsets[names[1]])
    for f, m in pairs:
        common = set(subjects[f].labels.labels()) & set(subjects[m].labels.labels())
        assert len(common) >= 30


@pytest.mark.shared_data
@needs_maps
def test_heldout_pairs_are_deterministic(pairs_csv, tmp_path):
    """The same seed gives the same files (a subset of subjects gives the same first subjects)."""
    import nibabel as nib

    again = make_heldout_pairs(LABELMAPS, tmp_path, spacing=3.0, seed=3, subjects=2)
    assert len(again.read_text().splitlines()) == 1 + 2
    for name in ("sub16.nii.gz", "sub17_seg.nii.gz"):
        a, b = nib.load(pairs_csv.parent / name), nib.load(tmp_path / name)
        np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj))
        np.testing.assert_array_equal(a.affine, b.affine)


@pytest.mark.shared_data
@needs_maps
def test_t2_pairs_are_the_t1_pairs_with_fluid_bright(pairs_csv, tmp_path):
    """Same seed: the same subjects, grids, offsets and labels as the t1 pairs; the image has T2
    contrast (CSF > GM > WM) where the t1 image has T1 contrast."""
    t2 = make_heldout_pairs(LABELMAPS, tmp_path, spacing=3.0, seed=3, subjects=2, contrast="t2")
    from scipy import ndimage

    from medistill.io import load

    for name in ("sub16", "sub17"):
        a, b = (load(d / f"{name}.nii.gz") for d in (pairs_csv.parent, t2.parent))
        lab_a, lab = (
            load(d / f"{name}_seg.nii.gz", is_label=True) for d in (pairs_csv.parent, t2.parent)
        )
        np.testing.assert_array_equal(lab_a.data, lab.data)
        np.testing.assert_allclose(a.affine, b.affine, atol=1e-6)
        lab = lab.data
        # away from the brain's edge: the cortex' partial volume with the (zero) background
        # darkens its rim in both contrasts
        inner = ndimage.binary_erosion(lab > 0)
        csf, gm, wm = (np.isin(lab, v) & inner for v in ((4, 43), (3, 42), (2, 41)))
        t1_means = [float(a.data[m].mean()) for m in (csf, gm, wm)]
        t2_means = [float(b.data[m].mean()) for m in (csf, gm, wm)]
        assert t1_means[0] < t1_means[1] < t1_means[2]
        assert t2_means[0] > t2_means[1] > t2_means[2]


def test_heldout_pairs_reject_bad_arguments(tmp_path):
    with pytest.raises(InputError, match="contrast"):
        make_heldout_pairs(tmp_path, tmp_path / "out", contrast="flair")
    with pytest.raises(InputError, match="spacing"):
        make_heldout_pairs(tmp_path, tmp_path / "out", spacing=0)
