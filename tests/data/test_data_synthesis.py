"""Tests of medistill.data.synthesis: synthesis from labels, augmentation, pairs, aseg mapping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from medistill.data.synthesis import (
    ASEG_TO_TISSUE,
    TISSUE_TO_OASIS,
    SynthPairGenerator,
    aseg_to_tissue,
    gaussian_blur,
    map_labels,
    random_bias_field,
    random_intensity_augment,
    strip_extracerebral,
    synth_image_from_labels,
    tissue_to_oasis,
)
from medistill.errors import InputError
from medistill.io import Image

PLAIN = dict(
    std_range=(0.0, 0.0),
    blur_sigma=(0.0, 0.0),
    bias_strength=0.0,
    noise_std=(0.0, 0.0),
    gamma_range=(1.0, 1.0),
)
"""Synthesis settings that leave only the per-label means (a deterministic image)."""


def blocks(shape: tuple[int, ...], values=(0, 5, 17, 530)) -> torch.Tensor:
    """A (1, 1, *shape) label map: slabs along the first axis with the given values."""
    lab = torch.zeros((1, 1, *shape), dtype=torch.int64)
    edges = np.linspace(0, shape[0], len(values) + 1).astype(int)
    for v, a, b in zip(values, edges[:-1], edges[1:], strict=True):
        lab[:, :, a:b] = v
    return lab


def ball_labels(shape=(24, 28, 20)) -> torch.Tensor:
    """Nested ellipsoids 0 < 3 < 2 < 4 (a brain-like onion), (1, 1, *shape) int64."""
    idx = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    r = np.sqrt((((idx - (np.asarray(shape) - 1) / 2) / (np.asarray(shape) / 2)) ** 2).sum(-1))
    lab = np.select([r < 0.3, r < 0.55, r < 0.8], [4, 2, 3], 0)
    return torch.as_tensor(lab)[None, None]


# ----------------------------------------------------------------------------- synthesis
@pytest.mark.parametrize("shape", [(20, 24, 16), (40, 36)])
def test_synth_shape_range_dtype(shape):
    lab = blocks(shape).expand(2, 1, *shape).clone()
    img = synth_image_from_labels(lab, generator=torch.Generator().manual_seed(0))
    assert img.shape == lab.shape and img.dtype == torch.float32
    assert float(img.min()) == pytest.approx(0.0, abs=1e-6)
    assert float(img.max()) == pytest.approx(1.0, abs=1e-6)
    # batch elements get their own parameters
    assert not torch.allclose(img[0], img[1])


def test_synth_deterministic_with_generator():
    lab = ball_labels()
    a = synth_image_from_labels(lab, generator=torch.Generator().manual_seed(3))
    b = synth_image_from_labels(lab, generator=torch.Generator().manual_seed(3))
    c = synth_image_from_labels(lab, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 0.01


def test_synth_plain_is_minmax_of_means():
    lab = blocks((8, 6, 5))
    img = synth_image_from_labels(lab, means={0: 0.2, 5: 0.6, 17: 1.0, 530: 0.4}, **PLAIN)
    expected = {0: 0.0, 5: 0.5, 17: 1.0, 530: 0.25}
    for v, e in expected.items():
        vals = img[lab == v]
        assert torch.allclose(vals, torch.full_like(vals, e), atol=1e-6)


def test_synth_labels_get_different_intensities():
    lab = ball_labels()
    img = synth_image_from_labels(lab, generator=torch.Generator().manual_seed(0))
    means = [float(img[lab == v].mean()) for v in (0, 2, 3, 4)]
    gaps = np.abs(np.subtract.outer(means, means))[np.triu_indices(4, 1)]
    assert gaps.min() > 0.02, means
    # without blur/noise every label is exactly one intensity, and they are all distinct
    plain = synth_image_from_labels(lab, generator=torch.Generator().manual_seed(0), **PLAIN)
    per_label = [plain[lab == v] for v in (0, 2, 3, 4)]
    assert all(float(p.max() - p.min()) < 1e-6 for p in per_label)
    assert len({round(float(p[0]), 5) for p in per_label}) == 4


def test_synth_zero_background_and_gamma_keeps_range():
    lab = ball_labels()
    img = synth_image_from_labels(
        lab,
        generator=torch.Generator().manual_seed(1),
        zero_background=True,
        mean_range=(0.3, 1.0),
        **{**PLAIN, "gamma_range": (0.5, 2.0)},
    )
    assert float(img[lab == 0].abs().max()) == 0.0
    assert float(img.max()) == pytest.approx(1.0)


def test_synth_rejects_bad_input():
    with pytest.raises(InputError, match="labels"):
        synth_image_from_labels(torch.zeros(4, 4, dtype=torch.int64))
    with pytest.raises(InputError, match="std_range"):
        synth_image_from_labels(blocks((8, 8)), std_range=(0.2, 0.1))


def test_gaussian_blur_matches_scipy():
    rng = np.random.default_rng(0)
    x = rng.random((10, 12, 9)).astype(np.float64)
    for sigma in (1.0, (2.0, 0.0, 1.0)):
        ours = gaussian_blur(torch.as_tensor(x)[None, None], sigma)[0, 0].numpy()
        ref = ndimage.gaussian_filter(x, sigma, mode="nearest", truncate=3.0)
        np.testing.assert_allclose(ours, ref, atol=1e-10)


def test_bias_field_positive_smooth_and_off():
    g = torch.Generator().manual_seed(0)
    field = random_bias_field((32, 32, 32), batch=2, strength=0.5, generator=g)
    assert field.shape == (2, 1, 32, 32, 32) and bool((field > 0).all())
    log = field.log()
    # low-resolution field: neighbouring voxels differ much less than the field varies
    assert float(log.diff(dim=2).abs().max()) < 0.2 * float(log.max() - log.min())
    assert torch.equal(random_bias_field((8, 8), strength=0.0), torch.ones(1, 1, 8, 8))


def test_intensity_augment_range_background_identity():
    lab = ball_labels()
    image = torch.where(lab > 0, lab.float() / 4, torch.zeros(()))
    out = random_intensity_augment(
        image, generator=torch.Generator().manual_seed(0), noise_std=(0.05, 0.05)
    )
    assert out.shape == image.shape and 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert float(out[lab == 0].abs().max()) == 0.0
    assert (out - image).abs().mean() > 1e-3
    off = random_intensity_augment(
        image, bias_strength=0.0, gamma_range=(1.0, 1.0), noise_std=(0.0, 0.0)
    )
    assert torch.equal(off, image)
    # gamma alone is x ** gamma
    g = random_intensity_augment(
        image, bias_strength=0.0, gamma_range=(2.0, 2.0), noise_std=(0.0, 0.0)
    )
    assert torch.allclose(g, image**2, atol=1e-6)


# ----------------------------------------------------------------------------- label mapping
def test_aseg_to_tissue_known_values():
    known = {
        0: 0, 2: 3, 41: 3, 7: 3, 16: 3, 251: 3, 3: 2, 42: 2, 8: 2, 10: 2, 17: 2, 53: 2, 4: 1,
        43: 1, 14: 1, 24: 1, 136: 1, 25: 3, 507: 0, 516: 0, 1024: 2, 2035: 2, 3001: 3, 999: 0,
    }  # fmt: skip
    values = np.array(list(known))
    expected = np.array(list(known.values()))
    np.testing.assert_array_equal(aseg_to_tissue(values), expected)
    as_tensor = aseg_to_tissue(torch.as_tensor(values).view(1, 1, -1, 1))
    assert as_tensor.shape == (1, 1, values.size, 1)
    np.testing.assert_array_equal(as_tensor.view(-1).numpy(), expected)
    img = aseg_to_tissue(Image(values.reshape(-1, 1).astype(np.float32), is_label=True))
    assert isinstance(img, Image) and img.is_label
    np.testing.assert_array_equal(img.data.ravel(), expected)


def test_map_labels_default_and_oasis():
    lab = np.array([0, 1, 2, 3, 7])
    np.testing.assert_array_equal(map_labels(lab, {1: 9}), [0, 9, 2, 3, 7])
    np.testing.assert_array_equal(map_labels(lab, {1: 9}, default=0), [0, 9, 0, 0, 0])
    np.testing.assert_array_equal(tissue_to_oasis(lab[:4]), [0, 1, 1, 2])
    assert set(TISSUE_TO_OASIS.values()) == {0, 1, 2}


@pytest.mark.shared_data
def test_aseg_tables_cover_real_label_maps(shared_data):
    nib = pytest.importorskip("nibabel")
    seg = np.asarray(nib.load(shared_data / "labelmaps" / "training_seg_01.nii.gz").dataobj)
    seg = seg[::4, ::4, ::4]
    npz = np.load(shared_data / "brain3d" / "vxm_subject.npz")
    vxm, vol = npz["seg"][::2, ::2, ::2], npz["vol"][::2, ::2, ::2]
    for name, lab in (("SynthSeg map", seg), ("vxm aseg", vxm)):
        values = {int(v) for v in np.unique(lab)}
        unknown = {v for v in values if v not in ASEG_TO_TISSUE and v < 500}
        assert not unknown, f"{name}: labels without a tissue class: {unknown}"
        tissue = aseg_to_tissue(lab)
        assert set(np.unique(tissue)) == {0, 1, 2, 3}, name
        # cerebral WM and cortex dominate their classes
        assert (tissue[lab == 2] == 3).all() and (tissue[lab == 3] == 2).all()
        assert ((tissue == 2).sum() > (tissue == 1).sum()) and (
            (tissue == 3).sum() > 0.1 * lab.size / 30
        )
    # on the real T1 image the mapped classes have T1 contrast: CSF < GM < WM
    tissue = aseg_to_tissue(vxm)
    means = [float(vol[tissue == k].mean()) for k in (1, 2, 3)]
    assert means[0] < means[1] < means[2], means
    # the extra-cerebral classes of the SynthSeg maps (>= 500) become background
    assert (aseg_to_tissue(seg)[seg >= 500] == 0).all()


# ----------------------------------------------------------------------------- pair generator
def test_pair_generator_shapes_types_and_label_sets():
    lab = ball_labels()
    lab[lab == 2] = 530  # non-contiguous values survive
    gen = SynthPairGenerator([lab[0, 0], lab[0]], max_disp=3.0)
    s = gen.sample(torch.Generator().manual_seed(0))
    assert set(s) == {"fixed", "moving", "fixed_labels", "moving_labels"}
    for key in ("fixed", "moving"):
        assert s[key].shape == (1, *lab.shape[2:]) and s[key].dtype == torch.float32
        assert 0.0 <= float(s[key].min()) and float(s[key].max()) <= 1.0
    for key in ("fixed_labels", "moving_labels"):
        assert s[key].shape == (1, *lab.shape[2:]) and s[key].dtype == torch.int64
        assert set(s[key].unique().tolist()) <= {0, 3, 4, 530}
    assert not torch.equal(s["fixed"], s["moving"])


@pytest.mark.parametrize("interp", ["nearest", "onehot"])
def test_pair_generator_deforms_and_zero_disp_is_identity(interp):
    lab = ball_labels()
    moved = SynthPairGenerator([lab], max_disp=4.0, label_interp=interp)
    s = moved.sample(torch.Generator().manual_seed(1))
    changed = (s["fixed_labels"] != lab[0]).float().mean()
    assert 0.01 < float(changed) < 0.5
    assert not torch.equal(s["fixed_labels"], s["moving_labels"])
    assert set(s["fixed_labels"].unique().tolist()) == {0, 2, 3, 4}
    still = SynthPairGenerator([lab], max_disp=0.0, label_interp=interp)
    s0 = still.sample(torch.Generator().manual_seed(1))
    assert torch.equal(s0["fixed_labels"], lab[0]) and torch.equal(s0["moving_labels"], lab[0])


def test_pair_images_follow_their_deformed_labels():
    lab = ball_labels()
    means = {0: 0.0, 2: 0.5, 3: 0.25, 4: 1.0}
    gen = SynthPairGenerator([lab], max_disp=4.0, synth_kwargs=dict(means=means, **PLAIN))
    s = gen.sample(torch.Generator().manual_seed(2))
    for name in ("fixed", "moving"):
        expected = synth_image_from_labels(s[f"{name}_labels"][None], means=means, **PLAIN)[0]
        assert torch.allclose(s[name], expected, atol=1e-6)


def test_pair_generator_shared_contrast():
    lab = blocks((16, 8, 8), values=(0, 5, 17, 40))[0]
    for shared in (True, False):
        gen = SynthPairGenerator([lab], max_disp=0.0, synth_kwargs=PLAIN, shared_contrast=shared)
        s = gen.sample(torch.Generator().manual_seed(3))
        # same labels (no deformation): equal images iff both got the same contrast
        assert torch.equal(s["fixed_labels"], s["moving_labels"])
        assert torch.allclose(s["fixed"], s["moving"], atol=1e-6) == shared


def test_pair_generator_deterministic_merge_and_iteration():
    maps = [ball_labels(), torch.flip(ball_labels(), dims=(2,))]
    merge = {2: 1, 3: 1, 4: 2}
    gen = SynthPairGenerator(maps, merge=merge, max_disp=2.0, seed=5, length=3, distinct=True)
    a = gen.sample(torch.Generator().manual_seed(9))
    b = gen.sample(torch.Generator().manual_seed(9))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert set(a["fixed_labels"].unique().tolist()) == {0, 1, 2}
    first, second = list(gen), list(gen)
    assert len(first) == 3 == len(gen)
    assert all(torch.equal(x[k], y[k]) for x, y in zip(first, second, strict=True) for k in x)
    assert not torch.equal(first[0]["fixed"], first[1]["fixed"])


def test_pair_generator_with_aseg_merge_2d_and_images():
    rng = np.random.default_rng(0)
    aseg = rng.choice([0, 2, 3, 4, 507], size=(24, 20))
    aseg = ndimage.median_filter(aseg, 5)
    gen = SynthPairGenerator([Image(aseg, is_label=True)], merge=aseg_to_tissue, max_disp=2.0)
    s = gen.sample(torch.Generator().manual_seed(0))
    assert s["fixed"].shape == (1, 24, 20)
    assert set(s["fixed_labels"].unique().tolist()) <= {0, 1, 2, 3}


def test_pair_generator_rejects_bad_input():
    with pytest.raises(InputError, match="shape"):
        SynthPairGenerator([torch.zeros(8, 8, 8), torch.zeros(8, 8, 9)])
    with pytest.raises(InputError, match="empty"):
        SynthPairGenerator([])
    with pytest.raises(InputError, match="label_interp"):
        SynthPairGenerator([torch.zeros(8, 8)], label_interp="linear")


def test_strip_extracerebral_keeps_only_brain_labels():
    labels = np.array([[0, 2, 3, 24], [502, 530, 41, 1035]])
    np.testing.assert_array_equal(
        strip_extracerebral(labels), np.array([[0, 2, 3, 0], [0, 0, 41, 1035]])
    )
    assert labels[0, 3] == 24  # the input is not modified


def test_random_deform_moves_image_and_labels_with_one_field():
    from medistill.data.synthesis import random_deform

    labels = torch.zeros(1, 24, 24, dtype=torch.int64)
    labels[:, 6:18, 8:16] = 3
    image = labels.float() / 3
    gen = torch.Generator().manual_seed(0)
    moved_image, moved_nearest = random_deform(
        [(image, "linear"), (labels, "nearest")], gen, max_disp=3.0
    )
    assert moved_nearest.dtype == torch.int64 and set(moved_nearest.unique().tolist()) <= {0, 3}
    assert not torch.equal(moved_nearest, labels)
    # the same field for both: the image's half level follows the label boundary
    assert ((moved_image > 0.5) == (moved_nearest == 3)).float().mean() > 0.97
    gen = torch.Generator().manual_seed(0)
    (onehot,) = random_deform([(labels, "onehot")], gen, max_disp=3.0)
    assert (onehot == moved_nearest).float().mean() > 0.97


def test_random_deform_at_zero_returns_inputs_and_draws_only_when_asked():
    from medistill.data.synthesis import random_deform

    x = torch.rand(1, 8, 8)
    a, b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    assert random_deform([(x, "linear")], a, max_disp=0.0)[0] is x
    assert random_deform([(x, "linear")], b, max_disp=0.0, draw_at_zero=True)[0] is x
    assert not torch.equal(torch.rand(3, generator=a), torch.rand(3, generator=b))
    with pytest.raises(InputError, match="interpolation"):
        random_deform([(x, "cubic")], a, max_disp=1.0)


def test_synth_t1_like_is_importable_from_the_task_module_and_data():
    from medistill.data.synthesis import synth_t1_like
    from medistill.labeltransfer.data import synth_t1_like as task_synth

    assert task_synth is synth_t1_like


def test_synth_t2_like_reverses_the_t1_tissue_order():
    from medistill.data.synthesis import synth_t1_like, synth_t2_like

    tissue = torch.zeros(1, 1, 48, 48, dtype=torch.int64)
    for k, value in enumerate((1, 2, 3, 1, 2, 3)):  # CSF, GM, WM
        tissue[..., 6:42, 6 + 6 * k : 12 + 6 * k] = value
    t1 = synth_t1_like(tissue, torch.Generator().manual_seed(0), scheme="tissue")
    t2 = synth_t2_like(tissue, torch.Generator().manual_seed(0), scheme="tissue")
    assert t1[tissue == 1].mean() < t1[tissue == 2].mean() < t1[tissue == 3].mean()
    assert t2[tissue == 1].mean() > t2[tissue == 2].mean() > t2[tissue == 3].mean()
    assert float(t2[tissue == 0].abs().max()) == 0.0
