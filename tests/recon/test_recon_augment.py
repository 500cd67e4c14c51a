"""Training-slice augmentation: off by default, deterministic in the generator, each step as
documented, and applied before k-space simulation (data consistency stays exact)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medistill.errors import InputError
from medistill.recon.augment import augment_slices, invert_foreground
from medistill.recon.config import DataConfig, ReconConfig, presets
from medistill.recon.data import SliceSet
from medistill.recon.dccnn import DCCNN, data_consistency
from medistill.recon.kspace import fft2
from medistill.recon.training import ReconTask
from medistill.train import load_config

SIZE = 32
ONLY = {"aug_gamma": (1.0, 1.0), "aug_invert": 0.0, "aug_bias": 0.0, "aug_noise": 0.0}


def brains(n: int = 4) -> torch.Tensor:
    """``(n, 1, SIZE, SIZE)`` disc phantoms: bright 'white matter', darker rim, a 'ventricle' of
    zeros (a hole in the foreground)."""
    yy, xx = np.mgrid[:SIZE, :SIZE] / (SIZE - 1) * 2 - 1
    out = []
    for i in range(n):
        r = np.hypot(yy - 0.05 * i, xx + 0.1)
        img = 0.6 * (r < 0.8) + 0.4 * (r < 0.5) - 1.0 * (np.hypot(yy - 0.05 * i, xx) < 0.15)
        out.append(img)
    return torch.from_numpy(np.stack(out)[:, None].astype(np.float32))


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_off_by_default_and_in_existing_presets():
    x = brains()
    assert augment_slices(x, DataConfig(), gen(0)) is x
    # on where the recipe asks for it (the pooled preset and the demo), off elsewhere
    for name, path in presets().items():
        cfg = load_config(ReconConfig, path)
        assert cfg.data.augment == (cfg.data.source == "pooled" or name == "demo"), name


def test_deterministic_in_the_generator_and_in_range():
    x = brains()
    cfg = DataConfig(augment=True, aug_invert=0.5)
    a, b, c = (augment_slices(x, cfg, gen(s)) for s in (7, 7, 8))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(x, brains())  # the input is not modified


def test_flips_alone_permute_pixels():
    x = brains(8)
    out = augment_slices(x, DataConfig(augment=True, aug_flip=True, **ONLY), gen(1))
    flips = [x, x.flip(-1), x.flip(-2), x.flip(-1).flip(-2)]
    for i in range(len(x)):
        assert any(torch.equal(out[i], f[i]) for f in flips)
    assert not torch.equal(out, x)  # 8 slices: some flipped


def test_inversion_makes_dark_fluid_bright_inside_the_foreground():
    x = brains(1)
    inv = invert_foreground(x)
    centre, wm, outside = (SIZE // 2, SIZE // 2), (SIZE // 2, SIZE // 2 - 6), (0, 0)
    assert float(x[0, 0][centre]) == 0.0 and float(inv[0, 0][centre]) > 0.99  # filled hole
    assert float(x[0, 0][wm]) == 1.0 and float(inv[0, 0][wm]) < 1e-3  # white matter
    assert float(inv[0, 0][outside]) == 0.0  # background unchanged
    cfg = DataConfig(augment=True, aug_flip=False, **{**ONLY, "aug_invert": 1.0})
    torch.testing.assert_close(augment_slices(x, cfg, gen(0)), inv)


def test_gamma_bias_and_noise_change_intensities_only():
    x = brains(2)
    base = dict(augment=True, aug_flip=False, **ONLY)
    gamma = augment_slices(x, DataConfig(**{**base, "aug_gamma": (2.0, 2.0)}), gen(0))
    torch.testing.assert_close(gamma, x**2)
    bias = augment_slices(x, DataConfig(**{**base, "aug_bias": 0.5}), gen(0))
    assert torch.equal(bias == 0, x == 0) and not torch.allclose(bias, x)
    noisy = augment_slices(x, DataConfig(**{**base, "aug_noise": 0.05}), gen(0))
    assert 0 < float((noisy - x).abs().mean()) < 0.05


def task(augment: bool, acceleration: float = 4.0) -> ReconTask:
    cfg = load_config(
        ReconConfig,
        "test",
        presets=presets(),
        overrides=[
            f"data.size={SIZE}",
            f"data.augment={str(augment).lower()}",
            "data.aug_invert=0.5",
            f"mask.acceleration={acceleration}",
            "model.cascades=2",
            "model.channels=8",
            "loop.batch_size=4",
        ],
    )
    x = brains(6)[:, 0].numpy()
    return ReconTask(cfg, "recon-teacher", SliceSet(x, np.arange(6), [f"b{i}" for i in range(6)]))


def test_augmented_batches_keep_data_consistency_exact():
    aug = task(True).make_batch(5, 0, gen(3))
    plain = task(False).make_batch(5, 0, gen(3))
    assert not torch.equal(aug["target"], plain["target"])  # augmented ...
    m = aug["mask"]
    mask = m.reshape(-1).bool().numpy()
    # ... and the measurement is the augmented target's k-space on the sampled lines, zero elsewhere
    k_target = fft2(aug["target"])
    torch.testing.assert_close(aug["kspace"], k_target * m, rtol=0, atol=1e-6)
    # DC output: the measured lines are kept exactly, whatever the network's estimate
    estimate = torch.rand(aug["target"].shape, generator=gen(4))
    k_dc = m * aug["kspace"] + (1 - m) * fft2(estimate)
    out = data_consistency(estimate, aug["kspace"], m)
    torch.testing.assert_close(k_dc[..., mask], k_target[..., mask], rtol=0, atol=1e-6)
    # through a whole DC-CNN: the real output keeps the measured lines whose mirror is also
    # measured (Hermitian symmetry of a real image's spectrum)
    sym = mask & mask[np.r_[0, SIZE - np.arange(1, SIZE)]]
    torch.manual_seed(0)
    with torch.no_grad():
        net_out = DCCNN(2, 3, 8)(aug["input"], aug["kspace"], m).image
    for image in (out, net_out):
        torch.testing.assert_close(fft2(image)[..., sym], k_target[..., sym], rtol=0, atol=1e-5)
    # fully sampled: the DC-CNN returns the augmented target itself
    full = torch.ones_like(m)
    with torch.no_grad():
        net_full = DCCNN(2, 3, 8)(aug["input"], k_target, full).image
    torch.testing.assert_close(net_full, aug["target"], rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "override,match",
    [
        ("data.aug_gamma=[0, 1.2]", "aug_gamma"),
        ("data.aug_gamma=[1.5, 0.7]", "aug_gamma"),
        ("data.aug_gamma=[1.5]", "aug_gamma"),
        ("data.aug_invert=1.5", "aug_invert"),
        ("data.aug_bias=-0.1", "aug_bias"),
        ("data.aug_noise=.nan", "aug_noise"),
    ],
)
def test_bad_augmentation_settings_raise_one_line(override, match):
    with pytest.raises(InputError, match=match) as err:
        load_config(ReconConfig, "test", presets=presets(), overrides=[override])
    assert "\n" not in str(err.value)
