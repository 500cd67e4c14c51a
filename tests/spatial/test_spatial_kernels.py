"""The fast resampling kernels give the values of the slow references they replace.

``grid_sample`` on every CPU thread equals one ``torch.nn.functional.grid_sample`` call
(values and gradients); ``affine_grid`` equals PyTorch's; linear resampling between grids
(separable for axis-aligned maps, torch for oblique ones) equals scipy's ``affine_transform``;
the field moved between grids is the same either way; percentiles, centres of mass and label
gathers equal numpy's and scipy's.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from medistill.io import Image, WorkingGrid
from medistill.io.geometry import axis_aligned, resample_array, separable_linear
from medistill.kernels import affine_grid, axis_filter, box_mean, box_sum, grid_sample
from medistill.spatial.native import (
    centre_of_mass_mm,
    finish_registration,
    prepare_pair,
    resample_labels,
    robust_percentiles,
)
from medistill.spatial.world import resample_disp_between_grids
from tests.utils import oblique_affine


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("size", [(9, 6, 7), (2, 5, 4), (1, 6, 5), (7, 9)])
def test_grid_sample_on_all_threads_equals_one_call_values_and_gradients(two_threads, size):
    gen = torch.Generator().manual_seed(0)
    nd = len(size)
    image = torch.randn(1, 2, *[s + 2 for s in size], generator=gen, requires_grad=True)
    grid = (torch.rand(1, *size, nd, generator=gen) * 2.4 - 1.2).requires_grad_()
    for mode, padding in (("bilinear", "border"), ("bilinear", "zeros"), ("nearest", "border")):
        ref = F.grid_sample(image, grid, mode=mode, padding_mode=padding, align_corners=True)
        out = grid_sample(image, grid, mode=mode, padding_mode=padding)
        assert out.shape == ref.shape
        assert torch.equal(out, ref)  # the same arithmetic per point: bit for bit
        if mode == "bilinear":
            weights = torch.randn(ref.shape, generator=gen)
            g_ref = torch.autograd.grad((ref * weights).sum(), (image, grid))
            g_out = torch.autograd.grad((out * weights).sum(), (image, grid))
            assert torch.allclose(g_out[0], g_ref[0], atol=1e-5)
            assert torch.equal(g_out[1], g_ref[1])


@pytest.mark.parametrize("size", [(5, 7, 9), (1, 4, 6), (8, 9), (1, 5)])
def test_affine_grid_equals_pytorch(size):
    nd = len(size)
    theta = torch.randn(nd, nd + 1, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with pytest.warns(UserWarning) if 1 in size else _nothing():
        ref = F.affine_grid(theta[None], [1, 1, *size], align_corners=True)
    out = affine_grid(theta, size)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-12)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _scipy(data, m, shape, cval):
    nd = data.ndim
    return ndimage.affine_transform(
        data, m[:nd, :nd], offset=m[:nd, nd], output_shape=shape, order=1, mode="constant",
        cval=cval, prefilter=False,
    )  # fmt: skip


@pytest.mark.parametrize("cval", [0.0, -3.0])
def test_axis_aligned_linear_resampling_equals_scipy(cval):
    rng = np.random.default_rng(0)
    data = rng.random((13, 11, 17)).astype(np.float32)
    for _ in range(5):
        perm, sign = rng.permutation(3), rng.choice([-1.0, 1.0], 3)
        m = np.zeros((3, 4))
        for j in range(3):
            m[perm[j], j] = sign[j] * rng.uniform(0.5, 1.6)
        m[:, 3] = rng.uniform(-3, 14, 3)
        assert axis_aligned(m) == [int(np.flatnonzero(m[i, :3])[0]) for i in range(3)]
        out = separable_linear(data, m, (10, 12, 9), cval=cval)
        ref = _scipy(data, m, (10, 12, 9), cval)
        assert np.abs(out - ref).max() < 1e-5
        assert ((out == cval) == (ref == cval)).all()  # the same points count as outside


def test_axis_aligned_2d_and_oblique_detection():
    data = np.random.default_rng(1).random((20, 30)).astype(np.float32)
    m = np.array([[0.0, 1.3, 2.0], [0.8, 0.0, -5.0]])
    assert axis_aligned(m) == [1, 0]
    assert np.abs(separable_linear(data, m, (16, 18)) - _scipy(data, m, (16, 18), 0.0)).max() < 1e-5
    assert axis_aligned(np.array([[0.7, 0.7, 0, 0], [0, 0, 1.0, 0], [0.7, -0.7, 0, 0]])) is None


@pytest.mark.parametrize("cval", [0.0, -2.0])
def test_oblique_linear_resampling_equals_scipy(two_threads, cval):
    rng = np.random.default_rng(2)
    data = rng.random((23, 19, 21)).astype(np.float32)
    src = oblique_affine()
    dst = np.diag([1.7, 1.7, 1.7, 1.0])
    dst[:3, 3] = [-25.0, -20.0, -30.0]
    m = np.linalg.inv(src) @ dst
    assert axis_aligned(m[:3]) is None
    out = resample_array(data, src, dst, (24, 26, 22), cval=cval)
    ref = _scipy(data, m, (24, 26, 22), cval)
    assert out.dtype == np.float32
    assert 0 < (ref == cval).sum() < ref.size  # part of the grid falls outside the data
    assert np.abs(out - ref).max() < 1e-4
    assert ((out == cval) == (ref == cval)).all()


def test_field_moved_between_grids_is_the_same_separable_or_not(monkeypatch):
    import sys

    world = sys.modules["medistill.spatial.world"]
    gen = torch.Generator().manual_seed(3)
    disp = torch.randn(1, 3, 12, 10, 14, generator=gen) * 2
    src = np.diag([2.0, 2.0, 2.0, 1.0])
    src[:3, 3] = [-10.0, -8.0, -12.0]
    dst = np.array([[0, -1.5, 0, 6.0], [0, 0, 1.8, -9.0], [-1.6, 0, 0, 11.0], [0, 0, 0, 1]])
    fast = resample_disp_between_grids(disp, src, dst, (15, 13, 11))
    monkeypatch.setattr(world, "separable_weights", lambda *a, **k: None)
    slow = resample_disp_between_grids(disp, src, dst, (15, 13, 11))
    assert fast.shape == slow.shape == (1, 3, 15, 13, 11)
    assert (fast - slow).abs().max() < 1e-4


def test_percentiles_centre_of_mass_and_nearest_labels_equal_the_references():
    rng = np.random.default_rng(4)
    data = (rng.random((31, 27, 33)) ** 3 * 500).astype(np.float32)
    data[:5] = 0
    q = [0, 0.5, 1, 50, 99, 99.5, 100]
    assert np.allclose(robust_percentiles(data, q), np.percentile(data, q), rtol=1e-12)
    image = Image(data, oblique_affine(), False, "x")
    lo, hi = np.percentile(data, [1, 99])
    weights = np.clip(np.minimum(data, hi) - (lo + 0.05 * (hi - lo)), 0, None)
    ref = image.index_to_world(np.array(ndimage.center_of_mass(weights))[None])[0]
    assert np.abs(centre_of_mass_mm(image) - ref).max() < 1e-6
    # nearest labels: the value at the rounded coordinate (clamped), 0 beyond half a voxel
    labels = rng.integers(0, 60, size=(9, 8, 10)).astype(np.int32) * 1000
    coords = rng.uniform(-1.2, 10.2, size=(3, 6, 7, 5)).astype(np.float32)
    out = resample_labels(labels, coords)
    idx = [np.clip(np.rint(coords[a]).astype(int), 0, s - 1) for a, s in enumerate(labels.shape)]
    expect = labels[idx[0], idx[1], idx[2]]
    outside = np.zeros(coords.shape[1:], bool)
    for a, s in enumerate(labels.shape):
        outside |= (coords[a] < -0.5) | (coords[a] > s - 0.5)
    expect[outside] = 0
    assert outside.any() and (~outside).any()
    assert np.array_equal(out, expect)


def _pair():
    rng = np.random.default_rng(5)
    data = np.zeros((20, 22, 18), np.float32)
    data[4:16, 5:17, 3:15] = rng.random((12, 12, 12)) + 1
    labels = np.zeros(data.shape, np.int32)
    labels[4:16, 5:17, 3:15] = 3
    labels[8:12, 9:13, 6:10] = 7
    fixed = Image(data, oblique_affine(angle=0.2), False, "fixed")
    moving = Image(np.roll(data, 2, axis=0), oblique_affine(angle=0.25), False, "moving")
    mlabels = Image(np.roll(labels, 2, axis=0), moving.affine, True, "labels")
    return fixed, moving, mlabels


def test_outputs_not_asked_for_are_not_computed_and_the_rest_is_unchanged(tmp_path):
    fixed, moving, labels = _pair()
    grid = WorkingGrid.around(fixed, (16, 16, 16))
    pair = prepare_pair(fixed, moving, grid)
    disp = torch.randn(1, 3, 16, 16, 16, generator=torch.Generator().manual_seed(6)) * 0.7
    full = finish_registration(pair, disp, fixed, moving, moving_labels=labels)
    only = finish_registration(
        pair, disp, fixed, moving, moving_labels=labels, outputs=("warped_labels",)
    )
    assert only.warped is None and only.jacobian is None
    assert np.array_equal(only.warped_labels.data, full.warped_labels.data)
    assert np.array_equal(only.disp_voxel, full.disp_voxel)
    assert set(np.unique(full.warped_labels.data)) <= {0, 3, 7}
    assert full.warped is not None and full.jacobian is not None
    written = only.save(tmp_path / "a", outputs=("warped_labels", "disp_mm"))
    assert [p.name for p in written] == ["warped_labels.nii.gz", "disp_mm.nii.gz"]
    with pytest.raises(ValueError, match="did not compute warped"):
        only.save(tmp_path / "b", outputs=("warped",))


@pytest.mark.parametrize("downsample", [1, 2])
def test_cascade_displacement_equals_forward(downsample):
    from medistill.nets import build_student

    torch.manual_seed(0)
    net = build_student(2, ndim=3, downsample=downsample).eval()
    fixed, moving = torch.rand(1, 1, 32, 32, 32), torch.rand(1, 1, 32, 32, 32)
    with torch.inference_mode():
        assert torch.equal(net.displacement(fixed, moving), net(fixed, moving).disp)


@pytest.mark.parametrize("window", [1, 3, 5, 9])
@pytest.mark.parametrize("size", [(7, 5, 6), (9, 4), (2, 3, 11)])
def test_box_mean_equals_average_pooling(window, size):
    """Separable box sums give PyTorch's average pooling (with and without the padding counted),
    values and gradients, in 2-D and 3-D, also where the window is larger than an axis."""
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, *size, generator=gen, dtype=torch.float64)
    pool = F.avg_pool3d if len(size) == 3 else F.avg_pool2d
    weights = torch.rand(2, 3, *size, generator=gen, dtype=torch.float64)
    r = window // 2
    for include in (False, True):
        a = x.clone().requires_grad_()
        b = x.clone().requires_grad_()
        # the reference pads explicitly, so that pooling accepts windows longer than an axis
        ref = pool(F.pad(a, [r] * 2 * len(size)), window, stride=1)
        if not include:
            ones = F.pad(torch.ones_like(x), [r] * 2 * len(size))
            ref = ref / pool(ones, window, stride=1)
        if window <= min(size):  # and PyTorch's own count of the padding, where it takes it
            direct = pool(x, window, stride=1, padding=r, count_include_pad=include)
            torch.testing.assert_close(direct, ref.detach(), rtol=1e-12, atol=1e-12)
        out = box_mean(b, window, include_pad=include)
        assert out.shape == x.shape
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
        (ref * weights).sum().backward()
        (out * weights).sum().backward()
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-12, atol=1e-12)
    sums = box_sum(x, window)
    torch.testing.assert_close(sums, box_mean(x, window, include_pad=True) * window ** len(size))


def test_box_mean_of_half_precision_is_computed_in_float32():
    """Half-precision inputs come back in their dtype, rounded once (not once per sum)."""
    x = torch.rand(1, 1, 12, 12, 12, generator=torch.Generator().manual_seed(2))
    for dtype in (torch.float16, torch.bfloat16):
        out = box_mean(x.to(dtype), 9)
        assert out.dtype == dtype
        ref = box_mean(x.to(dtype).float(), 9).to(dtype)
        assert torch.equal(out, ref)


def test_box_sum_known_values_and_bad_window():
    """A unit impulse spreads over exactly one window-sized box; an even window is refused."""
    x = torch.zeros(1, 1, 7, 7, 7)
    x[0, 0, 3, 3, 3] = 1.0
    out = box_sum(x, 3)
    assert out.sum().item() == pytest.approx(27.0)
    assert out[0, 0, 2:5, 2:5, 2:5].min().item() == 1.0
    assert out[0, 0, 1, 3, 3].item() == 0.0
    with pytest.raises(ValueError, match="odd"):
        box_sum(x, 4)


def test_axis_filter_known_kernel_and_padding():
    """A 3-tap kernel along one axis: an impulse takes the kernel's (flipped-free, centred)
    values; a constant stays constant with replicate padding and loses its border share with
    zero padding; the other axes are untouched; an even kernel is refused."""
    x = torch.zeros(1, 1, 5, 4, 3)
    x[0, 0, 2, 1, 1] = 1.0
    out = axis_filter(x, 2, [0.25, 0.5, 0.125])
    # out[i] = 0.25 x[i-1] + 0.5 x[i] + 0.125 x[i+1]
    assert out[0, 0, :, 1, 1].tolist() == [0.0, 0.125, 0.5, 0.25, 0.0]
    assert out.sum().item() == pytest.approx(0.875)
    ones = torch.ones(1, 2, 4, 6)
    rep = axis_filter(ones, 3, [0.2, 0.6, 0.2], padding="replicate")
    torch.testing.assert_close(rep, ones)
    zer = axis_filter(ones, 3, [0.2, 0.6, 0.2])
    assert zer[0, 0, 0].tolist() == pytest.approx([0.8, 1.0, 1.0, 1.0, 1.0, 0.8])
    with pytest.raises(ValueError, match="odd"):
        axis_filter(ones, 2, [0.5, 0.5])
