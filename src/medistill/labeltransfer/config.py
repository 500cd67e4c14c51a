"""Configuration of LT-Net training (one-shot label transfer), with YAML presets.

Presets (``medistill train labeltransfer --config NAME``): ``cpu-64`` (3-D 64^3, feasible on 2 CPU
cores), ``cpu-2d`` (2-D 128x128 slices, minutes), ``demo`` (the demo's small 3-D run) and
``paper-128`` (128^3, batch 1 as in VoxelMorph-style training; uses a GPU when one exists).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from medistill.train import LoopConfig
from medistill.train.config import preset_files

__all__ = [
    "DataConfig",
    "GanConfig",
    "LabelTransferConfig",
    "LossConfig",
    "ModelConfig",
    "presets",
]


def presets() -> dict[str, Path]:
    """Preset name -> YAML file shipped with the package."""
    return preset_files("labeltransfer")


@dataclass
class ModelConfig:
    """The two generators (VoxelMorph-style U-Nets, :class:`medistill.nets.VoxelMorph`).

    Attributes:
        ndim: 2 or 3.
        enc: widths of the four encoder convolutions of each generator.
        dec: widths of the decoder convolutions (VoxelMorph-2 by default, 0.30 M parameters in 3-D).
        cycle_warp: how ``l_bar = (l o Delta_F) o Delta_B`` (and ``l_bar_s``) is computed:
            ``"composed"`` warps the atlas once with the composed field (one interpolation, as
            the cascades do) or ``"sequential"`` warps ``u_bar`` again (two interpolations,
            whose blur the cycle terms then penalise even for exactly inverse fields).
        forward_init: a label-transfer checkpoint (LT-Net or forward-only, same ``ndim``,
            ``enc``, ``dec``) whose forward generator starts ``G_F`` ("" = random start): LT-Net
            then adds its cycles to a forward registration that already works.
        forward_registration: a registration checkpoint or built-in model name (``brain``)
            whose *network and weights* become ``G_F`` ("" = a VoxelMorph U-Net of ``enc`` /
            ``dec``): LT-Net on top of a distilled registration student, fine-tuned by the
            label-transfer losses (``enc`` / ``dec`` then shape ``G_B`` only). Its architecture
            is stored in the label-transfer checkpoint, so the source need not exist later.
        backward_registration: a registration checkpoint or built-in model name whose network
            and weights become ``G_B`` ("" = a VoxelMorph U-Net of ``enc`` / ``dec``): ``G_B``
            maps ``u_bar`` back onto the atlas, a registration itself, so a trained registration
            network inverts ``G_F``'s fields from the first step instead of learning to.
        backward_lr: Adam learning rate of ``G_B`` (0: ``loop.lr``, as ``G_F``'s): ``G_F``
            fine-tuned from a trained network at a small ``loop.lr`` while ``G_B`` learns from
            scratch at its own.
    """

    ndim: int = 3
    enc: tuple[int, ...] = (16, 32, 32, 32)
    dec: tuple[int, ...] = (32, 32, 32, 32, 32, 16, 16)
    cycle_warp: Literal["composed", "sequential"] = "composed"
    forward_init: str = ""
    forward_registration: str = ""
    backward_registration: str = ""
    backward_lr: float = 0.0


@dataclass
class GanConfig:
    """The image discriminator (least-squares GAN) and its optimiser.

    Attributes:
        widths: widths of its stride-2 4x4(x4) convolutions (a patch discriminator).
        lr: its Adam learning rate (betas 0.5, 0.999).
    """

    widths: tuple[int, ...] = (8, 16, 32)
    lr: float = 1e-4


@dataclass
class DataConfig:
    """The labelled atlas and the unlabelled images.

    Attributes:
        source: ``"embedded"`` (atlas: the MNI152 template and tissue labels on the working grid;
            unlabelled images: embedded subjects made from it), ``"labelmaps"`` (images
            synthesised from the label maps in ``path``: map ``atlas_index`` is the atlas, the
            last ``heldout`` maps are kept for evaluation, the others give unlabelled images) or
            ``"images"`` (unlabelled real images in ``path`` (folder or CSV) and the atlas files
            ``atlas`` / ``atlas_labels``).
        path: folder of label maps (``labelmaps``) or folder / CSV of images (``images``).
        images: extra unlabelled real images (folder or CSV) added to the pool (any source).
        atlas: atlas image file (``images``; optional for ``labelmaps``, replaces the synthesised
            atlas image, with ``atlas_labels``).
        atlas_labels: atlas label map on the atlas image's grid.
        atlas_index: which label map is the atlas (``labelmaps``).
        heldout: last label maps kept out of training for evaluation (``labelmaps``).
        labels: ``"keep"`` (atlas label values as they are) or ``"aseg-tissue"`` (FreeSurfer aseg
            labels merged to 0 background, 1 CSF, 2 GM, 3 WM by
            :func:`medistill.data.aseg_to_tissue`; for ``labelmaps`` and aseg atlases). The
            embedded atlas always has the tissue classes.
        shape: working grid (64^3 on a CPU; 2 sizes for 2-D); multiples of 16.
        subjects: embedded unlabelled subjects (``embedded``).
        augment_disp: bound (voxels) of a random cubic B-spline deformation applied to every
            unlabelled image drawn (0 disables).
        seed: seed of the data.
    """

    source: Literal["embedded", "labelmaps", "images"] = "embedded"
    path: str = ""
    images: str = ""
    atlas: str = ""
    atlas_labels: str = ""
    atlas_index: int = 0
    heldout: int = 4
    labels: Literal["keep", "aseg-tissue"] = "keep"
    shape: tuple[int, ...] = (64, 64, 64)
    subjects: int = 16
    augment_disp: float = 2.0
    seed: int = 0


@dataclass
class LossConfig:
    """Weights of the LT-Net terms (seed 002). The total is

    ``gan L_GAN + sim L_sim + lambda1 cyc L_cyc + lambda2 (anatomy L_anat + smooth L_smooth +
    trans L_trans + diff L_diff)``;

    a weight of 0 switches its term off. With ``cyc``, ``anatomy``, ``trans`` and ``diff`` all 0
    the backward generator is not built (forward-only, VoxelMorph-style registration).

    Attributes:
        gan, sim, cyc, anatomy, smooth, trans, diff: per-term weights (1 = the paper's).
        lambda1: weight of the image cycle (10 in the paper).
        lambda2: weight of the anatomy, smoothness, transformation and difference terms (3).
        window: LNCC window in voxels.
        eps, gamma: parameters of ``rho(x) = (x^2 + eps^2)^gamma``.
        smooth_penalty: ``"squared"`` (VoxelMorph's squared differences, the usual reading of
            the seed's ``||grad Delta||_2``) or ``"l2"`` (the norm itself, not squared: with
            ``lambda2 = 3`` it keeps the fields at zero, measured on the embedded data).
        include_background: score label 0 in the anatomy and difference cycles too.
        cycle_start: warm-up steps in which the cycle terms (``cyc``, ``anatomy``, ``trans``,
            ``diff``) train ``G_B`` only: they see ``Delta_F`` and ``u_bar`` without gradient, so
            ``G_F`` learns from ``L_sim``, ``L_smooth`` and ``L_GAN`` alone while ``G_B`` learns
            to invert it (0: the full objective from the first step). From scratch, with ``G_B``
            not yet inverting ``G_F``, the near-L1 ``rho`` and the L1 image cycle pull
            ``Delta_F`` back to zero harder than ``L_sim`` pushes it (measured: gradients 3-13x
            larger and opposed), so zero deformation is a stable point of the full objective.
        cycle_ramp: steps after the warm-up over which the cycle terms' weights on ``G_F`` rise
            linearly from 0 to their values (0: at once).
        backward_pretrain: first steps that train ``G_B`` alone to invert random smooth fields
            (the transformation cycle as a supervised target: the atlas warped by a random
            B-spline field ``D``, ``G_B`` must map it back, ``L_trans(D, Delta_B)``); ``G_F``
            and the discriminator do not move. 0: none. ``cycle_start`` counts from step 0.
        pretrain_disp: bound (voxels, per component) of those random fields.
        pretrain_source: the fields ``G_B`` learns to invert: ``"random"`` (random smooth
            fields, above), ``"forward"`` (``G_F``'s own fields on the batch's images, no
            gradient into ``G_F``: the distribution the cycles will show ``G_B``) or ``"both"``
            (random on even steps, ``G_F``'s on odd ones).
        pretrain_target: 0 (run all ``backward_pretrain`` steps) or the inversion residual
            (mean length, voxels) at which the pre-training ends early: every ``log_every``
            steps ``G_B`` inverts a fixed set of random fields drawn from another seed (never
            trained on) and ``G_F``'s fields for the collapse guard's probe images (drawn from
            the training images), averaged over the atlas's non-zero voxels; the
            first check at which the larger of the two residuals is at most this ends it (the
            step is kept in the checkpoint). ``backward_pretrain`` is the upper bound.
        pretrain_pool: 0 draws a new field for every image of every pre-training step; ``N``
            cycles through ``N`` fields drawn once from ``data.seed`` (a known set to invert).
        balance: ``"none"`` (the seed's weights on the raw terms) or ``"initial"``: each term
            is divided by its magnitude at the first step after ``G_B``'s pre-training (the
            start of the warm-up; stored in the checkpoint), so the seed's weights act as
            ratios between terms of equal size and no term can buy its minimum by undoing the
            alignment; ``L_smooth`` is divided by ``L_sim``'s
            magnitude (the regulariser keeps its raw ratio to the similarity it regularises).
        collapse_threshold: the collapse guard flags ``G_F`` when the spread of its fields over
            a fixed probe of training images (:func:`field_spread`) falls below this.
        cycle_share: 0 (off) or the cap on the cycle terms' pull on ``G_F``: after the warm-up,
            the gradient the cycle terms send into ``Delta_F`` is scaled each step so that its
            norm is at most ``cycle_share`` times the norm of the forward terms' gradient
            (similarity, smoothness, GAN) at ``Delta_F``, measured at the step before (the
            first joint step gives ``G_F`` no cycle gradient). ``G_B`` gets the cycle terms in
            full. Bounds the pull of the cycles instead of their value (``balance``).
    """

    gan: float = 1.0
    sim: float = 1.0
    cyc: float = 1.0
    anatomy: float = 1.0
    smooth: float = 1.0
    trans: float = 1.0
    diff: float = 1.0
    lambda1: float = 10.0
    lambda2: float = 3.0
    window: int = 9
    eps: float = 1e-3
    gamma: float = 0.45
    smooth_penalty: Literal["squared", "l2"] = "squared"
    include_background: bool = False
    cycle_start: int = 0
    cycle_ramp: int = 0
    backward_pretrain: int = 0
    pretrain_disp: float = 4.0
    pretrain_pool: int = 0
    pretrain_source: Literal["random", "forward", "both"] = "random"
    pretrain_target: float = 0.0
    balance: Literal["none", "initial"] = "none"
    collapse_threshold: float = 0.05
    cycle_share: float = 0.0


@dataclass
class LabelTransferConfig:
    """Everything an LT-Net training run needs; saved inside every checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)


#: the LT-Net loss terms, in the order of the checkpoint's balance scales.
LOSS_TERMS = ("gan", "sim", "cyc", "anatomy", "smooth", "trans", "diff")


def uses_backward(loss: LossConfig) -> bool:
    """Whether any term needs the backward generator ``G_B``."""
    return any(w > 0 for w in (loss.cyc, loss.anatomy, loss.trans, loss.diff))


def role_of(cfg: LabelTransferConfig) -> str:
    """``"ltnet"`` (backward generator present) or ``"forward-only"`` (VoxelMorph-style)."""
    return "ltnet" if uses_backward(cfg.loss) else "forward-only"
