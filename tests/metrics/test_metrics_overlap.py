"""Dice / Jaccard on hand-computed label maps."""

import math

import numpy as np
import pytest
import torch

from medistill.errors import InputError
from medistill.metrics import dice, jaccard, mean_dice, mean_jaccard


def _cube(shape, start, size=4, label=1, out=None):
    a = np.zeros(shape, dtype=np.int32) if out is None else out
    sl = tuple(slice(s, s + size) for s in start)
    a[sl] = label
    return a


def test_cube_shifted_by_one():
    target = _cube((10, 10, 10), (2, 2, 2))
    pred = _cube((10, 10, 10), (3, 2, 2))
    # overlap 3 x 4 x 4 = 48 voxels of 64 each; union 80
    assert dice(pred, target) == {1: pytest.approx(2 * 48 / 128)}
    assert jaccard(pred, target) == {1: pytest.approx(48 / 80)}
    assert mean_dice(pred, target) == pytest.approx(0.75)
    assert mean_jaccard(pred, target) == pytest.approx(0.6)


def test_symmetric_and_identical():
    target = _cube((8, 8, 8), (1, 1, 1))
    pred = _cube((8, 8, 8), (2, 3, 1))
    assert dice(pred, target) == dice(target, pred)
    assert dice(target, target) == {1: 1.0}
    assert jaccard(target, target) == {1: 1.0}


def test_multi_label_and_default_labels():
    target = _cube((10, 10, 10), (0, 0, 0))
    pred = _cube((10, 10, 10), (1, 0, 0))
    # label 2: 8 target voxels on a line, pred has 4 of them and 4 others
    target[9, 0:8, 9] = 2
    pred[9, 4:8, 9] = 2
    pred[8, 0:4, 9] = 2
    # label 5 only in pred: not evaluated by default
    pred[6, 6, 6] = 5
    d = dice(pred, target)
    j = jaccard(pred, target)
    assert list(d) == [1, 2]
    assert d[1] == pytest.approx(0.75)
    assert d[2] == pytest.approx(2 * 4 / 16)
    assert j[2] == pytest.approx(4 / 12)
    assert mean_dice(pred, target) == pytest.approx((0.75 + 0.5) / 2)
    assert mean_jaccard(pred, target) == pytest.approx((0.6 + 1 / 3) / 2)
    # explicitly requested label present only in pred -> 0
    assert dice(pred, target, labels=[5]) == {5: 0.0}


def test_absent_label_nan_and_excluded_from_mean():
    target = _cube((10, 10, 10), (2, 2, 2))
    pred = _cube((10, 10, 10), (3, 2, 2))
    d = dice(pred, target, labels=[1, 7])
    assert d[1] == pytest.approx(0.75)
    assert math.isnan(d[7])
    assert math.isnan(jaccard(pred, target, labels=[7])[7])
    assert mean_dice(pred, target, labels=[1, 7]) == pytest.approx(0.75)
    assert mean_jaccard(pred, target, labels=[7, 1]) == pytest.approx(0.6)
    assert math.isnan(mean_dice(pred, target, labels=[7]))
    # no foreground label in target at all -> NaN mean
    assert math.isnan(mean_dice(pred, np.zeros_like(target)))


def test_label_present_in_target_only_is_zero():
    target = _cube((6, 6, 6), (0, 0, 0), size=2, label=3)
    pred = np.zeros_like(target)
    assert dice(pred, target) == {3: 0.0}
    assert jaccard(pred, target) == {3: 0.0}


def test_float_and_torch_inputs_and_negative_labels():
    target = _cube((10, 10, 10), (2, 2, 2))
    pred = _cube((10, 10, 10), (3, 2, 2))
    expected = dice(pred, target)
    assert dice(pred.astype(np.float32), target.astype(np.float64)) == expected
    assert dice(torch.from_numpy(pred), torch.from_numpy(target).float()) == expected
    assert dice(pred * -1, target * -1) == {-1: pytest.approx(0.75)}
    # huge label values take the non-bincount path
    assert dice(pred * 10**9, target * 10**9) == {10**9: pytest.approx(0.75)}


def test_non_integer_labels_raise():
    target = np.zeros((4, 4))
    pred = np.full((4, 4), 0.5)
    with pytest.raises(InputError, match="pred"):
        dice(pred, target)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="pred"):
        dice(np.zeros((4, 4, 4), int), np.zeros((4, 4, 5), int))
    with pytest.raises(InputError, match="jaccard"):
        jaccard(np.zeros((4, 4), int), np.zeros((4, 5), int))
