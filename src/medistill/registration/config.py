"""Configuration of registration training (teacher and student), with YAML presets.

Presets (``medistill train teacher --config NAME``): ``cpu-64`` (feasible on 2 CPU cores),
``paper-128`` (the papers' 128^3 setting; uses a GPU when one exists) and ``demo`` (minutes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from medistill.errors import InputError
from medistill.train import LoopConfig
from medistill.train.config import preset_files


def presets() -> dict[str, Path]:
    """Preset name -> YAML file shipped with the package."""
    return preset_files("registration")


@dataclass
class ModelConfig:
    """Network settings.

    Attributes:
        ndim: 2 or 3.
        cascades: number of deformable subnetworks (recursive cascades).
        affine: an affine stem first.
        teacher_width: width of the first VTN level (16 in the paper: 28 M parameters per cascade).
        student_variant: ``"ldr"`` (the paper's light network) or ``"fast"`` (lower CPU latency).
        student_downsample: 1, or 2 to run the student's stages at half the working grid's
            resolution (its field is upsampled to the working grid; lower CPU latency).
        architecture: ``"cascade"`` (teacher / student) or ``"voxelmorph"`` (the learned baseline).
    """

    ndim: int = 3
    cascades: int = 3
    affine: bool = True
    teacher_width: int = 16
    student_variant: Literal["ldr", "fast"] = "ldr"
    student_downsample: int = 1
    architecture: Literal["cascade", "voxelmorph"] = "cascade"

    def __post_init__(self) -> None:
        """Refuse values no network can be built with (when the config is loaded)."""
        if self.ndim not in (2, 3):
            raise InputError(f"config: model.ndim must be 2 or 3, got {self.ndim!r}")
        for name in ("cascades", "teacher_width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"config: model.{name} must be an integer >= 1, got {value!r}")


@dataclass
class DataConfig:
    """Training pairs.

    Attributes:
        source: ``"embedded"`` (subjects made from the MNI152 template shipped with nilearn),
            ``"labelmaps"`` (SynthMorph-style images synthesised from the label maps in ``path``)
            or ``"images"`` (a folder / CSV / HDF5 of real images at ``path``; random pairs).
        path: folder, CSV or HDF5 for ``labelmaps`` / ``images``.
        shape: working grid (64^3 on a CPU, 128^3 in the papers).
        subjects: embedded subjects to make (``embedded`` only).
        pairs: size of the fixed training-pair set that the teacher-flow cache covers.
        augment_disp: bound (voxels) of the random B-spline deformation applied to the moving
            image of each training pair (0 disables), 5 control points per axis as in RCN.
        augment_affine: random affine of the moving image of each training pair, about the grid
            centre: ``[rotation bound in degrees (random axis), shift bound in voxels, scale bound
            (fraction per axis)]``; zeros disable it. Scans that are not aligned in world space
            need a student whose affine stem has seen such offsets.
        seed: seed of the data.
        holdout: ``labelmaps`` only: a folder of at least 7 maps is split by
            :func:`~medistill.data.split_label_maps` and only its training part is read (the
            last 5 maps by name are held out). ``false`` reads every map of the folder: for a
            folder that holds training maps only (e.g. a copy of a split's training part, which
            would otherwise be split a second time).
    """

    source: Literal["embedded", "labelmaps", "images"] = "embedded"
    path: str = ""
    shape: tuple[int, ...] = (64, 64, 64)
    subjects: int = 16
    pairs: int = 200
    augment_disp: float = 4.0
    augment_affine: tuple[float, ...] = (0.0, 0.0, 0.0)
    seed: int = 0
    holdout: bool = True

    def __post_init__(self) -> None:
        """Refuse values no run can use (when the config is loaded)."""
        shape = tuple(self.shape)
        if len(shape) not in (2, 3) or any(
            isinstance(n, bool) or not isinstance(n, int) or n < 8 for n in shape
        ):
            raise InputError(
                f"config: data.shape must be 2 or 3 integers >= 8, got {list(self.shape)!r}"
            )
        for name in ("subjects", "pairs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"config: data.{name} must be an integer >= 1, got {value!r}")
        if not self.augment_disp >= 0:
            raise InputError(f"config: data.augment_disp must be >= 0, got {self.augment_disp!r}")
        if len(self.augment_affine) != 3 or any(not v >= 0 for v in self.augment_affine):
            raise InputError(
                "config: data.augment_affine must be 3 numbers >= 0 [degrees, voxels, scale], "
                f"got {list(self.augment_affine)!r}"
            )


@dataclass
class LossConfig:
    """Loss weights (RCN: correlation similarity, smoothness 1, affine det/ortho 0.1 each)."""

    smooth: float = 1.0
    affine_det: float = 0.1
    affine_ortho: float = 0.1


@dataclass
class DistillConfig:
    """How the student learns from the teacher.

    Attributes:
        mode: ``"none"`` (similarity + smoothness only), ``"l1"`` (plus L1 to the teacher's field),
            ``"aldk"`` (adversarial: Wasserstein critic with gradient penalty on fields) or
            ``"l1_aldk"`` (the critic on top of the L1 term: ``gamma * (l_rec + l1_weight * L1)
            + (1 - gamma) * l_dis``).
        teacher: the teacher of every mode but ``none``: a trained network's checkpoint (e.g. the
            RCN, for GPU users), ``optimise``: per-pair optimisation registration
            (:mod:`medistill.optimise`, no training, strong on a CPU), or ``ants``: antspyx SyN
            (optional extra ``medistill[ants]``; slow, a reference teacher).
        teacher_config: the optimiser's preset name or YAML file (``teacher: optimise``).
        teacher_set: overrides of the optimiser's settings, e.g. ``["deformable.kind=svf"]``.
        teacher_batch: pairs the teacher registers at once while the cache is built.
        cache: folder of the teacher-flow cache (default: ``<out>/flow_cache``).
        gamma: weight of the reconstruction loss in ``gamma*l_rec + (1-gamma)*l_dis``.
        beta: mixing of the gradient-penalty point ``phi_hat = beta*phi_t + (1-beta)*phi_s``;
            a negative value draws beta uniformly in [0, 1] per sample (WGAN-GP).
        gp_lambda: gradient-penalty weight. 10 (WGAN-GP's value) by default: with the public
            code's 0.1 (never exercised there, its critic is not optimised) the critic's values
            and the adversarial term grew without bound in a 64^3 run (docs/RESULTS.md).
        critic_every: student updates per critic update (k).
        critic_downsample: the critic sees fields averaged over blocks of this many voxels per
            axis (in coarse voxels), which makes ALDK affordable on a CPU; 1 = full resolution.
        critic_lr: critic learning rate.
        l1_weight: weight of the L1 flow term in ``l1`` and ``l1_aldk`` modes.
        adv_per_element: divide the ALDK student term ``(D(phi_s) - D(phi_t))^2`` by the number
            of values of the critic's input field. For a 1-Lipschitz critic the raw term grows
            with the field's size (up to the squared L2 distance of the fields) and outweighs
            the similarity loss at ``gamma = 0.3``; per element it is at most their mean squared
            difference. ``False`` is the paper's term.
    """

    mode: Literal["none", "l1", "aldk", "l1_aldk"] = "none"
    teacher: str = ""
    teacher_config: str = "brain"
    teacher_set: tuple[str, ...] = ()
    teacher_batch: int = 2
    cache: str = ""
    gamma: float = 0.3
    beta: float = 0.1
    gp_lambda: float = 10.0
    critic_every: int = 2
    critic_downsample: int = 2
    critic_lr: float = 1e-4
    l1_weight: float = 1.0
    adv_per_element: bool = False


@dataclass
class RegistrationConfig:
    """Everything a registration training run needs; saved inside every checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
