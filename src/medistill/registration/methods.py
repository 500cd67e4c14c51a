"""Registrars: the ways to register a pair on native grids behind one call.

A registrar is ``registrar(fixed, moving, *, moving_labels=None, fixed_labels=None,
initial="com", outputs=OUTPUTS) -> Registration``
(:class:`~medistill.spatial.native.Registration`), the form
:func:`medistill.registration.evaluate.evaluate_pairs`, ``medistill register`` and the demo use.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from medistill.errors import InputError
from medistill.io import Image
from medistill.optimise.config import OptimiseConfig
from medistill.spatial.native import OUTPUTS
from medistill.typing import PathLike

__all__ = ["ENGINES", "Registrar", "network_registrar", "optimiser_registrar"]

ENGINES = ("torch", "onnx")

Registrar = Callable[..., Any]


def network_registrar(
    model: PathLike,
    *,
    refine: int = 0,
    refine_cfg: OptimiseConfig | None = None,
    refine_level: int = 1,
    engine: str = "torch",
) -> tuple[Registrar, int, str, int]:
    """``(registrar, ndim, description, params)`` for a checkpoint (``engine="torch"``) or an
    ONNX export (``engine="onnx"``, run by onnxruntime), optionally refined by ``refine``
    optimiser iterations with ``refine_cfg`` (from its field, at pyramid factor
    ``refine_level`` of the network's working grid: :func:`medistill.optimise.refined_field`).

    Raises:
        InputError: an unknown engine, an ONNX engine without an ``.onnx`` file, or a checkpoint
            that cannot be loaded.
    """
    from medistill.spatial.native import register_images

    if engine == "onnx":
        from medistill.registration.onnx import OnnxField

        if not str(model).endswith(".onnx"):
            raise InputError(f"--engine onnx needs an .onnx file as --model, got {model}")
        import torch

        field = OnnxField(model, threads=torch.get_num_threads())  # a worker's share, if one
        shape, role, params = field.shape, f"ONNX {Path(model).name}", 0
    elif engine == "torch":
        from medistill.registration.model import load_model

        field, ckpt, cfg = load_model(model)
        shape, role, params = tuple(cfg.data.shape), str(ckpt.get("role")), ckpt.get("params", 0)
    else:
        raise InputError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if refine:
        from medistill.optimise import refined_field

        field = refined_field(field, refine_cfg, refine, level=refine_level)

    def registrar(
        fixed: Image,
        moving: Image,
        *,
        moving_labels=None,
        fixed_labels=None,
        initial: str = "com",
        outputs: Sequence[str] = OUTPUTS,
    ):
        return register_images(
            field,
            fixed,
            moving,
            shape=shape,
            moving_labels=moving_labels,
            initial=initial,
            outputs=outputs,
        )

    if refine:
        role += f" + {refine} refinement iterations"
        role += f" at 1/{refine_level} resolution" if refine_level > 1 else ""
    return registrar, len(shape), role, int(params)


def optimiser_registrar(cfg: OptimiseConfig, *, progress: bool = False) -> Registrar:
    """The per-pair optimiser with settings ``cfg`` as a registrar; an ``initial`` given to the
    registrar replaces ``cfg.initial`` for that call; ``fixed_labels`` feed the privileged term."""
    from medistill.optimise import register_optimise

    def registrar(
        fixed: Image,
        moving: Image,
        *,
        moving_labels=None,
        fixed_labels=None,
        initial: str | None = None,
        outputs: Sequence[str] = OUTPUTS,
    ):
        call = cfg if initial is None else dataclasses.replace(cfg, initial=initial)
        return register_optimise(
            fixed,
            moving,
            call,
            moving_labels=moving_labels,
            fixed_labels=fixed_labels,
            progress=progress,
            outputs=outputs,
        )

    return registrar
