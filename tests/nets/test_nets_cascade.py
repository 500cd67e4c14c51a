"""Tests of medistill.nets.cascade (recursive cascades, builders)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medistill.errors import InputError
from medistill.nets import (
    VTN,
    AffineStem,
    Cascade,
    LDRStudent,
    LDRStudentFast,
    SmallAffineStem,
    build_student,
    build_teacher,
)
from medistill.spatial import affine_to_disp, compose, random_smooth_disp, warp


class FixedAffine(nn.Module):
    """Affine stem stub that returns a given (A, b) whatever the input."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.a, self.b = a, b

    def forward(self, fixed, moving):
        nb = fixed.shape[0]
        a, b = self.a.expand(nb, -1, -1), self.b.expand(nb, -1)
        mat = torch.cat([a, b[..., None]], -1)
        return affine_to_disp(mat, fixed.shape[2:]), a, b


class FixedField(nn.Module):
    """Subnetwork stub that returns a given field and records the image it was given."""

    def __init__(self, field: torch.Tensor) -> None:
        super().__init__()
        self.field = field
        self.seen: list[torch.Tensor] = []

    def forward(self, fixed, moving):
        self.seen.append(moving)
        return self.field


def smooth_image(size, dtype=torch.float64):
    grids = torch.meshgrid(*[torch.linspace(0, 3, s, dtype=dtype) for s in size], indexing="ij")
    return sum(torch.sin(g + k) for k, g in enumerate(grids))[None, None]


A3 = torch.tensor([[1.05, 0.03, 0.0], [-0.02, 0.95, 0.04], [0.01, 0.0, 1.02]], dtype=torch.float64)
B3 = torch.tensor([1.5, -0.5, 2.0], dtype=torch.float64)


def test_affine_then_zero_increments_is_the_affine_field():
    size = (16, 32, 48)
    stem = SmallAffineStem(ndim=3)  # the real stem, forced through its head biases
    with torch.no_grad():
        stem.head_w.bias.copy_((A3 - torch.eye(3)).flatten().float())
        stem.head_b.bias.copy_(B3.float())
    subnets = [LDRStudentFast(ndim=3), LDRStudent(ndim=3)]
    for net in subnets:
        nn.init.zeros_(net.flow.weight)
    casc = Cascade(subnets, stem)
    moving = torch.rand(2, 1, *size)
    out = casc(torch.rand(2, 1, *size), moving)
    mat = torch.cat([A3, B3[:, None]], -1).float()[None].expand(2, 3, 4)
    expected = affine_to_disp(mat, size)
    torch.testing.assert_close(out.disp, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.warped, warp(moving, out.disp))
    assert [torch.count_nonzero(u).item() for u in out.increments] == [0, 0]
    a, b = out.affine
    torch.testing.assert_close(a[0], A3.float())
    torch.testing.assert_close(b[1], B3.float())


def test_closed_form_after_affine_equals_numeric_composition():
    size = (24, 28, 20)
    gen = torch.Generator().manual_seed(0)
    kw = dict(control_points=5, max_disp=2.0, generator=gen, dtype=torch.float64)
    u1, u2 = random_smooth_disp(size, **kw), random_smooth_disp(size, **kw)
    nets = [FixedField(u1), FixedField(u2)]
    casc = Cascade(nets, FixedAffine(A3[None], B3[None]))
    fixed, moving = smooth_image(size), smooth_image(size) ** 2
    out = casc(fixed, moving)
    u0 = affine_to_disp(torch.cat([A3, B3[:, None]], -1)[None], size)
    # closed form A u1 + u0 vs numeric composition: equal where x + u1(x) stays in the grid
    # (u0 is linear, so linear interpolation is exact there)
    agg1 = torch.einsum("ij,bj...->bi...", A3, u1) + u0
    numeric = compose(u0, u1)
    inner = (..., slice(3, -3), slice(3, -3), slice(3, -3))
    torch.testing.assert_close(agg1[inner], numeric[inner], atol=1e-9, rtol=0)
    assert (agg1 - (u0 + u1)).abs().max() > 0.05  # and it is not the plain sum
    # the cascade uses the closed form for cascade 1 and numeric composition after it
    torch.testing.assert_close(out.disp, compose(agg1, u2))
    torch.testing.assert_close(out.warped, warp(moving, out.disp))
    # each cascade saw the original moving image warped (once) by the field composed so far
    torch.testing.assert_close(nets[0].seen[0], warp(moving, u0))
    torch.testing.assert_close(nets[1].seen[0], warp(moving, agg1))
    assert [u is v for u, v in zip(out.increments, (u1, u2), strict=True)] == [True, True]


def test_cascade_without_affine_composes_numerically():
    size = (32, 40)
    gen = torch.Generator().manual_seed(1)
    kw = dict(control_points=5, max_disp=3.0, generator=gen, dtype=torch.float64)
    fields = [random_smooth_disp(size, **kw) for _ in range(3)]
    out = Cascade([FixedField(f) for f in fields])(smooth_image(size), smooth_image(size))
    torch.testing.assert_close(out.disp, compose(compose(fields[0], fields[1]), fields[2]))
    assert out.affine is None


def grads_everywhere(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]


def test_gradients_reach_every_teacher_parameter():
    torch.manual_seed(0)
    casc = build_teacher(2, ndim=3, base_width=1)
    size = (64, 64, 64)
    fixed, moving = torch.rand(1, 1, *size), torch.rand(1, 1, *size)
    out = casc(fixed, moving)
    loss = ((out.warped - fixed) ** 2).mean() + sum((u**2).mean() for u in out.increments)
    loss = loss + (out.affine[0] ** 2).sum()
    loss.backward()
    assert grads_everywhere(casc) == []
    assert all(isinstance(n, VTN) and n.flow_multiplier == 0.5 for n in casc.subnets)
    assert isinstance(casc.affine, AffineStem)


@pytest.mark.parametrize("variant", ["ldr", "fast"])
def test_gradients_reach_every_student_parameter(variant):
    torch.manual_seed(0)
    casc = build_student(3, ndim=2, variant=variant)
    with torch.no_grad():  # the stem starts exactly at the identity: give it non-zero heads
        casc.affine.head_w.weight.normal_(0.0, 1e-3)
        casc.affine.head_b.weight.normal_(0.0, 1e-2)
    size = (64, 48)
    fixed, moving = torch.rand(2, 1, *size), torch.rand(2, 1, *size)
    out = casc(fixed, moving)
    assert out.disp.shape == (2, 2, *size) and len(out.increments) == 3
    (((out.warped - fixed) ** 2).mean() + out.disp.abs().mean()).backward()
    assert grads_everywhere(casc) == []
    cls = LDRStudent if variant == "ldr" else LDRStudentFast
    assert all(
        isinstance(n, cls) and n.flow_multiplier == pytest.approx(1 / 3) for n in casc.subnets
    )


def test_builders_reject_bad_options():
    with pytest.raises(InputError, match="did you mean 'fast'"):
        build_student(1, variant="fst")
    with pytest.raises(InputError, match="'n_cascades' must be an int >= 1"):
        build_teacher(0)
    with pytest.raises(InputError, match="at least one subnetwork"):
        Cascade([], None)
    assert build_student(2, ndim=2, affine=False).affine is None


def test_fields_stay_float32_under_bf16_autocast():
    # bf16 resolves voxel coordinates to 0.25-0.5 voxel: fields and warps must not use it
    torch.manual_seed(0)
    net = build_student(2, ndim=3, variant="fast")
    fixed, moving = torch.rand(1, 1, 32, 32, 32), torch.rand(1, 1, 32, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(fixed, moving)
    assert out.disp.dtype == torch.float32 and out.warped.dtype == torch.float32
    assert out.affine[0].dtype == torch.float32
    assert all(u.dtype == torch.float32 for u in out.increments)


def test_half_resolution_cascade_sees_pooled_images_and_returns_a_full_field():
    # stages on 1/2 resolution: the stub sees the 2x2 average of the moving image, its constant
    # coarse field of c voxels becomes c * (S - 1) / (S / 2 - 1) voxels of the input grid, and
    # the original image is warped once by that field
    size = (32, 48)
    coarse = torch.tensor([1.0, -2.0], dtype=torch.float64).view(1, 2, 1, 1)
    stub = FixedField(coarse.expand(1, 2, 16, 24))
    fixed, moving = smooth_image(size), smooth_image(size) * 2
    out = Cascade([stub], downsample=2)(fixed, moving)
    torch.testing.assert_close(stub.seen[0], torch.nn.functional.avg_pool2d(moving, 2))
    expected = torch.tensor([1.0 * 31 / 15, -2.0 * 47 / 23], dtype=torch.float64)
    assert out.disp.shape == (1, 2, *size)
    torch.testing.assert_close(out.disp, expected.view(1, 2, 1, 1).expand(1, 2, *size))
    torch.testing.assert_close(out.warped, warp(moving, out.disp))
    assert out.increments[0].shape == (1, 2, 16, 24)


def test_half_resolution_identity_keeps_the_image_and_gradients_reach_every_parameter():
    torch.manual_seed(0)
    casc = build_student(1, ndim=3, variant="fast", downsample=2)
    assert casc.size_multiple == 32 and casc.downsample == 2
    fixed, moving = torch.rand(1, 1, 32, 32, 64), torch.rand(1, 1, 32, 32, 64)
    with torch.no_grad():
        out = casc(fixed, moving)
    # the flow head and the stem's heads start at (near) zero: near-identity on the input grid
    assert out.disp.shape == (1, 3, 32, 32, 64) and out.disp.abs().max() < 1e-2
    assert (out.warped - moving).abs().max() < 0.05
    with torch.no_grad():
        casc.affine.head_w.weight.normal_(0.0, 1e-3)
        casc.affine.head_b.weight.normal_(0.0, 1e-2)
    out = casc(fixed, moving)
    (((out.warped - fixed) ** 2).mean() + out.disp.abs().mean()).backward()
    assert grads_everywhere(casc) == []


def test_half_resolution_rejects_odd_sizes_and_bad_factors():
    casc = build_student(1, ndim=2, variant="fast", downsample=2)
    with pytest.raises(InputError, match="multiples of 32"):
        casc(torch.rand(1, 1, 48, 65), torch.rand(1, 1, 48, 65))
    with pytest.raises(InputError, match="'downsample' must be one of"):
        build_student(1, downsample=3)
