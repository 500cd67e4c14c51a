"""Configuration of reconstruction (DC-CNN) and super-resolution (VDSR) training, with presets.

Presets (``--config NAME``): ``cpu-128`` (128x128 slices, feasible on 2 CPU cores),
``cpu-128-pooled`` (the same on every real slice of ``../shared/data``, split by subject, with
intensity augmentation, validated on the val subjects with early stopping), ``paper-256``
(KD-MRI's 256x256 setting: Adam 1e-3, batch 4, on the same pooled source, up to 40000 steps with
early stopping; uses a GPU when one exists), ``demo`` (64x64, minutes) and ``test`` (tiny, for
the test-suite).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from medistill.errors import InputError
from medistill.train import LoopConfig
from medistill.train.config import preset_files, renamed

__all__ = [
    "DataConfig",
    "DistillConfig",
    "MaskConfig",
    "ModelConfig",
    "ReconConfig",
    "SRConfig",
    "check_fractions",
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
        channels: hidden width of the DC-CNN (the teacher's; the student's too unless
            ``student_channels`` is set).
        student_channels: hidden width of the DC-CNN student; 0 = ``channels`` (KD-MRI's
            student: 32, as the teacher). Attention maps sum over channels, so attention transfer
            pairs layers of different widths.
        residual: residual connection per cascade (slides) or not (public code).
        sr_teacher_convs: VDSR teacher depth.
        sr_student_convs: VDSR student depth.
        sr_channels: VDSR hidden width.
    """

    cascades: int = 5
    teacher_convs: int = 5
    student_convs: int = 3
    channels: int = 32
    student_channels: int = 0
    residual: bool = True
    sr_teacher_convs: int = 11
    sr_student_convs: int = 7
    sr_channels: int = 64


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Raise a one-line :class:`~medistill.errors.InputError` unless both held-out fractions are
    in [0, 1) and their sum is below 1."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"config: data.{name} must be a number in [0, 1), got {value!r}")
        if not 0.0 <= value < 1.0:
            raise InputError(f"config: data.{name} must be in [0, 1), got {value!r}")
    if val_fraction + test_fraction >= 1.0:
        raise InputError(
            "config: data.val_fraction + data.test_fraction must be < 1 (some subjects must "
            f"train), got {val_fraction} + {test_fraction}"
        )


@dataclass
class DataConfig:
    """Training slices.

    Attributes:
        source: ``"embedded"`` (MNI152 slices shipped with nilearn), ``"files"`` (``paths``) or
            ``"pooled"`` (every real slice under ``paths``, split by subject:
            :mod:`medistill.recon.pooled`).
        paths: files or folders of volumes / slices (``files``); roots laid out like
            ``../shared/data``, folders or files (``pooled``; empty: ``../shared/data`` relative to
            the current directory when it exists).
        size: side of the square slices (128 on a CPU, 256 in the paper).
        slices: number of embedded slices (``embedded``), or at most this many planes per
            volume (``files``) or per volume and axis (``pooled``); 0 = all.
        min_area: keep planes whose foreground is at least this fraction of the largest.
        seed: seed of the embedded slices and of the ``pooled`` subject split.
        val_fraction: fraction of each group's subjects held out for validation (``pooled``).
        test_fraction: fraction of each group's subjects held out for testing (``pooled``).
        augment: augment training slices (:func:`medistill.recon.augment.augment_slices`) before
            their k-space is simulated; the ``aug_*`` keys act only when this is true.
        aug_gamma: ``(low, high)`` range of the gamma exponent, log-uniform; ``(1, 1)`` = off.
        aug_invert: probability of inverting the contrast inside the foreground (T2-like).
        aug_bias: bound of the log standard deviation of a smooth multiplicative bias field.
        aug_noise: bound of the standard deviation of added Gaussian noise (intensity units,
            slices in [0, 1]).
        aug_flip: random left-right and up-down flips (each with probability 1/2).
    """

    source: Literal["embedded", "files", "pooled"] = "embedded"
    paths: list[str] = field(default_factory=list)
    size: int = 128
    slices: int = 200
    min_area: float = 0.25
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    augment: bool = False
    aug_gamma: tuple[float, float] = (0.7, 1.5)
    aug_invert: float = 0.3
    aug_bias: float = 0.3
    aug_noise: float = 0.02
    aug_flip: bool = True

    def __post_init__(self) -> None:
        """Refuse values no run can use, when the config is loaded."""
        self.validate()

    def validate(self) -> None:
        """Raise :class:`~medistill.errors.InputError` (one line) for unusable values."""
        check_fractions(self.val_fraction, self.test_fraction)
        gamma = tuple(self.aug_gamma)
        if len(gamma) != 2 or not 0 < gamma[0] <= gamma[1] < float("inf"):
            raise InputError(
                f"config: data.aug_gamma must be [low, high] with 0 < low <= high, got {gamma!r}"
            )
        if not 0.0 <= self.aug_invert <= 1.0:
            raise InputError(f"config: data.aug_invert must be in [0, 1], got {self.aug_invert!r}")
        for name in ("aug_bias", "aug_noise"):
            value = getattr(self, name)
            if not 0.0 <= value < float("inf"):
                raise InputError(f"config: data.{name} must be a finite number >= 0, got {value!r}")
        if self.slices < 0:
            raise InputError(f"config: data.slices must be >= 0, got {self.slices!r}")


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
        at_steps: steps of the attention stage of ``kd`` (0: ``loop.steps``); its learning
            rate decays at the same fractions of them as ``loop.lr_decay_steps`` of
            ``loop.steps``.
        at_layers: ``[teacher, student]`` 1-based convolution (of every cascade / of the VDSR
            body) whose ReLU output is paired by attention transfer; 0 = KD-MRI's pairing
            (the middle layer: teacher DC-CNN conv3 / student conv2, VDSR conv6 / conv4).
        cascade_imitation: weight of an extra imitation term (DC-CNN students, ``imitation``
            and the imitation stage of ``kd``; not in KD-MRI): the mean L1 distance between the
            student's and the teacher's data-consistent images after each cascade but the last
            (the last is the imitation term itself); needs as many cascades in both; 0 = off.
    """

    mode: Literal["none", "at", "imitation", "kd"] = renamed("none", "kind")
    teacher: str = ""
    init: str = ""
    alpha: float = 0.5
    at_distance: Literal["l1", "l2"] = "l1"
    at_steps: int = 0
    at_layers: tuple[int, int] = (0, 0)
    cascade_imitation: float = 0.0


@dataclass
class ReconConfig:
    """Everything a reconstruction / super-resolution training run needs; saved in checkpoints."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    sr: SRConfig = field(default_factory=SRConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    loop: LoopConfig = field(default_factory=lambda: LoopConfig(lr=1e-3, batch_size=4, seed=42))
