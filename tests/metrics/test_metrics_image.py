"""PSNR / SSIM against scikit-image, per-slice SSIM, NMSE and PSNR by hand."""

import math

import numpy as np
import pytest
import torch

from medistill.errors import InputError
from medistill.metrics import nmse, psnr, ssim, ssim_slices

skm = pytest.importorskip("skimage.metrics")


def _pair(shape, seed):
    rng = np.random.default_rng(seed)
    target = rng.random(shape) * 3.0
    pred = target + rng.normal(scale=0.3, size=shape)
    return pred, target


@pytest.mark.parametrize("shape", [(32, 40), (12, 14, 16)])
def test_psnr_matches_skimage(shape):
    pred, target = _pair(shape, 0)
    ref = skm.peak_signal_noise_ratio(target, pred, data_range=target.max())
    assert psnr(pred, target) == pytest.approx(ref, abs=1e-6)
    assert psnr(pred, target, data_range=5.0) == pytest.approx(
        skm.peak_signal_noise_ratio(target, pred, data_range=5.0), abs=1e-6
    )


@pytest.mark.parametrize("shape", [(32, 40), (12, 14, 16)])
def test_ssim_matches_skimage(shape):
    pred, target = _pair(shape, 1)
    ref = skm.structural_similarity(target, pred, data_range=target.max(), win_size=7)
    assert ssim(pred, target) == pytest.approx(ref, abs=1e-6)
    assert ssim(torch.from_numpy(pred), torch.from_numpy(target)) == pytest.approx(ref, abs=1e-6)
    ref5 = skm.structural_similarity(target, pred, data_range=2.0, win_size=5)
    assert ssim(pred, target, data_range=2.0, win_size=5) == pytest.approx(ref5, abs=1e-6)


def test_ssim_slices_is_fastmri_mean_over_slices():
    pred, target = _pair((5, 20, 24), 2)
    target[3] *= 0.2  # slices with different maxima: the volume maximum must be used
    vmax = target.max()
    ref = np.mean(
        [
            skm.structural_similarity(target[i], pred[i], data_range=vmax, win_size=7)
            for i in range(5)
        ]
    )
    assert ssim_slices(pred, target) == pytest.approx(ref, abs=1e-6)
    per_slice_max = np.mean(
        [
            skm.structural_similarity(target[i], pred[i], data_range=target[i].max())
            for i in range(5)
        ]
    )
    assert ssim_slices(pred, target) != pytest.approx(per_slice_max, abs=1e-6)


def test_identical_images():
    _, target = _pair((16, 16), 3)
    assert ssim(target, target) == pytest.approx(1.0)
    assert psnr(target, target) == math.inf
    assert nmse(target, target) == 0.0


def test_hand_cases():
    target = np.array([0.0, 2.0])
    pred = np.array([1.0, 2.0])
    # mse 0.5, data_range 2 -> 10 log10(4 / 0.5)
    assert psnr(pred, target) == pytest.approx(10 * math.log10(8.0))
    t = np.array([1.0, 2.0, 3.0, 4.0])
    p = np.array([1.0, 2.0, 3.0, 5.0])
    assert nmse(p, t) == pytest.approx(1.0 / 30.0)
    assert nmse(torch.tensor(p), torch.tensor(t)) == pytest.approx(1.0 / 30.0)


def test_bad_input():
    with pytest.raises(InputError, match="pred"):
        psnr(np.zeros((4, 4)), np.ones((4, 5)))
    with pytest.raises(InputError, match="win_size"):
        ssim(np.ones((5, 5)), np.ones((5, 5)))
    with pytest.raises(InputError, match="ssim"):
        ssim(np.ones((8,)), np.ones((8,)))
    with pytest.raises(InputError, match="target"):
        nmse(np.ones(3), np.zeros(3))
    with pytest.raises(InputError, match="target.max"):
        psnr(np.ones(3), np.zeros(3))
