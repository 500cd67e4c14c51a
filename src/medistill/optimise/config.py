"""Settings of optimisation registration (per-pair instance optimisation), with YAML presets.

Presets (``medistill register --method optimise --config NAME``): ``brain`` (the default: skull-
stripped brain MRI of any common contrast), ``fast`` (fewer iterations, for quick looks and
tests), ``multimodal`` (mutual information for images of different contrasts), ``refine``
(test-time refinement of a network's field, ``--refine N``: a stronger diffusion weight for
full-resolution steps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from medistill.errors import InputError
from medistill.train.config import preset_files

__all__ = [
    "AffineConfig",
    "DeformableConfig",
    "GridConfig",
    "OptimiseConfig",
    "PrivilegedConfig",
    "load_optimise_config",
    "presets",
    "validate",
]

Similarity = Literal["ncc", "lncc", "mse", "mi"]


def presets() -> dict[str, Path]:
    """Preset name -> YAML file shipped with the package."""
    return preset_files("optimise")


def load_optimise_config(
    source: str | Path | None = "brain", overrides: list[str] | tuple[str, ...] = ()
) -> OptimiseConfig:
    """Settings from a preset name or YAML file (``None``: the dataclass defaults) with
    ``section.key=value`` overrides, types and ranges checked (:func:`validate`).

    Raises:
        InputError: unknown preset or key, a wrong type or a value out of range (one line).
    """
    from medistill.train.config import load_config

    return validate(
        load_config(OptimiseConfig, source, presets=presets(), overrides=list(overrides))
    )


@dataclass
class GridConfig:
    """The working grid (RAS, isotropic) around the fixed image's content.

    Attributes:
        spacing: voxel size in mm (the finest level of every stage).
        margin: extra extent on each side, as a fraction of the content's extent.
        multiple: every size is rounded up to a multiple of this (the coarsest pyramid factor).
        max_size: largest size along any axis (the spacing grows if the content needs more).
    """

    spacing: float = 2.0
    margin: float = 0.05
    multiple: int = 4
    max_size: int = 160


@dataclass
class AffineConfig:
    """The affine stage, after a centre-of-mass translation (world space).

    Attributes:
        kind: ``"affine"`` (12 parameters), ``"rigid"`` (6) or ``"none"`` (centres of mass only).
        levels: pyramid factors, coarse to fine (1 = the working grid).
        iterations: Adam iterations per level.
        lr: Adam learning rate at the first level (parameters are in units of the grid's
            half-extent); level ``f`` uses ``lr * f / levels[0]``.
        similarity: ``"ncc"`` (global correlation), ``"mse"`` or ``"mi"`` (mutual information).
        mi_bins: histogram bins of mutual information.
    """

    kind: Literal["affine", "rigid", "none"] = "affine"
    levels: tuple[int, ...] = (4, 2)
    iterations: tuple[int, ...] = (60, 40)
    lr: float = 0.01
    similarity: Literal["ncc", "mse", "mi"] = "ncc"
    mi_bins: int = 32


@dataclass
class DeformableConfig:
    """The deformable stage on top of the affine.

    Attributes:
        kind: ``"dense"`` (a displacement per voxel), ``"svf"`` (a stationary velocity field
            integrated by scaling and squaring: diffeomorphic) or ``"none"``.
        levels: pyramid factors, coarse to fine; the field of one level starts the next.
        iterations: Adam iterations per level.
        lr: Adam learning rate (field values are in working-grid voxels).
        similarity: ``"lncc"``, ``"ncc"``, ``"mse"`` or ``"mi"``.
        window: LNCC window in voxels of each level.
        regulariser: ``"diffusion"`` (squared first differences) or ``"bending"`` (squared
            second differences).
        weight: weight of the regulariser.
        squarings: scaling-and-squaring steps of ``svf``.
        mi_bins: histogram bins of mutual information.
    """

    kind: Literal["dense", "svf", "none"] = "dense"
    levels: tuple[int, ...] = (4, 2)
    iterations: tuple[int, ...] = (60, 40)
    lr: float = 0.2
    similarity: Similarity = "lncc"
    window: int = 3
    regulariser: Literal["diffusion", "bending"] = "diffusion"
    weight: float = 1.0
    squarings: int = 7
    mi_bins: int = 32


@dataclass
class PrivilegedConfig:
    """Terms for training pairs with label maps (the teacher may use labels; students never do).

    Attributes:
        dice_weight: weight of ``1 - soft Dice`` on one-hot labels warped linearly, added to the
            image term of the deformable and affine stages when both label maps are given
            (0 disables).
    """

    dice_weight: float = 0.0


@dataclass
class OptimiseConfig:
    """Every setting of optimisation registration; the defaults work on brain MRI. The optimiser
    draws nothing at random: on a CPU the same inputs give the same result.

    Attributes:
        grid, affine, deformable, privileged: the sections.
        initial: ``"com"`` (match intensity centres of mass in world space) or ``"none"``.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    """

    grid: GridConfig = field(default_factory=GridConfig)
    affine: AffineConfig = field(default_factory=AffineConfig)
    deformable: DeformableConfig = field(default_factory=DeformableConfig)
    privileged: PrivilegedConfig = field(default_factory=PrivilegedConfig)
    initial: Literal["com", "none"] = "com"
    device: str = "auto"


def _levels(name: str, levels: tuple[int, ...], iterations: tuple[int, ...], multiple: int) -> None:
    if not levels:
        raise InputError(f"config: {name}.levels must list at least one pyramid factor")
    if any(int(f) < 1 or multiple % int(f) for f in levels):
        raise InputError(
            f"config: {name}.levels must be factors >= 1 dividing grid.multiple={multiple}, "
            f"got {list(levels)}"
        )
    if len(iterations) != len(levels) or any(int(n) < 0 for n in iterations):
        raise InputError(
            f"config: {name}.iterations must give one count >= 0 per level "
            f"({len(levels)} levels), got {list(iterations)}"
        )


def validate(cfg: OptimiseConfig) -> OptimiseConfig:
    """Check value ranges (types are checked when the config is loaded); returns ``cfg``.

    Raises:
        InputError: one line naming the key.
    """
    g = cfg.grid
    if not g.spacing > 0:
        raise InputError(f"config: grid.spacing must be > 0 mm, got {g.spacing}")
    if not 0 <= g.margin <= 1:
        raise InputError(f"config: grid.margin must be in [0, 1], got {g.margin}")
    if g.multiple < 1 or g.max_size < 2 * g.multiple:
        raise InputError(
            f"config: grid.multiple must be >= 1 and grid.max_size >= 2 x grid.multiple, got "
            f"{g.multiple} and {g.max_size}"
        )
    for name, stage in (("affine", cfg.affine), ("deformable", cfg.deformable)):
        _levels(name, stage.levels, stage.iterations, g.multiple)
        if not stage.lr > 0:
            raise InputError(f"config: {name}.lr must be > 0, got {stage.lr}")
        if stage.mi_bins < 4:
            raise InputError(f"config: {name}.mi_bins must be >= 4, got {stage.mi_bins}")
    d = cfg.deformable
    if d.window < 1 or d.window % 2 == 0:
        raise InputError(f"config: deformable.window must be an odd size >= 1, got {d.window}")
    if d.weight < 0 or cfg.privileged.dice_weight < 0:
        raise InputError("config: deformable.weight and privileged.dice_weight must be >= 0")
    if not 0 <= d.squarings <= 16:
        raise InputError(f"config: deformable.squarings must be in [0, 16], got {d.squarings}")
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise InputError(f"config: device must be auto, cpu or cuda, got {cfg.device!r}")
    return cfg
