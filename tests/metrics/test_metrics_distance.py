"""HD95 on shapes with known answers and against a brute-force reference; TRE by hand."""

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.spatial.distance import cdist

from medistill.errors import InputError
from medistill.metrics import hd95, mean_hd95, mean_tre, tre


def _cube(shape, start, size=4, label=1, out=None):
    a = np.zeros(shape, dtype=np.int32) if out is None else out
    a[tuple(slice(s, s + size) for s in start)] = label
    return a


def _reference_hd95(p, t, spacing):
    """Brute force: face-connected surface voxels, all pairwise distances, max of directed P95."""
    sp = np.asarray(spacing, dtype=float)

    def surface(m):
        return np.argwhere(m & ~ndimage.binary_erosion(m)) * sp

    sp_p, sp_t = surface(p), surface(t)
    d = cdist(sp_p, sp_t)
    return max(np.percentile(d.min(axis=1), 95), np.percentile(d.min(axis=0), 95))


def test_cube_shifted_by_three():
    target = _cube((16, 16, 16), (2, 2, 2))
    pred = _cube((16, 16, 16), (5, 2, 2))
    assert hd95(pred, target) == {1: pytest.approx(3.0)}
    assert hd95(pred, target, spacing=(2.0, 1.0, 1.0)) == {1: pytest.approx(6.0)}
    # a shift along axis 2 is not scaled by the spacing of axis 0
    pred2 = _cube((16, 16, 16), (2, 2, 5))
    assert hd95(pred2, target, spacing=(2.0, 1.0, 1.0)) == {1: pytest.approx(3.0)}
    assert hd95(pred2, target, spacing=(1.0, 1.0, 0.5)) == {1: pytest.approx(1.5)}


def test_identical_is_zero_and_2d():
    target = _cube((12, 12, 12), (3, 3, 3))
    assert hd95(target, target) == {1: 0.0}
    t2 = _cube((12, 12), (2, 2))
    p2 = _cube((12, 12), (2, 4))
    assert hd95(p2, t2) == {1: pytest.approx(2.0)}
    assert hd95(torch.from_numpy(p2), torch.from_numpy(t2).double()) == {1: pytest.approx(2.0)}


def test_percentile_ignores_single_outlier():
    target = _cube((30, 12, 12), (2, 2, 2))
    pred = target.copy()
    pred[26, 4, 4] = 1  # one stray voxel 20+ voxels away: the maximum HD would be 21
    # pred -> target: 56 zeros and one 21; its 95th percentile is 0. target -> pred: all 0.
    assert hd95(pred, target) == {1: pytest.approx(0.0)}


def test_matches_brute_force_reference():
    rng = np.random.default_rng(0)
    shape = (14, 12, 10)
    spacing = (1.5, 0.8, 2.0)
    for _ in range(2):
        t = ndimage.binary_opening(rng.random(shape) > 0.55)
        p = ndimage.binary_opening(rng.random(shape) > 0.55)
        t[0, 0, 0] = p[0, 0, 0] = True  # never empty
        target = t.astype(np.int64) * 2
        pred = p.astype(np.int64) * 2
        got = hd95(pred, target, spacing=spacing)[2]
        assert got == pytest.approx(_reference_hd95(p, t, spacing), rel=1e-5, abs=1e-5)
        assert hd95(pred, target)[2] == pytest.approx(
            _reference_hd95(p, t, (1, 1, 1)), rel=1e-5, abs=1e-5
        )


def test_multi_label_empty_cases_and_mean():
    target = _cube((16, 16, 16), (1, 1, 1))
    pred = _cube((16, 16, 16), (4, 1, 1))
    _cube((16, 16, 16), (9, 9, 9), size=3, label=2, out=target)  # label 2 only in target
    _cube((16, 16, 16), (9, 1, 9), size=3, label=3, out=pred)  # label 3 only in pred
    out = hd95(pred, target, labels=[1, 2, 3, 4])
    assert out[1] == pytest.approx(3.0)
    assert out[2] == math.inf
    assert out[3] == math.inf
    assert math.isnan(out[4])
    assert mean_hd95(pred, target, labels=[1, 4]) == pytest.approx(3.0)
    assert mean_hd95(pred, target) == math.inf  # default labels 1, 2; label 2 missing in pred
    # the summaries' convention: structures present in one map only are left out
    assert mean_hd95(pred, target, finite_only=True) == pytest.approx(3.0)
    assert math.isnan(mean_hd95(pred, target, labels=[2, 3], finite_only=True))
    assert list(hd95(pred, target)) == [1, 2]


def test_hd95_bad_input():
    with pytest.raises(InputError, match="pred"):
        hd95(np.zeros((8, 8, 8), int), np.zeros((8, 8, 9), int))
    with pytest.raises(InputError, match="spacing"):
        hd95(np.ones((8, 8, 8), int), np.ones((8, 8, 8), int), spacing=(1.0, 1.0))


def test_tre_shifts_spacing_affine_and_missing():
    fixed = np.array([[10.0, 10.0, 10.0], [5.0, 6.0, 7.0], [-1.0, -1.0, -1.0], [3.0, -1.0, 2.0]])
    mapped = fixed + np.array([1.0, 2.0, 2.0])
    d = tre(fixed, mapped)
    np.testing.assert_allclose(d[:2], [3.0, 3.0])
    assert np.isnan(d[2]) and np.isnan(d[3])
    spacing = (2.0, 1.0, 0.5)
    d_mm = tre(fixed, mapped, spacing=spacing)
    np.testing.assert_allclose(d_mm[:2], math.sqrt(4 + 4 + 1))
    affine = np.diag([2.0, 1.0, 0.5, 1.0])
    affine[:3, 3] = [-100.0, 20.0, 7.0]
    np.testing.assert_allclose(tre(fixed, mapped, affine=affine), d_mm, equal_nan=True)
    assert mean_tre(fixed, mapped, spacing=spacing) == pytest.approx(3.0)
    assert mean_tre(torch.tensor(fixed), torch.tensor(mapped)) == pytest.approx(3.0)


def test_tre_rotated_affine_and_2d():
    theta = 0.3
    rot = np.array(
        [[math.cos(theta), -math.sin(theta), 0], [math.sin(theta), math.cos(theta), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = 1.5 * rot
    fixed = np.array([[1.0, 2.0, 3.0]])
    mapped = np.array([[4.0, 6.0, 3.0]])  # 5 voxels apart
    assert tre(fixed, mapped, affine=affine)[0] == pytest.approx(7.5)
    # 2-D points with a 4x4 NIfTI affine use its upper-left 2x2 block
    aff2 = np.diag([3.0, 2.0, 1.0, 1.0])
    assert tre(np.array([[0.0, 0.0]]), np.array([[1.0, 2.0]]), affine=aff2)[0] == pytest.approx(5.0)


def test_tre_bad_input():
    pts = np.zeros((3, 3))
    with pytest.raises(InputError, match="mapped_points"):
        tre(pts, np.zeros((3, 2)))
    with pytest.raises(InputError, match="not both"):
        tre(pts, pts, spacing=(1, 1, 1), affine=np.eye(4))
    assert math.isnan(mean_tre(-np.ones((2, 3)), np.zeros((2, 3))))
