"""k-space transforms against numpy.fft, Parseval, layouts, simulation, SR degradation, RSS."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medistill.errors import InputError
from medistill.recon.kspace import (
    change_layout,
    fft2,
    ifft2,
    mask_layout,
    rss,
    simulate,
    sr_degrade,
    sr_mask,
)
from medistill.recon.masks import make_mask


@pytest.fixture
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.standard_normal((3, 12, 10)) + 1j * rng.standard_normal((3, 12, 10))


def test_uncentered_is_numpy_fft2_ortho(image):
    k = fft2(torch.from_numpy(image), "uncentered").numpy()
    np.testing.assert_allclose(k, np.fft.fft2(image, norm="ortho"), atol=1e-10)
    back = ifft2(torch.from_numpy(k), "uncentered").numpy()
    np.testing.assert_allclose(back, image, atol=1e-10)


def test_centered_is_fastmri_fft2c(image):
    want = np.fft.fftshift(
        np.fft.fft2(np.fft.ifftshift(image, axes=(-2, -1)), norm="ortho"), axes=(-2, -1)
    )
    k = fft2(torch.from_numpy(image), "centered").numpy()
    np.testing.assert_allclose(k, want, atol=1e-10)
    np.testing.assert_allclose(ifft2(torch.from_numpy(k)).numpy(), image, atol=1e-10)


def test_centered_dc_at_middle_for_odd_and_even_sizes():
    for shape in [(8, 6), (7, 5)]:
        k = fft2(torch.ones(shape, dtype=torch.float64), "centered").abs().numpy()
        peak = np.unravel_index(np.argmax(k), shape)
        assert peak == (shape[0] // 2, shape[1] // 2)
        assert k[peak] == pytest.approx(np.sqrt(shape[0] * shape[1]))  # orthonormal DC


@pytest.mark.parametrize("layout", ["centered", "uncentered"])
def test_parseval(image, layout):
    k = fft2(torch.from_numpy(image), layout)
    assert float((k.abs() ** 2).sum()) == pytest.approx(float((np.abs(image) ** 2).sum()))


def test_real_input_is_accepted_and_change_layout_round_trips(image):
    x = torch.from_numpy(image.real.astype(np.float32))
    kc = fft2(x, "centered")
    ku = change_layout(kc, "centered", "uncentered")
    np.testing.assert_allclose(ku.numpy(), fft2(x, "uncentered").numpy(), atol=1e-5)
    np.testing.assert_allclose(
        change_layout(ku, "uncentered", "centered").numpy(), kc.numpy(), atol=1e-5
    )


def test_unknown_layout_raises():
    with pytest.raises(InputError, match="layout"):
        fft2(torch.zeros(4, 4), "shifted")


def test_simulate_zeroes_unsampled_lines_and_layouts_agree():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.random((2, 1, 16, 16)))
    mask = make_mask(16, 4, seed=3)
    sim = simulate(x, mask, "centered")
    assert torch.all(sim.kspace[..., ~torch.from_numpy(mask)] == 0)
    full = fft2(x, "centered")
    np.testing.assert_allclose(sim.kspace[..., mask].numpy(), full[..., mask].numpy())
    # the same acquisition expressed in the uncentred layout gives the same zero-filled image
    sim_u = simulate(x, mask_layout(mask, "centered", "uncentered"), "uncentered")
    np.testing.assert_allclose(sim_u.zero_filled.numpy(), sim.zero_filled.numpy(), atol=1e-10)
    # a full mask gives back the image exactly
    np.testing.assert_allclose(
        simulate(x, np.ones(16, bool)).zero_filled.numpy(), x.numpy(), atol=1e-10
    )


def test_simulate_rejects_mask_of_wrong_width():
    with pytest.raises(InputError, match="width"):
        simulate(torch.zeros(1, 1, 8, 8), np.ones(6, bool))


def test_sr_mask_is_kdmri_central_block():
    m = sr_mask(256, 256, 4)
    want = np.zeros((256, 256), bool)
    want[128 - 32 : 128 + 32, 128 - 32 : 128 + 32] = True
    np.testing.assert_array_equal(m, want)


def test_sr_degrade_keeps_low_frequencies_exactly():
    # a constant image and a cosine of frequency 1 live inside the central block: unchanged
    h = w = 32
    jj = np.arange(w)[None, :].repeat(h, 0)
    x = 0.5 + 0.25 * np.cos(2 * np.pi * jj / w)
    out = sr_degrade(torch.from_numpy(x)[None, None], 4)[0, 0].numpy()
    np.testing.assert_allclose(out, x, atol=1e-10)
    # a cosine at a high frequency (8 cycles, outside the central 8x8 block) is removed
    y = 0.5 + 0.25 * np.cos(2 * np.pi * 8 * jj / w)
    np.testing.assert_allclose(sr_degrade(torch.from_numpy(y), 4).numpy(), 0.5, atol=1e-10)


def test_rss_combines_coils():
    coils = np.stack([np.full((3, 3), 3.0 + 0j), np.full((3, 3), 4j)])
    np.testing.assert_allclose(rss(coils, dim=0).numpy(), 5.0)
    last = np.moveaxis(coils, 0, -1)
    np.testing.assert_allclose(rss(last, dim=-1).numpy(), 5.0)
