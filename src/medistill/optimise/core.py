"""Batched per-pair optimisation on a working grid: an affine, then a dense or diffeomorphic field.

Everything here works on tensors already on one working grid (``(B, 1, *S)`` fixed and moving
images, intensities about [0, 1]); :mod:`medistill.optimise.apply` puts images of any geometry
there and brings the result back. Each pair of the batch has its own parameters and its own loss,
so optimising pairs together gives the same result as one at a time.

The transform maps a fixed working voxel ``x`` to the moving working voxel

    T(x) = M (x + u(x)),      M(y) = A (y - c) + c + R b,

with ``A`` (``ndim x ndim``) and ``b`` the affine in coordinates centred on the grid centre ``c``
and scaled by the half-extent ``R = (max(S) - 1) / 2`` (so rotations stay rotations and one
learning rate fits every grid size), and ``u`` the deformable displacement in working voxels.
The total displacement is ``disp(x) = T(x) - x`` (the project's convention: warped(x) =
moving(x + disp(x))).

Pyramid: level ``f`` is the grid of size ``S / f`` covering the same extent with shared corner
voxel centres (``align_corners=True``), images Gaussian-blurred (sigma ``f / 2`` voxels) then
interpolated. Fine voxel ``x`` of coarse voxel ``X`` is ``x_k = X_k r_k``, ``r_k = (S_k - 1) /
(S_k / f - 1)``; deformable parameters are stored in *fine* voxel units at every level, so moving
to the next level only interpolates them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from medistill.data.synthesis import gaussian_blur
from medistill.errors import InputError
from medistill.optimise.config import AffineConfig, DeformableConfig, OptimiseConfig, validate
from medistill.optimise.similarity import LocalNCC, image_loss, soft_dice
from medistill.spatial import identity_grid, integrate_velocity, resample, rotation_matrix

__all__ = ["OptimiseResult", "compose_affine_field", "one_hot", "optimise", "pyramid_shape"]


@dataclass
class OptimiseResult:
    """Result of :func:`optimise` on the working grid.

    Attributes:
        matrix: ``(B, ndim, ndim + 1)`` affine ``M`` in working-grid voxels (applied after ``u``).
        field: ``(B, ndim, *S)`` deformable displacement ``u`` in working voxels (zeros if none).
        disp: ``(B, ndim, *S)`` total displacement ``T(x) - x`` in working voxels.
        loss: ``(B,)`` final image term of each pair (at the last level run).
    """

    matrix: Tensor
    field: Tensor
    disp: Tensor
    loss: Tensor


def pyramid_shape(shape: Sequence[int], factor: int) -> tuple[int, ...]:
    """The grid size at pyramid ``factor`` (every size must divide; at least 2 voxels)."""
    out = []
    for s in shape:
        if s % factor or s // factor < 2:
            raise InputError(
                f"optimise(): working grid {tuple(shape)} does not divide into pyramid level "
                f"{factor} (grid.multiple must be a multiple of every level)"
            )
        out.append(s // factor)
    return tuple(out)


def _ratios(shape: Sequence[int], coarse: Sequence[int], like: Tensor) -> Tensor:
    r = [(s - 1) / (c - 1) for s, c in zip(shape, coarse, strict=True)]
    return torch.tensor(r, dtype=like.dtype, device=like.device).view(1, len(r), *[1] * len(r))


def _down(x: Tensor, factor: int, size: Sequence[int], smooth: bool = True) -> Tensor:
    if factor == 1:
        return x
    if smooth:
        x = gaussian_blur(x, factor / 2)
    mode = "trilinear" if x.dim() == 5 else "bilinear"
    return F.interpolate(x, size=tuple(size), mode=mode, align_corners=True)


def one_hot(labels: Tensor, values: Sequence[int]) -> Tensor:
    """``(B, 1, *S)`` integer labels -> ``(B, len(values), *S)`` float one-hot."""
    return torch.cat([(labels == v).float() for v in values], dim=1)


def compose_affine_field(matrix: Tensor, field: Tensor, ratio: Tensor | None = None) -> Tensor:
    """Fine-grid voxel coordinates ``M (x + u(x))`` for the grid of ``field``.

    Args:
        matrix: ``(B, ndim, ndim + 1)`` affine on fine voxels.
        field: ``(B, ndim, *S')`` displacement in fine voxels on a (possibly coarse) grid.
        ratio: ``(1, ndim, 1, ...)`` fine voxels per coarse voxel (None: the grid is fine).

    Returns:
        ``(B, ndim, *S')`` fine voxel coordinates of the mapped points.
    """
    nd = field.shape[1]
    x = identity_grid(field.shape[2:], dtype=field.dtype, device=field.device)[None]
    if ratio is not None:
        x = x * ratio
    y = x + field
    lin, off = matrix[:, :, :nd], matrix[:, :, nd]
    out = torch.einsum("bij,bj...->bi...", lin, y)
    return out + off.view(*off.shape, *[1] * nd)


class _Affine(torch.nn.Module):
    """Per-pair affine (or rigid) parameters in centred, half-extent-scaled coordinates."""

    def __init__(self, batch: int, nd: int, kind: str, shape: Sequence[int], like: Tensor):
        super().__init__()
        self.nd, self.kind = nd, kind
        n_rot = 3 if nd == 3 else 1
        self.w = torch.nn.Parameter(like.new_zeros(batch, nd, nd))
        self.rot = torch.nn.Parameter(like.new_zeros(batch, n_rot))
        self.b = torch.nn.Parameter(like.new_zeros(batch, nd))
        self.register_buffer("centre", torch.tensor([(s - 1) / 2 for s in shape], dtype=like.dtype))
        self.half = max(shape) / 2 - 0.5 if max(shape) > 1 else 1.0

    def linear(self) -> Tensor:
        eye = torch.eye(self.nd, dtype=self.w.dtype, device=self.w.device)
        if self.kind == "affine":
            return eye + self.w
        return rotation_matrix(self.rot)

    def matrix(self) -> Tensor:
        lin = self.linear()
        c = self.centre.to(lin.device)
        off = c - torch.einsum("bij,j->bi", lin, c) + self.half * self.b
        return torch.cat([lin, off[..., None]], dim=2)


def _regulariser(u: Tensor, ratio: Tensor, kind: str) -> Tensor:
    """``(B,)`` mean squared first (diffusion) or second (bending) differences per fine voxel."""
    nd = u.shape[1]
    total = u.new_zeros(u.shape[0])
    for axis in range(nd):
        r = ratio.flatten()[axis]
        d = torch.diff(u, dim=2 + axis) / r
        if kind == "bending":
            d = torch.diff(d, dim=2 + axis) / r
        total = total + d.pow(2).flatten(1).mean(1)
    return total


@contextlib.contextmanager
def _progress(total: int, enabled: bool, desc: str) -> Iterator:
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="it", leave=False, dynamic_ncols=True)
    try:
        yield bar
    finally:
        bar.close()


def _tick(bar, loss: Tensor) -> None:
    if bar is not None:
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss.mean()):.4f}", refresh=False)


def _step(
    opt: torch.optim.Optimizer,
    loss: Tensor,
    labels: tuple[Tensor, Tensor] | None,
    coords: Tensor,
    dice_weight: float,
) -> None:
    """One Adam step on the summed per-pair losses, plus the privileged Dice term if any."""
    if labels is not None:
        loss = loss + dice_weight * soft_dice(labels[0], resample(labels[1], coords))
    opt.zero_grad(set_to_none=True)
    loss.sum().backward()
    opt.step()


def _affine_stage(
    cfg: AffineConfig,
    fixed: Tensor,
    moving: Tensor,
    labels: tuple[Tensor, Tensor] | None,
    dice_weight: float,
    bar,
) -> tuple[Tensor, Tensor]:
    shape = fixed.shape[2:]
    b, nd = fixed.shape[0], fixed.dim() - 2
    params = _Affine(b, nd, cfg.kind, shape, fixed).to(fixed.device)
    last = fixed.new_zeros(b)
    if cfg.kind == "none":
        return params.matrix().detach(), last
    opt = torch.optim.Adam([params.w if cfg.kind == "affine" else params.rot, params.b], lr=cfg.lr)
    for factor, iterations in zip(cfg.levels, cfg.iterations, strict=True):
        size = pyramid_shape(shape, factor)
        f_l, m_l = _down(fixed, factor, size), _down(moving, factor, size)
        ratio = _ratios(shape, size, fixed)
        zero = fixed.new_zeros(b, nd, *size)
        lab = None
        if labels is not None and dice_weight > 0:
            lab = (_down(labels[0], factor, size), _down(labels[1], factor, size))
        for group in opt.param_groups:  # finer levels take finer steps
            group["lr"] = cfg.lr * factor / cfg.levels[0]
        for _ in range(int(iterations)):
            coords = compose_affine_field(params.matrix(), zero, ratio) / ratio
            warped = resample(m_l, coords)
            loss = image_loss(cfg.similarity, f_l, warped, bins=cfg.mi_bins)
            last = loss.detach()
            _step(opt, loss, lab, coords, dice_weight)
            _tick(bar, last)
    return params.matrix().detach(), last


def _deformable_stage(
    cfg: DeformableConfig,
    matrix: Tensor,
    fixed: Tensor,
    moving: Tensor,
    labels: tuple[Tensor, Tensor] | None,
    dice_weight: float,
    init: Tensor | None,
    bar,
    residual: bool = False,
) -> tuple[Tensor, Tensor]:
    shape = fixed.shape[2:]
    b, nd = fixed.shape[0], fixed.dim() - 2
    mode = "trilinear" if nd == 3 else "bilinear"
    last = fixed.new_zeros(b)
    param: Tensor | None = None
    base: Tensor | None = None
    if init is not None and residual:
        base = init.detach()  # kept at full resolution; the levels optimise a correction
    elif init is not None:
        param = init.detach().clone()
    if cfg.kind == "none":
        field = param if param is not None else fixed.new_zeros(b, nd, *shape)
        return field, last

    def field_of(p: Tensor, ratio: Tensor) -> Tensor:
        if cfg.kind == "svf":
            return integrate_velocity(p / ratio, cfg.squarings) * ratio
        return p

    for factor, iterations in zip(cfg.levels, cfg.iterations, strict=True):
        size = pyramid_shape(shape, factor)
        ratio = _ratios(shape, size, fixed)
        if param is None:
            param = fixed.new_zeros(b, nd, *size)
        elif tuple(param.shape[2:]) != size:
            param = F.interpolate(param, size=size, mode=mode, align_corners=True)
        p = torch.nn.Parameter(param.contiguous())
        opt = torch.optim.Adam([p], lr=cfg.lr)
        base_l = None
        if base is not None:
            same = tuple(base.shape[2:]) == size
            base_l = base if same else F.interpolate(base, size=size, mode=mode, align_corners=True)
        f_l, m_l = _down(fixed, factor, size), _down(moving, factor, size)
        lab = None
        if labels is not None and dice_weight > 0:
            lab = (_down(labels[0], factor, size), _down(labels[1], factor, size))
        local = LocalNCC(f_l, cfg.window) if cfg.similarity == "lncc" else None
        for _ in range(int(iterations)):
            u = field_of(p, ratio) if base_l is None else base_l + p
            coords = compose_affine_field(matrix, u, ratio) / ratio
            warped = resample(m_l, coords)
            if local is not None:
                sim = local(warped)
            else:
                sim = image_loss(cfg.similarity, f_l, warped, window=cfg.window, bins=cfg.mi_bins)
            last = sim.detach()
            loss = sim + cfg.weight * _regulariser(
                p if cfg.kind == "svf" else u, ratio, cfg.regulariser
            )
            _step(opt, loss, lab, coords, dice_weight)
            _tick(bar, last)
        param = p.detach()
    assert param is not None
    with torch.no_grad():  # velocity (or field) to the working grid, then integrated there
        if tuple(param.shape[2:]) != tuple(shape):
            param = F.interpolate(param, size=tuple(shape), mode=mode, align_corners=True)
        if base is not None:  # residual: the start plus the correction, both dense
            u = base + param
        else:
            u = field_of(param, torch.ones_like(_ratios(shape, shape, fixed)))
    return u, last


def optimise(
    fixed: Tensor,
    moving: Tensor,
    cfg: OptimiseConfig | None = None,
    *,
    fixed_labels: Tensor | None = None,
    moving_labels: Tensor | None = None,
    init_matrix: Tensor | None = None,
    init_field: Tensor | None = None,
    residual: bool = False,
    progress: bool = False,
) -> OptimiseResult:
    """Register each moving image of the batch to its fixed image by optimisation.

    Args:
        fixed, moving: ``(B, 1, *S)`` images on one working grid, intensities about [0, 1];
            every size a multiple of every pyramid level.
        cfg: settings (default :class:`OptimiseConfig`); ``cfg.grid`` and ``cfg.initial`` are
            not used here (the images are already on their grid).
        fixed_labels, moving_labels: ``(B, 1, *S)`` integer label maps for the privileged Dice
            term (``cfg.privileged.dice_weight > 0``); ignored when either is None.
        init_matrix: ``(B, ndim, ndim + 1)`` affine to start from; with it the affine stage is
            skipped (e.g. refinement of a network's result).
        init_field: ``(B, ndim, *S)`` deformable field to start from (working voxels).
        residual: with ``init_field`` and ``cfg.deformable.kind == "dense"``: keep
            ``init_field`` at full resolution and optimise a correction added to it at each
            pyramid level (the field is ``init_field + upsampled correction``), so a coarse
            level refines the start without smoothing away its fine detail. Without it a coarse
            level starts from ``init_field`` downsampled and returns that, upsampled.
        progress: show a progress bar (tqdm) over all iterations.

    Returns:
        :class:`OptimiseResult`, detached, on the input's device.

    Raises:
        InputError: on shapes that do not match or do not divide into the pyramid.
    """
    cfg = validate(cfg or OptimiseConfig())
    if fixed.shape != moving.shape or fixed.dim() not in (4, 5) or fixed.shape[1] != 1:
        raise InputError(
            f"optimise(): fixed and moving must both be (B, 1, *S), got {tuple(fixed.shape)} "
            f"and {tuple(moving.shape)}"
        )
    fixed, moving = fixed.float(), moving.float()
    b, nd, shape = fixed.shape[0], fixed.dim() - 2, tuple(fixed.shape[2:])
    labels = None
    if fixed_labels is not None and moving_labels is not None and cfg.privileged.dice_weight > 0:
        if fixed_labels.shape != fixed.shape or moving_labels.shape != fixed.shape:
            raise InputError("optimise(): label maps must have the images' shape (B, 1, *S)")
        values = sorted(set(torch.unique(fixed_labels).tolist()) - {0})
        labels = (one_hot(fixed_labels, values), one_hot(moving_labels, values))
    if init_field is not None and tuple(init_field.shape) != (b, nd, *shape):
        raise InputError(
            f"optimise(): init_field must be {(b, nd, *shape)}, got {tuple(init_field.shape)}"
        )
    if residual and cfg.deformable.kind != "dense":
        raise InputError("optimise(): residual refinement needs deformable.kind dense")
    a, d = cfg.affine, cfg.deformable
    total = (0 if init_matrix is not None or a.kind == "none" else sum(a.iterations)) + (
        0 if d.kind == "none" else sum(d.iterations)
    )
    with torch.enable_grad(), _progress(total, progress, "optimise") as bar:
        if init_matrix is not None:
            if tuple(init_matrix.shape) != (b, nd, nd + 1):
                raise InputError(
                    f"optimise(): init_matrix must be {(b, nd, nd + 1)}, "
                    f"got {tuple(init_matrix.shape)}"
                )
            matrix, last = init_matrix.to(fixed).detach(), fixed.new_zeros(b)
        else:
            matrix, last = _affine_stage(a, fixed, moving, labels, cfg.privileged.dice_weight, bar)
        field, last_d = _deformable_stage(
            d,
            matrix,
            fixed,
            moving,
            labels,
            cfg.privileged.dice_weight,
            init_field,
            bar,
            residual=residual,
        )
    if d.kind != "none":
        last = last_d
    disp = compose_affine_field(matrix, field) - identity_grid(
        shape, dtype=field.dtype, device=field.device
    )
    return OptimiseResult(matrix=matrix, field=field, disp=disp, loss=last)
