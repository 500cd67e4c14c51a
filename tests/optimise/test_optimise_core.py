"""The batched optimiser recovers known transforms: affine to 0.1 voxel, a smooth field well
below a voxel, a translation from labels alone; SVF does not fold; batching and repeats agree."""

from __future__ import annotations

import math

import pytest
import torch

from medistill.data.synthesis import gaussian_blur
from medistill.errors import InputError
from medistill.optimise import OptimiseConfig, optimise
from medistill.optimise.core import compose_affine_field
from medistill.spatial import identity_grid, jacobian_det, random_smooth_disp, resample, warp

SHAPE = (40, 40, 40)


def _phantom(shape=SHAPE) -> torch.Tensor:
    """A smooth asymmetric 'head': nested ellipsoids with off-centre blobs, values in [0, 1]."""
    x = identity_grid(shape, dtype=torch.float32)
    c = torch.tensor([(s - 1) / 2 for s in shape]).view(3, 1, 1, 1)
    r = ((x - c) / torch.tensor([14.0, 12.0, 10.0]).view(3, 1, 1, 1)).pow(2).sum(0)
    img = torch.sigmoid((1 - r) * 8) * 0.5
    for centre, width, value in (
        ((14, 22, 18), 4.0, 0.5),
        ((25, 15, 22), 3.0, 0.4),
        ((20, 26, 14), 2.5, 0.3),
        ((18, 16, 26), 3.5, -0.3),
    ):
        d = ((x - torch.tensor(centre, dtype=torch.float32).view(3, 1, 1, 1)) / width).pow(2)
        img = img + value * torch.exp(-d.sum(0))
    return img.clamp(0, 1)[None, None]


def _textured(shape=SHAPE) -> torch.Tensor:
    """The phantom with a smooth random texture inside, so that every region constrains a field."""
    g = torch.Generator().manual_seed(11)
    noise = gaussian_blur(torch.rand(1, 1, *shape, generator=g), 1.5)
    noise = (noise - noise.mean()) / noise.std()
    base = _phantom(shape)
    return (base + 0.15 * noise * (base > 0.1)).clamp(0, 1)


def _affine_cfg() -> OptimiseConfig:
    cfg = OptimiseConfig()
    cfg.deformable.kind = "none"
    cfg.affine.levels = (4, 2, 1)
    cfg.affine.iterations = (80, 80, 60)
    return cfg


def test_known_affine_is_recovered_to_a_tenth_of_a_voxel():
    torch.manual_seed(0)
    fixed = _phantom()
    ang = math.radians(5)
    rot = torch.tensor(
        [[1, 0, 0], [0, math.cos(ang), -math.sin(ang)], [0, math.sin(ang), math.cos(ang)]]
    )
    lin = rot @ torch.diag(torch.tensor([1.04, 0.97, 1.0]))
    c = torch.full((3,), 19.5)
    off = c - lin @ c + torch.tensor([1.5, -2.0, 1.0])
    true = torch.cat([lin, off[:, None]], 1)[None]
    inv_lin = torch.linalg.inv(lin)
    inverse = torch.cat([inv_lin, (-inv_lin @ off)[:, None]], 1)[None]
    zero = torch.zeros(1, 3, *SHAPE)
    moving = resample(fixed, compose_affine_field(inverse, zero))
    res = optimise(fixed, moving, _affine_cfg())
    err = (compose_affine_field(res.matrix, zero) - compose_affine_field(true, zero)).norm(dim=1)
    inside = fixed[0] > 0.2
    assert err[inside].mean() < 0.1
    assert res.disp.shape == (1, 3, *SHAPE)
    assert torch.allclose(res.field, torch.zeros_like(res.field))


def test_rigid_stage_returns_a_rotation():
    fixed = _phantom()
    cfg = _affine_cfg()
    cfg.affine.kind = "rigid"
    cfg.affine.levels = (4, 2)
    cfg.affine.iterations = (60, 60)
    moving = warp(fixed, torch.full((1, 3, *SHAPE), 1.5))
    res = optimise(fixed, moving, cfg)
    lin = res.matrix[0, :, :3]
    assert torch.allclose(lin @ lin.T, torch.eye(3), atol=1e-5)
    assert torch.allclose(res.disp.mean(dim=(2, 3, 4))[0], torch.full((3,), -1.5), atol=0.15)


def _inverse(w: torch.Tensor, iterations: int = 30) -> torch.Tensor:
    """u with x + u(x) = inverse of x -> x + w(x) (fixed-point iteration u = -w(x + u))."""
    u = -w
    for _ in range(iterations):
        u = -warp(w, u)
    return u


def test_known_smooth_field_is_recovered_below_a_voxel():
    fixed = _textured()
    g = torch.Generator().manual_seed(3)
    w = random_smooth_disp(SHAPE, max_disp=2.5, control_points=5, generator=g)
    moving = warp(fixed, w)  # moving(y) = fixed(y + w(y)), so T = inverse of y -> y + w(y)
    cfg = OptimiseConfig()
    cfg.affine.kind = "none"
    cfg.deformable.levels = (2, 1)
    cfg.deformable.iterations = (60, 60)
    cfg.deformable.window = 5
    cfg.deformable.weight = 0.5
    res = optimise(fixed, moving, cfg)
    target = _inverse(w)
    inside = (fixed[0, 0] > 0.2) & (fixed[0, 0] < 0.95)
    epe = (res.disp - target).norm(dim=1)[0][inside].mean()
    before = target.norm(dim=1)[0][inside].mean()
    assert before > 1.0
    assert epe < 0.35 * before
    assert epe < 0.5


def test_svf_does_not_fold_a_large_deformation():
    fixed = _textured()
    g = torch.Generator().manual_seed(5)
    w = random_smooth_disp(SHAPE, max_disp=7.0, control_points=4, generator=g)
    moving = warp(fixed, w)
    cfg = OptimiseConfig()
    cfg.affine.kind = "none"
    cfg.deformable.kind = "svf"
    cfg.deformable.levels = (4, 2)
    cfg.deformable.iterations = (80, 80)
    cfg.deformable.weight = 0.2
    cfg.deformable.lr = 0.5
    res = optimise(fixed, moving, cfg)
    assert jacobian_det(res.disp).min() > 0
    before = (moving - fixed).pow(2).mean()
    assert (warp(moving, res.disp) - fixed).pow(2).mean() < 0.5 * before


def test_privileged_dice_alone_recovers_a_translation():
    labels = torch.zeros(1, 1, *SHAPE, dtype=torch.long)
    labels[..., 12:28, 10:26, 14:30] = 1
    labels[..., 16:22, 14:20, 18:24] = 2
    moving_labels = torch.roll(labels, shifts=3, dims=2)
    blank = torch.full((1, 1, *SHAPE), 0.5)  # no image information at all
    cfg = OptimiseConfig()
    cfg.deformable.kind = "none"
    cfg.affine.similarity = "mse"
    cfg.affine.levels = (2, 1)
    cfg.affine.iterations = (100, 100)
    cfg.privileged.dice_weight = 1.0
    res = optimise(blank, blank, cfg, fixed_labels=labels, moving_labels=moving_labels)
    inside = labels[0, 0] > 0
    assert (res.disp[0, 0][inside] - 3.0).abs().mean() < 0.3
    cfg.privileged.dice_weight = 0.0
    none = optimise(blank, blank, cfg, fixed_labels=labels, moving_labels=moving_labels)
    assert none.disp.abs().max() < 1e-4


def test_batch_equals_single_pairs_and_is_deterministic():
    fixed = _phantom()
    g = torch.Generator().manual_seed(1)
    w = random_smooth_disp(SHAPE, batch=2, max_disp=2.0, control_points=4, generator=g)
    moving = warp(fixed.expand(2, -1, -1, -1, -1), w)
    cfg = OptimiseConfig()
    cfg.affine.iterations = (20, 10)
    cfg.deformable.iterations = (20, 10)
    both = optimise(fixed.expand(2, -1, -1, -1, -1), moving, cfg)
    for i in range(2):
        one = optimise(fixed, moving[i : i + 1], cfg)
        # pairs do not interact: only float rounding, amplified by Adam in flat directions
        assert (both.disp[i] - one.disp[0]).abs().mean() < 0.02
    again = optimise(fixed.expand(2, -1, -1, -1, -1), moving, cfg)
    assert torch.equal(both.disp, again.disp)


def test_zero_iterations_from_an_initial_field_return_it_unchanged():
    fixed = _phantom()
    g = torch.Generator().manual_seed(2)
    init = random_smooth_disp(SHAPE, max_disp=2.0, control_points=4, generator=g)
    cfg = OptimiseConfig()
    cfg.deformable.levels = (1,)
    cfg.deformable.iterations = (0,)
    eye = torch.cat([torch.eye(3), torch.zeros(3, 1)], 1)[None]
    res = optimise(fixed, fixed, cfg, init_matrix=eye, init_field=init)
    assert torch.equal(res.field, init)
    assert torch.allclose(res.disp, init, atol=1e-5)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("levels", (3, 1), "grid.multiple"),
        ("iterations", (10,), "one count"),
        ("window", 4, "odd"),
        ("lr", 0.0, "lr"),
    ],
)
def test_bad_settings_name_the_key(key, value, message):
    cfg = OptimiseConfig()
    setattr(cfg.deformable, key, value)
    with pytest.raises(InputError, match=message):
        optimise(_phantom(), _phantom(), cfg)


def test_grid_that_does_not_divide_is_refused():
    img = torch.rand(1, 1, 30, 30, 30)
    with pytest.raises(InputError, match="pyramid level"):
        optimise(img, img)


def _eye() -> torch.Tensor:
    return torch.cat([torch.eye(3), torch.zeros(3, 1)], 1)[None]


def test_residual_coarse_refinement_keeps_the_fine_start_and_adds_the_shift():
    """A level-2 residual refinement adds a smooth correction that recovers a known shift and
    keeps the start's voxel-scale pattern; a non-residual level-2 start loses that pattern."""
    fixed = _textured()
    shift = torch.zeros(1, 3, *SHAPE)
    shift[:, 0] = 2.0
    moving = warp(fixed, shift)  # moving(y) = fixed(y + 2 e0): the answer is disp = -2 e0
    idx = identity_grid(SHAPE, dtype=torch.float32).sum(0)
    pattern = 0.3 * (1 - 2 * (idx.long() % 2)).float()  # +-0.3 voxel checkerboard
    init = pattern.expand(1, 3, *SHAPE).clone()
    cfg = OptimiseConfig()
    cfg.deformable.levels = (2,)
    cfg.deformable.iterations = (80,)
    cfg.deformable.weight = 0.1
    cfg.deformable.window = 5
    res = optimise(fixed, moving, cfg, init_matrix=_eye(), init_field=init, residual=True)
    inside = (fixed[0, 0] > 0.2)[None].expand(3, -1, -1, -1)
    correction = (res.field - init)[0]
    assert abs(float(correction[0][inside[0]].mean()) + 2.0) < 0.4
    # the correction lives on the coarse grid: no checkerboard in it, the start's is kept
    assert abs(float((correction * pattern).mean() / (pattern * pattern).mean())) < 0.05
    plain = optimise(fixed, moving, cfg, init_matrix=_eye(), init_field=init)
    kept = float((plain.field[0] * pattern).mean() / (pattern * pattern).mean())
    assert abs(kept) < 0.2  # downsampled then upsampled: the pattern is (mostly) gone
    cfg.deformable.iterations = (0,)
    same = optimise(fixed, moving, cfg, init_matrix=_eye(), init_field=init, residual=True)
    assert torch.equal(same.field, init)


def test_residual_needs_a_dense_stage():
    cfg = OptimiseConfig()
    cfg.deformable.kind = "svf"
    init = torch.zeros(1, 3, *SHAPE)
    with pytest.raises(InputError, match="dense"):
        optimise(_phantom(), _phantom(), cfg, init_matrix=_eye(), init_field=init, residual=True)


def test_refined_field_runs_at_the_asked_level_from_the_refine_preset():
    """``cfg=None`` is the ``refine`` preset (not the dataclass defaults); both levels recover a
    known shift; ``level=2`` adds a coarse correction to the start (its voxel-scale pattern
    kept), ``level=1`` optimises every voxel (the smoothness term takes the pattern away)."""
    from medistill.optimise import load_optimise_config, refined_field

    fixed = _textured()
    shift = torch.zeros(1, 3, *SHAPE)
    shift[:, 0] = 2.0
    moving = warp(fixed, shift)
    smooth = torch.zeros(1, 3, *SHAPE)
    smooth[:, 1] = 0.5  # half a voxel off along axis 1
    inside = fixed[0, 0] > 0.2
    for level in (1, 2):
        field = refined_field(lambda f, m: smooth, None, 60, level=level)(fixed, moving)
        assert abs(float(field[0, 0][inside].mean()) + 2.0) < 0.5, level
        assert abs(float(field[0, 1][inside].mean())) < 0.3, level
    default = refined_field(lambda f, m: smooth, None, 20)(fixed, moving)
    preset = refined_field(lambda f, m: smooth, load_optimise_config("refine"), 20)(fixed, moving)
    weaker = refined_field(lambda f, m: smooth, OptimiseConfig(), 20)(fixed, moving)  # weight 1
    assert torch.equal(default, preset) and not torch.equal(default, weaker)

    idx = identity_grid(SHAPE, dtype=torch.float32).sum(0)
    pattern = 0.3 * (1 - 2 * (idx.long() % 2)).float()  # +-0.3 voxel checkerboard
    rough = pattern.expand(1, 3, *SHAPE).clone()
    kept = []
    for level in (1, 2):
        field = refined_field(lambda f, m: rough, None, 20, level=level)(fixed, moving)
        kept.append(float(((field - rough)[0] * pattern).mean() / (pattern**2).mean()))
    assert abs(kept[1]) < 0.05  # level 2: the correction has no voxel-scale part
    assert kept[0] < -0.2  # level 1: much of the checkerboard is smoothed away
    assert torch.equal(refined_field(lambda f, m: rough, None, 0, level=2)(fixed, moving), rough)
    with pytest.raises(InputError, match="level"):
        refined_field(lambda f, m: rough, None, 5, level=0)
