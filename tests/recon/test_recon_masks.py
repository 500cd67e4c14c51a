"""Cartesian line masks: acceleration, centre lines, determinism, validation, .npy round trip."""

from __future__ import annotations

import numpy as np
import pytest

from medistill.errors import InputError
from medistill.recon.config import MaskConfig
from medistill.recon.masks import (
    acceleration_of,
    center_lines,
    check_mask,
    default_center_fraction,
    load_mask,
    make_mask,
    save_mask,
)
from medistill.recon.model import run_mask


@pytest.mark.parametrize("acc,lines", [(4, 64), (5, 51), (8, 32)])
def test_random_mask_has_exact_line_count(acc, lines):
    m = make_mask(256, acc, kind="random", seed=0)
    assert m.shape == (256,) and m.dtype == bool
    assert m.sum() == lines
    assert acceleration_of(m) == pytest.approx(acc, rel=0.02)


@pytest.mark.parametrize("kind", ["random", "equispaced", "fastmri-random"])
@pytest.mark.parametrize("acc", [4, 5, 8])
def test_every_kind_has_the_fastmri_centre(kind, acc):
    m = make_mask(256, acc, kind=kind, seed=1)
    n = round(256 * 0.32 / acc)  # 20 lines at 4x, 10 at 8x (fastMRI 0.08 / 0.04)
    pad = (256 - n + 1) // 2
    assert m[pad : pad + n].all()
    assert m[128]  # DC line in the centred layout
    np.testing.assert_array_equal(center_lines(256, 0.32 / acc), np.arange(pad, pad + n))
    assert acceleration_of(m) == pytest.approx(acc, rel=0.2)


def test_equispaced_lines_have_constant_spacing_outside_the_centre():
    w, acc, n = 256, 8, 10
    m = make_mask(w, acc, kind="equispaced", seed=0, center_fraction=n / w)
    centre = center_lines(w, n / w)
    outer = np.array([i for i in np.flatnonzero(m) if i not in set(centre)])
    step = acc * (n - w) / (n * acc - w)  # fastMRI's adjusted acceleration, 11.18 here
    gaps = np.diff(outer)
    across = (outer[:-1] < centre[0]) & (outer[1:] > centre[-1])
    assert set(np.unique(gaps[~across])) <= {int(np.floor(step)), int(np.ceil(step))}
    assert acceleration_of(m) == pytest.approx(acc, rel=0.1)


def test_masks_are_deterministic_in_the_seed():
    for kind in ("random", "equispaced", "fastmri-random"):
        np.testing.assert_array_equal(
            make_mask(128, 4, kind=kind, seed=5), make_mask(128, 4, kind=kind, seed=5)
        )
    assert not np.array_equal(make_mask(128, 4, seed=5), make_mask(128, 4, seed=6))


def test_make_mask_rejects_bad_arguments():
    with pytest.raises(InputError, match="kind"):
        make_mask(64, 4, kind="radial")
    with pytest.raises(InputError, match="acceleration"):
        make_mask(64, 0.5)
    with pytest.raises(InputError, match="center_fraction"):
        make_mask(64, 4, center_fraction=1.5)


def test_check_mask_accepts_1d_2d_and_uncentred():
    m = make_mask(16, 4)
    assert check_mask(m.astype(np.float32), (8, 16)).dtype == bool
    assert check_mask(np.tile(m, (8, 1)), (8, 16)).shape == (8, 16)
    assert check_mask(m[None, :].astype(np.uint8), (8, 16)).shape == (16,)
    assert check_mask(np.fft.ifftshift(m), (8, 16), layout="uncentered").sum() == m.sum()


@pytest.mark.parametrize(
    "mask,shape,match",
    [
        (np.ones(10), (8, 16), "does not fit"),
        (np.full(16, 0.5), (8, 16), "only 0 and 1"),
        (np.where(np.arange(16) == 3, np.nan, 1.0), (8, 16), "NaN"),
        (np.where(np.arange(16) == 8, 0, 1), (8, 16), "centre"),
    ],
)
def test_check_mask_rejects_bad_masks_with_one_line(mask, shape, match):
    with pytest.raises(InputError, match=match) as err:
        check_mask(mask, shape)
    assert "\n" not in str(err.value)


def test_uncentred_mask_needs_line_zero():
    m = np.ones(16)
    m[0] = 0
    with pytest.raises(InputError, match="centre"):
        check_mask(m, (8, 16), layout="uncentered")


def test_save_and_load_round_trip(tmp_path):
    m = make_mask(32, 5, seed=2)
    save_mask(tmp_path / "m.npy", m)
    np.testing.assert_array_equal(load_mask(tmp_path / "m.npy", (32, 32)), m)
    save_mask(tmp_path / "u.npy", m, layout="uncentered")
    u = load_mask(tmp_path / "u.npy", (32, 32), layout="uncentered")
    np.testing.assert_array_equal(u, np.fft.ifftshift(m))
    with pytest.raises(InputError, match="no such"):
        load_mask(tmp_path / "missing.npy", (32, 32))
    (tmp_path / "bad.npy").write_text("not numpy")
    with pytest.raises(InputError, match="cannot read"):
        load_mask(tmp_path / "bad.npy", (32, 32))


@pytest.mark.parametrize(
    "acc,fraction,lines",
    [(4, 0.08, {128: 10, 256: 20}), (5, 0.064, {128: 8, 256: 16}), (8, 0.04, {128: 5, 256: 10})],
)
def test_run_mask_has_stated_acceleration_and_centre(acc, fraction, lines):
    """The mask a run uses (default centre fraction) at the run sizes 128 and 256."""
    assert default_center_fraction(acc) == pytest.approx(fraction)
    for width, n in lines.items():
        m = run_mask(MaskConfig(acceleration=acc, kind="random", seed=3), (width, width))
        assert m.shape == (width,) and m.sum() == round(width / acc)
        assert acceleration_of(m) == pytest.approx(acc, rel=0.02)
        # a contiguous, fully sampled block of n = round(W * fraction) lines holding DC
        assert round(width * fraction) == n
        pad = (width - n + 1) // 2
        assert m[pad : pad + n].all() and pad <= width // 2 < pad + n
        np.testing.assert_array_equal(center_lines(width, fraction), np.arange(pad, pad + n))
