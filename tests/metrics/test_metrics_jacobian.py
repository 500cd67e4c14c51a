"""Folding fraction, textbook SDlogJ and the Learn2Reg SDlogJ on hand-computed cases."""

import math

import numpy as np
import pytest
import torch

from medistill.errors import InputError
from medistill.metrics import folding_fraction, jacobian_det_l2r, sdlogj, sdlogj_l2r


def test_folding_fraction_counts():
    jac = np.ones((4, 5, 6))
    jac.reshape(-1)[[0, 7, 30, 61, 100, 119]] = -0.5
    jac.reshape(-1)[[3, 50, 90]] = 0.0  # zero counts as folding
    jac.reshape(-1)[[4]] = 1e-6  # tiny positive does not
    assert folding_fraction(jac) == pytest.approx(9 / 120)
    assert folding_fraction(torch.from_numpy(jac)[None, None]) == pytest.approx(9 / 120)
    mask = np.zeros((4, 5, 6), dtype=bool)
    mask.reshape(-1)[:60] = True  # holds indices 0, 7, 30, 3, 50 -> 5 of 60
    assert folding_fraction(jac, mask) == pytest.approx(5 / 60)
    assert folding_fraction(jac, mask[None, None].astype(np.float32)) == pytest.approx(5 / 60)
    assert math.isnan(folding_fraction(jac, np.zeros_like(mask)))


def test_sdlogj_half_one_half_e():
    jac = np.ones((2, 4, 4))
    jac[1] = math.e  # log values: 16 zeros and 16 ones -> population SD 0.5
    assert sdlogj(jac) == pytest.approx(0.5)
    assert sdlogj(jac[None, None]) == pytest.approx(0.5)
    mask = np.zeros_like(jac)
    mask[0, :2] = 1  # 8 zeros
    mask[1, 0] = 1  # 4 ones -> values [0]*8 + [1]*4
    vals = np.array([0.0] * 8 + [1.0] * 4)
    assert sdlogj(jac, mask) == pytest.approx(math.sqrt(np.mean((vals - vals.mean()) ** 2)))


def test_sdlogj_clips_non_positive():
    jac = np.ones((4, 4))
    jac[:2] = -2.0  # clipped to 1e-9: log = -20.723
    assert sdlogj(jac) == pytest.approx(-math.log(1e-9) / 2)


def test_batched_input_must_be_one_sample():
    with pytest.raises(InputError, match="jac_det"):
        sdlogj(np.ones((2, 1, 4, 4, 4)))
    with pytest.raises(InputError, match="mask"):
        folding_fraction(np.ones((4, 4, 4)), np.ones((4, 4, 5)))


def _quadratic_field(a, shape=(8, 8, 8)):
    """u_0(x) = a x_0^2 / 2: central differences give d u_0 / d x_0 = a x_0 exactly."""
    x0 = np.arange(shape[0], dtype=float)[:, None, None]
    u = np.zeros((3,) + shape)
    u[0] = a * x0**2 / 2 * np.ones(shape)
    return u


def test_sdlogj_l2r_quadratic_field():
    # det = 1 + a x_0 on the cropped grid x_0 = 2..5 (each plane has 4 x 4 voxels);
    # Learn2Reg: std(log(clip(det + 3, 1e-9, 1e9)))
    x0 = np.arange(2, 6, dtype=float)
    a = 0.5
    u = _quadratic_field(a)
    det = jacobian_det_l2r(u)
    assert det.shape == (4, 4, 4)
    np.testing.assert_allclose(det, np.broadcast_to((1 + a * x0)[:, None, None], (4, 4, 4)))
    expected = np.std(np.log(4 + a * x0))
    assert sdlogj_l2r(u) == pytest.approx(expected)
    assert sdlogj_l2r(torch.from_numpy(u)[None].float()) == pytest.approx(expected, rel=1e-5)
    # the textbook value has no +3 offset
    assert sdlogj(det) == pytest.approx(np.std(np.log(1 + a * x0)))
    assert sdlogj(det) != pytest.approx(sdlogj_l2r(u))
    # mask on the full grid, cropped like the reference: keep x_0 = 2, 3 only
    mask = np.zeros((8, 8, 8))
    mask[:4] = 1
    assert sdlogj_l2r(u, mask) == pytest.approx(np.std(np.log(4 + a * x0[:2])))


def test_sdlogj_l2r_clipping_below_minus_three():
    a = -1.5  # det + 3 = 4 - 1.5 x_0: 1, -0.5, -2, -3.5 -> the last three are clipped to 1e-9
    x0 = np.arange(2, 6, dtype=float)
    expected = np.std(np.log(np.clip(4 + a * x0, 1e-9, 1e9)))
    assert sdlogj_l2r(_quadratic_field(a)) == pytest.approx(expected)


def test_jacobian_det_l2r_linear_field():
    rng = np.random.default_rng(1)
    m = rng.normal(scale=0.2, size=(3, 3))
    shape = (7, 8, 9)
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=float) for s in shape], indexing="ij"))
    u = np.einsum("jk,k...->j...", m, grid)  # u_j(x) = sum_k m[j, k] x_k
    det = jacobian_det_l2r(u)
    assert det.shape == (3, 4, 5)
    np.testing.assert_allclose(det, np.linalg.det(np.eye(3) + m), rtol=1e-12)
    # channels paired with the wrong axes would give another determinant
    assert not np.isclose(np.linalg.det(np.eye(3) + m), np.linalg.det(np.eye(3) + m[[1, 2, 0]]))
    assert sdlogj_l2r(u) == pytest.approx(0.0, abs=1e-12)


def test_l2r_bad_input():
    with pytest.raises(InputError, match="disp"):
        sdlogj_l2r(np.zeros((2, 8, 8)))
    with pytest.raises(InputError, match="disp"):
        jacobian_det_l2r(np.zeros((3, 4, 8, 8)))
    with pytest.raises(InputError, match="mask"):
        sdlogj_l2r(np.zeros((3, 8, 8, 8)), np.ones((4, 4, 4)))
