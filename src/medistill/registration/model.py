"""Building registration networks from a config, and saving / loading them as checkpoints."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from medistill.nets import (
    REGISTRATION_ROLES,
    Cascade,
    build_registration_network,
    count_parameters,
)
from medistill.registration.config import ModelConfig, RegistrationConfig
from medistill.train import (
    checkpoint_contents,
    export_checkpoint,
    from_dict,
    load_checkpoint,
    to_dict,
)
from medistill.typing import PathLike

ROLES = REGISTRATION_ROLES
TASK = "registration"


def build_model(cfg: ModelConfig, role: str) -> Cascade:
    """The network of ``role``: ``teacher`` (affine stem + VTN cascades), ``student`` (small affine
    stem + LDR cascades) or ``voxelmorph`` (one VoxelMorph-style U-Net, the learned baseline).

    All return a :class:`~medistill.nets.Cascade`, so they are trained and applied the same way
    (:func:`medistill.nets.build_registration_network`, which other tasks use on a checkpoint's
    config).
    """
    return build_registration_network(dataclasses.asdict(cfg), role)


def size_multiple(role: str, cfg: ModelConfig | None = None) -> int:
    """Working-grid sizes must be multiples of this (network downsamplings)."""
    if role == "teacher":
        return 64
    if role == "student" and cfg is not None:
        return 16 * cfg.student_downsample
    return 16


def checkpoint_meta(cfg: RegistrationConfig, role: str, model: nn.Module) -> dict[str, Any]:
    """What a registration checkpoint stores besides weights."""
    return {
        "task": TASK,
        "role": role,
        "config": to_dict(cfg),
        "params": count_parameters(model),
        "io": {
            "working_shape": list(cfg.data.shape),
            "grid": "isotropic RAS grid around the fixed image's content (WorkingGrid.around)",
            "inputs": "fixed, moving: (B, 1, *working_shape) float32, intensities clipped to "
            "their 0.5 / 99.5 percentiles and scaled to [0, 1]; moving pre-aligned by centres "
            "of mass",
            "output": "disp: (B, ndim, *working_shape) displacement in working-grid voxels, "
            "channel k along axis k; warped(x) = moving(x + disp(x))",
        },
    }


def export_model(state: dict[str, Any], path: PathLike) -> None:
    """Write a slim inference checkpoint (weights, config, role; no optimizer state)."""
    export_checkpoint(state, path, "model")


def load_model(path: PathLike) -> tuple[Cascade, dict[str, Any], RegistrationConfig]:
    """A registration network from a checkpoint, in eval mode on the CPU.

    Raises:
        InputError: missing, corrupt or foreign file, another task's checkpoint, or weights that
            do not fit the network the checkpoint's config describes.
    """
    ckpt = load_checkpoint(path, task=TASK)
    with checkpoint_contents(path):
        cfg = from_dict(RegistrationConfig, ckpt["config"])
        model = build_model(cfg.model, ckpt["role"])
        model.load_state_dict(ckpt["modules"]["model"])
    model.eval()
    return model, ckpt, cfg
