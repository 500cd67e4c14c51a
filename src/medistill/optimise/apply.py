"""Optimisation registration of images on their own grids (no trained model needed)."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from medistill.errors import InputError
from medistill.io import Grid, Image, WorkingGrid
from medistill.optimise.config import OptimiseConfig, load_optimise_config, validate
from medistill.optimise.core import optimise
from medistill.spatial.native import (
    OUTPUTS,
    Registration,
    finish_registration,
    prepare_pair,
)

__all__ = [
    "optimiser_grid",
    "refined_field",
    "register_optimise",
    "resolve_device",
    "world_affine",
]


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else the CPU; ``"cuda"`` without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("config: device is 'cuda' but no CUDA device is available")
    return torch.device(name)


def optimiser_grid(fixed: Image, cfg: OptimiseConfig) -> WorkingGrid:
    """The working grid of ``cfg.grid`` around the fixed image's content."""
    g = cfg.grid
    return WorkingGrid.with_spacing(
        fixed, g.spacing, margin=g.margin, multiple=g.multiple, max_size=g.max_size
    )


def world_affine(matrix: np.ndarray, fixed_grid: Grid, moving_grid: Grid) -> np.ndarray:
    """The ``(4, 4)`` world map (mm, RAS) fixed point -> moving point of a working-voxel affine.

    ``matrix`` ``(ndim, ndim + 1)`` maps voxels of the fixed working grid ``fixed_grid`` to
    voxels of the moving one, ``moving_grid`` (the working grid shifted by the centre-of-mass
    translation, :attr:`~medistill.spatial.native.WorkingPair.moving_grid`).
    """
    nd = matrix.shape[0]
    vox = np.eye(4)
    vox[:nd, :nd] = matrix[:, :nd]
    vox[:nd, 3] = matrix[:, nd]
    return moving_grid.affine @ vox @ np.linalg.inv(fixed_grid.affine)


def register_optimise(
    fixed: Image,
    moving: Image,
    cfg: OptimiseConfig | None = None,
    *,
    moving_labels: Image | None = None,
    fixed_labels: Image | None = None,
    label_interp: str = "nearest",
    progress: bool = False,
    outputs: Sequence[str] = OUTPUTS,
) -> Registration:
    """Register ``moving`` to ``fixed`` by per-pair optimisation; outputs on the fixed grid.

    Centre-of-mass translation (``cfg.initial``), then the affine and the deformable stages of
    :func:`medistill.optimise.core.optimise` on a working grid of ``cfg.grid.spacing`` mm around
    the fixed image's content.

    Args:
        fixed, moving: images (any grids, orientations, spacings; same dimensionality).
        cfg: settings (default :class:`OptimiseConfig`, for brain MRI).
        moving_labels: label map on the moving grid, warped onto the fixed grid if given; with
            ``fixed_labels`` also the privileged Dice term (``cfg.privileged.dice_weight > 0``).
        fixed_labels: label map on the fixed grid (privileged term only).
        label_interp: ``"nearest"`` or ``"linear"`` for the warped labels.
        progress: show a progress bar.
        outputs: what to compute besides the field
            (:func:`~medistill.spatial.native.finish_registration`).

    Returns:
        :class:`~medistill.spatial.native.Registration`; ``extra["affine_mm"]`` is the ``(4, 4)``
        world affine (fixed point -> moving point, COM translation included) of the affine stage.

    Raises:
        InputError: images of different dimensionality, bad settings.
    """
    cfg = validate(cfg or OptimiseConfig())
    if fixed.ndim != moving.ndim:
        raise InputError(
            f"{moving.source}: moving image is {moving.ndim}-D, the fixed image {fixed.ndim}-D"
        )
    device = resolve_device(cfg.device)
    t0 = time.perf_counter()
    grid = optimiser_grid(fixed, cfg)
    pair = prepare_pair(fixed, moving, grid, initial=cfg.initial)
    labels = {}
    if cfg.privileged.dice_weight > 0 and moving_labels is not None and fixed_labels is not None:
        labels = {
            "fixed_labels": pair.fixed_labels(fixed_labels).to(device),
            "moving_labels": pair.moving_labels(moving_labels).to(device),
        }
    t1 = time.perf_counter()
    result = optimise(
        pair.fixed.to(device), pair.moving.to(device), cfg, progress=progress, **labels
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t1
    reg = finish_registration(
        pair,
        result.disp.cpu(),
        fixed,
        moving,
        moving_labels=moving_labels,
        label_interp=label_interp,
        seconds_network=seconds,
        started=t0,
        outputs=outputs,
    )
    reg.extra["affine_mm"] = world_affine(
        result.matrix[0].cpu().double().numpy(), pair.grid, pair.moving_grid
    )
    reg.extra["working_shape"] = list(grid.shape)
    reg.extra["working_spacing_mm"] = grid.spacing
    return reg


def refined_field(
    network: torch.nn.Module | Callable,
    cfg: OptimiseConfig | None,
    iterations: int,
    level: int = 1,
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A field function: ``network(fixed, moving).disp`` (or a field function's result), then
    ``iterations`` optimiser steps on the network's working grid starting from it (test-time
    refinement; the affine stage is skipped, the deformable stage uses ``cfg``'s similarity,
    window, regulariser and learning rate). ``iterations == 0`` returns the network's field
    exactly. ``cfg=None`` uses the ``refine`` preset (the ``brain`` deformable settings with a
    stronger diffusion weight, for fields as smooth as the optimiser's).

    ``level`` is the pyramid factor the steps run at: 1 optimises the field at full working
    resolution; 2 or 4 optimise a correction on a grid 2 or 4 times coarser per axis, added to
    the network's full-resolution field (8 or 64 times fewer voxels per step; on the held-out
    brain pairs it gains less than full-resolution steps: docs/RESULTS.md, "Refinement that
    keeps the fields smooth"). The working grid's sizes must be multiples of ``level``.
    """
    base = validate(cfg) if cfg is not None else load_optimise_config("refine")
    if int(iterations) < 0:
        raise InputError(f"refinement iterations must be >= 0, got {iterations}")
    if int(level) < 1:
        raise InputError(f"refinement level must be a pyramid factor >= 1, got {level}")
    if base.deformable.kind == "none" and iterations:
        raise InputError("refinement needs a deformable stage (deformable.kind dense or svf)")
    ocfg = dataclasses.replace(
        base,
        grid=dataclasses.replace(base.grid, multiple=math.lcm(int(level), base.grid.multiple)),
        affine=dataclasses.replace(base.affine, levels=(1,), iterations=(0,)),  # not run
        deformable=dataclasses.replace(
            base.deformable, kind="dense", levels=(int(level),), iterations=(int(iterations),)
        ),
    )
    ocfg = validate(ocfg)

    def field(fixed: torch.Tensor, moving: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            out = network(fixed, moving)
            disp = getattr(out, "disp", out).float()  # a network's output or a plain field
        if not iterations:
            return disp
        nd = disp.shape[1]
        eye = torch.cat([torch.eye(nd), torch.zeros(nd, 1)], 1)[None]
        eye = eye.expand(disp.shape[0], -1, -1)
        init = disp.clone()
        return optimise(
            fixed, moving, ocfg, init_matrix=eye, init_field=init, residual=int(level) > 1
        ).disp

    return field
