"""Building reconstruction / super-resolution networks from a config, the fixed mask of a run,
and saving / loading them as checkpoints (``task: "recon"``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from medistill.errors import InputError
from medistill.recon.config import MaskConfig, ModelConfig, ReconConfig
from medistill.recon.dccnn import DCCNN, NetOutput
from medistill.recon.kspace import simulate, sr_degrade
from medistill.recon.masks import load_mask, make_mask
from medistill.recon.vdsr import VDSR
from medistill.train import (
    checkpoint_contents,
    export_checkpoint,
    from_dict,
    load_checkpoint,
    to_dict,
)
from medistill.typing import PathLike

log = logging.getLogger(__name__)

TASK = "recon"
ROLES: tuple[str, ...] = ("recon-teacher", "recon-student", "sr-teacher", "sr-student")
#: how :meth:`ReconModel.run` runs the network: traced and frozen (CPU) or eagerly
ENGINES: tuple[str, ...] = ("torchscript", "eager")

__all__ = [
    "ENGINES",
    "ROLES",
    "TASK",
    "ReconModel",
    "build_model",
    "checkpoint_meta",
    "count_parameters",
    "export_model",
    "is_sr",
    "load_model",
    "run_mask",
    "teacher_role",
]


def check_role(role: str) -> str:
    """Return ``role`` if known, else raise with the valid names."""
    if role not in ROLES:
        raise InputError(f"recon role must be one of {', '.join(ROLES)}, got {role!r}")
    return role


def is_sr(role: str) -> bool:
    """Whether ``role`` is a super-resolution (VDSR) role."""
    return check_role(role).startswith("sr-")


def teacher_role(role: str) -> str:
    """The teacher role matching a student role (``recon-student`` -> ``recon-teacher``)."""
    return check_role(role).split("-")[0] + "-teacher"


def build_model(cfg: ModelConfig, role: str) -> nn.Module:
    """The network of ``role``: DC-CNN teacher / student or VDSR teacher / student."""
    check_role(role)
    if role == "recon-teacher":
        return DCCNN(cfg.cascades, cfg.teacher_convs, cfg.channels, residual=cfg.residual)
    if role == "recon-student":
        width = cfg.student_channels or cfg.channels
        return DCCNN(cfg.cascades, cfg.student_convs, width, residual=cfg.residual)
    convs = cfg.sr_teacher_convs if role == "sr-teacher" else cfg.sr_student_convs
    return VDSR(convs, cfg.sr_channels)


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements."""
    return sum(p.numel() for p in model.parameters())


def run_mask(cfg: MaskConfig, shape: tuple[int, int]) -> np.ndarray:
    """The fixed mask of a run for k-space of ``shape = (H, W)`` (centred layout).

    From ``cfg.path`` when set (``(W,)`` or ``(H, W)``), else :func:`make_mask` over ``W``.
    """
    if cfg.path:
        return load_mask(cfg.path, shape, layout="centered")
    cf = cfg.center_fraction if cfg.center_fraction > 0 else None
    return make_mask(shape[1], cfg.acceleration, kind=cfg.kind, center_fraction=cf, seed=cfg.seed)


def mask_tensor(mask: np.ndarray) -> Tensor:
    """A centred mask as a float tensor ``(1, 1, 1, W)`` or ``(1, 1, H, W)``."""
    m = torch.from_numpy(np.asarray(mask, dtype=np.float32))
    return m.reshape(1, 1, 1, -1) if m.dim() == 1 else m.reshape(1, 1, *m.shape)


def checkpoint_meta(
    cfg: ReconConfig, role: str, model: nn.Module, mask: np.ndarray | None
) -> dict[str, Any]:
    """What a recon checkpoint stores besides weights (the mask of recon roles included)."""
    meta: dict[str, Any] = {
        "task": TASK,
        "role": role,
        "config": to_dict(cfg),
        "params": count_parameters(model),
        "io": recon_io(cfg, role),
    }
    if mask is not None:
        meta["mask"] = torch.from_numpy(np.asarray(mask, dtype=bool))
    return meta


def recon_io(cfg: ReconConfig, role: str) -> dict[str, Any]:
    """The I/O contract of a recon / SR checkpoint (shapes, normalisation, units)."""
    size = int(cfg.data.size)
    if role.startswith("sr"):
        return {
            "working_shape": [size, size],
            "inputs": f"image: (B, 1, {size}, {size}) float32 magnitude, each volume scaled to "
            f"max 1, low-resolution (the central 1/{cfg.sr.factor} of k-space per axis) "
            "brought back to the full grid",
            "output": f"image: (B, 1, {size}, {size}) float32 magnitude on the same scale",
        }
    return {
        "working_shape": [size, size],
        "inputs": f"image: (B, 1, {size}, {size}) float32 zero-filled magnitude; kspace: "
        f"(B, 1, {size}, {size}) complex64 undersampled k-space, centred layout (DC at H//2, "
        "W//2), orthonormal FFT; mask: 0/1 lines along the last axis (stored in the "
        "checkpoint); each volume scaled to max 1",
        "output": f"image: (B, 1, {size}, {size}) float32 magnitude, data-consistent on the "
        "measured lines, on the input's scale",
    }


def export_model(state: dict[str, Any], path: PathLike) -> None:
    """Write a slim inference checkpoint (weights, config, role, mask; no optimizer state)."""
    export_checkpoint(state, path, "model")


@dataclass
class ReconModel:
    """A trained network with what it needs to prepare its inputs.

    Attributes:
        net: the network (eval mode).
        role: one of :data:`ROLES`.
        config: the run's config.
        mask: the run's centred training mask (recon roles), else ``None``.
        params: number of parameters.
    """

    net: nn.Module
    role: str
    config: ReconConfig
    mask: np.ndarray | None
    params: int
    engine: str = "torchscript"
    _frozen: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_sr(self) -> bool:
        return is_sr(self.role)

    def mask_for(self, shape: tuple[int, int], acceleration: float | None = None) -> np.ndarray:
        """The centred mask for k-space of ``shape``: the training mask when it fits and the
        acceleration is the trained one, else a new mask made by the run's mask settings."""
        cfg = self.config.mask
        acc = cfg.acceleration if acceleration is None else float(acceleration)
        same_acc = abs(acc - cfg.acceleration) < 1e-9
        if self.mask is not None and same_acc:
            m = self.mask
            if (m.ndim == 1 and m.shape[0] == shape[1]) or m.shape == tuple(shape):
                return m
        if cfg.path and same_acc:
            have = "?" if self.mask is None else tuple(self.mask.shape)
            raise InputError(
                f"the model's mask {cfg.path} has shape {have}, which does not fit k-space "
                f"{tuple(shape)}"
            )
        cf = cfg.center_fraction if cfg.center_fraction > 0 else None
        return make_mask(shape[1], acc, kind=cfg.kind, center_fraction=cf, seed=cfg.seed)

    def inputs(
        self, target: Tensor, acceleration: float | None = None
    ) -> tuple[tuple[Tensor, ...], Tensor]:
        """Network inputs simulated from ``(B, 1, H, W)`` magnitude images in [0, 1].

        Returns:
            ``(inputs, degraded)``: the positional inputs of :meth:`run` (``(zero_filled,
            kspace, mask)`` for DC-CNN, ``(low_res,)`` for VDSR) and the degraded image
            (zero-filled / low-resolution magnitude) ``(B, 1, H, W)``.
        """
        if self.is_sr:
            low = sr_degrade(target, self.config.sr.factor)
            return (low,), low
        mask = self.mask_for(tuple(target.shape[-2:]), acceleration)
        m = mask_tensor(mask).to(target.device)
        sim = simulate(target, m, "centered")
        return (sim.zero_filled, sim.kspace, m), sim.zero_filled

    def with_engine(self, engine: str) -> ReconModel:
        """The same network (weights shared, not copied) run by another engine:
        ``"torchscript"`` (traced and frozen on the CPU) or ``"eager"``; its own frozen cache."""
        if engine not in ENGINES:
            raise InputError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
        return replace(self, engine=engine, _frozen={})

    @torch.inference_mode()
    def run(self, *inputs: Tensor) -> Tensor:
        """The network's ``(B, 1, H, W)`` output for the inputs from :meth:`inputs`.

        With ``engine="torchscript"`` (the default) on the CPU, the network is traced and frozen
        once per input size (any batch size) and :func:`torch.jit.optimize_for_inference` fuses
        each convolution with its ReLU and prepacks the weights for oneDNN: outputs equal to
        the eager network's within 1e-4 (float rounding), faster per slice (docs/RESULTS.md). A
        network that cannot be traced runs eagerly; ``engine="eager"`` always does. The frozen
        copy holds the weights of its first call: after changing ``net``'s weights, clear
        ``_frozen`` (or load the model again).
        """
        if self.engine == "torchscript" and all(t.device.type == "cpu" for t in inputs):
            frozen = self._frozen_for(inputs)
            if frozen is not None:
                return frozen(*inputs)
        out: NetOutput = self.net(*inputs)
        return out.image

    def _frozen_for(self, inputs: tuple[Tensor, ...]) -> torch.jit.ScriptModule | None:
        """The frozen, inference-optimised network for inputs of these sizes (cached)."""
        import warnings

        key = tuple((tuple(t.shape[1:]), t.dtype) for t in inputs)
        if key not in self._frozen:
            try:
                with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # tracer warnings on shape checks
                    example = tuple(t.clone() for t in inputs)
                    wrapped = _ImageOnly(self.net).eval()
                    traced = torch.jit.trace(wrapped, example, check_trace=False)
                    self._frozen[key] = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
            except Exception as err:  # noqa: BLE001 - any tracing failure: run eagerly
                log.debug("recon: tracing failed (%s); the network runs eagerly", err)
                self._frozen[key] = None
        return self._frozen[key]


class _ImageOnly(nn.Module):
    """A recon network that returns only its image (what tracing needs: tensors out)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, *inputs: Tensor) -> Tensor:
        return self.net(*inputs).image


def load_model(path: PathLike) -> ReconModel:
    """A reconstruction / SR network from a checkpoint, in eval mode on the CPU, its weights in
    the channels-last memory format: oneDNN then runs the convolutions without layout reorders
    (DC-CNN teacher 2.0-2.6x, student 1.3-2.4x faster at 256x256 on 2 threads, docs/RESULTS.md;
    outputs equal to 1e-4). Inputs and outputs keep their ``(B, 1, H, W)`` shapes.

    Raises:
        InputError: missing, corrupt or foreign file, another task's checkpoint, or weights that
            do not fit the network the checkpoint's config describes.
    """
    ckpt = load_checkpoint(path, task=TASK)
    with checkpoint_contents(path):
        cfg = from_dict(ReconConfig, ckpt["config"])
        role = check_role(ckpt["role"])
        net = build_model(cfg.model, role)
        net.load_state_dict(ckpt["modules"]["model"])
        mask = ckpt.get("mask")
        mask = None if mask is None else np.asarray(mask.numpy(), dtype=bool)
    net.eval().to(memory_format=torch.channels_last)
    return ReconModel(net, role, cfg, mask, count_parameters(net))
