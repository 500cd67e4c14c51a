"""Configuration of reconstruction (DC-CNN) and super-resolution (VDSR) training, with presets.

Presets (``--config NAME``): ``cpu-128`` (128x128 slices, feasible on 2 CPU cores), ``paper-256``
(KD-MRI's 256x256 setting: Adam 1e-3, batch 4; uses a GPU when one exists), ``demo`` (64x64,
minutes) and ``test`` (tiny, for the test-suite).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from medistill.train import LoopConfig
from medistill.train.config import preset_files, renamed

__all__ = [
    "DataConfig",
    "DistillConfig",
    "MaskConfig",
    "ModelConfig",
    "ReconConfig",
    "SRConfig",
    "presets",
]


def presets() -> dict[str, Path]:
    """Preset name -> YAML file shipped with the package."""
    return preset_files("recon")


@dataclass
class ModelConfig:
    """Network settings of both roles (the role picks its own).

    Attributes:
        cascades: DC-CNN cascades ``n_c`` (teacher and student).
        teacher_convs: convolutions per cascade of the DC-CNN teacher ``n_d``.
        student_convs: convolutions per cascade of the DC-CNN student.
        channels: hidden width of the DC-CNN.
        residual: residual connection per cascade (slides) or not (public code).
        sr_teacher_convs: VDSR teacher depth.
        sr_student_convs: VDSR student depth.
        sr_channels: VDSR hidden width.
    """

    cascades: int = 5
    teacher_convs: int = 5
    student_convs: int = 3
    channels: int = 32
    residual: bool = True
    sr_teacher_convs: int = 11
    sr_student_convs: int = 7
    sr_channels: int = 64


@dataclass
class DataConfig:
    """Training slices.

    Attributes:
        source: ``"embedded"`` (MNI152 slices shipped with nilearn) or ``"files"`` (``paths``).
        paths: files or folders of volumes / slices (``files`` only).
        size: side of the square slices (128 on a CPU, 256 in the paper).
        slices: number of embedded slices (``embedded``), or at most this many planes per
            volume (``files``; 0 = all).
        min_area: keep planes whose foreground is at least this fraction of the largest.
        seed: seed of the embedded slices.
    """

    source: Literal["embedded", "files"] = "embedded"
    paths: list[str] = field(default_factory=list)
    size: int = 128
    slices: int = 200
    min_area: float = 0.25
    seed: int = 0


@dataclass
class MaskConfig:
    """The fixed undersampling mask of a reconstruction run (one mask per acceleration).

    Attributes:
        acceleration: 4, 5, 8, ...
        kind: ``"random"`` (exact line count), ``"equispaced"`` or ``"fastmri-random"``.
        center_fraction: fully sampled central fraction; 0 = ``0.32 / acceleration``.
        seed: mask seed.
        path: a ``.npy`` mask (``(W,)`` or ``(H, W)``, centred layout) instead of generating one.
    """

    acceleration: float = 4.0
    kind: Literal["random", "equispaced", "fastmri-random"] = "random"
    center_fraction: float = 0.0
    seed: int = 0
    path: str = ""


@dataclass
class SRConfig:
    """Super-resolution degradation: keep the central ``size / factor`` block of k-space."""

    factor: float = 4.0


@dataclass
class DistillConfig:
    """How a student learns (ignored for teachers).

    Attributes:
        mode: ``"none"`` (L1 to the target), ``"at"`` (KD-MRI step 2: attention transfer only),
            ``"imitation"`` (``alpha L1(target) + (1 - alpha) L1(teacher)``) or ``"kd"`` (step 2
            then step 3: attention transfer for ``at_steps``, then imitation from those weights).
            ``kind``, its old name, is still read (YAML, ``--set``, checkpoints) and written.
        teacher: teacher checkpoint (``at``, ``imitation``, ``kd``).
        init: student checkpoint to start from (e.g. a step-2 ``at`` run for step 3).
        alpha: weight of the reconstruction term of the imitation loss.
        at_distance: ``"l1"`` or ``"l2"`` between normalised attention maps.
        at_steps: steps of the attention stage of ``kd`` (0: ``loop.steps``).
    """

    mode: Literal["none", "at", "imitation", "kd"] = renamed("none", "kind")
    teacher: str = ""
    init: str = ""
    alpha: float = 0.5
    at_distance: Literal["l1", "l2"] = "l1"
    at_steps: int = 0


@dataclass
class ReconConfig:
    """Everything a reconstruction / super-resolution training run needs; saved in checkpoints."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    sr: SRConfig = field(default_factory=SRConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(lr=1e-3, batch_size=4, seed=42))
