"""How ``register`` and ``evaluate`` register a pair: a network, the optimiser, or both."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from medistill.errors import InputError
from medistill.io import Image

METHODS = ("network", "optimise")

Registrar = Callable[..., object]


def optimise_config(config: str | None, set_: list[str] | None):
    """The optimiser's settings from a preset name or YAML file (default preset ``brain``)."""
    from medistill.optimise import OptimiseConfig, presets, validate
    from medistill.train import load_config

    cfg = load_config(OptimiseConfig, config or "brain", presets=presets(), overrides=set_ or [])
    return validate(cfg)


def check_method(
    method: str, model: Path | None, refine: int, config: str | None, set_: list[str] | None
) -> None:
    """Refuse option combinations that make no sense, before any work (one line each)."""
    if method not in METHODS:
        raise InputError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if refine < 0:
        raise InputError(f"--refine must be an iteration count >= 0, got {refine}")
    if method == "optimise":
        if model is not None:
            raise InputError("--method optimise needs no --model (it registers without training)")
        if refine:
            raise InputError(
                "--refine refines a network's result; with --method optimise "
                "set the iterations in --config / --set instead"
            )
    else:
        if model is None:
            raise InputError("--model is required with --method network (or use --method optimise)")
        if (config is not None or set_) and not refine:
            raise InputError(
                "--config / --set configure the optimiser: use them with "
                "--method optimise or --refine N"
            )


def network_registrar(
    model: Path,
    refine: int,
    config: str | None,
    set_: list[str] | None,
    *,
    progress: bool = False,
    engine: str = "torch",
):
    """``(registrar, ndim, description, params)`` for a checkpoint (``engine="torch"``) or an
    ONNX export (``engine="onnx"``, run by onnxruntime), optionally refined by the optimiser
    (``refine`` iterations at the network's working resolution, from the network's field)."""
    from medistill.spatial.native import register_images

    if engine == "onnx":
        from medistill.registration.onnx import OnnxField

        if not str(model).endswith(".onnx"):
            raise InputError(f"--engine onnx needs an .onnx file as --model, got {model}")
        field = OnnxField(model)
        shape, role, params = field.shape, f"ONNX {Path(model).name}", 0
    elif engine == "torch":
        from medistill.registration.model import load_model

        field, ckpt, cfg = load_model(model)
        shape, role, params = tuple(cfg.data.shape), str(ckpt.get("role")), ckpt.get("params", 0)
    else:
        raise InputError(f"--engine must be torch or onnx, got {engine!r}")
    if refine:
        from medistill.optimise import refined_field

        field = refined_field(field, optimise_config(config, set_), refine)

    def registrar(
        fixed: Image, moving: Image, *, moving_labels=None, fixed_labels=None, initial: str = "com"
    ):
        return register_images(
            field, fixed, moving, shape=shape, moving_labels=moving_labels, initial=initial
        )

    role += f" + {refine} refinement iterations" if refine else ""
    return registrar, len(shape), role, int(params)


def optimiser_registrar(config: str | None, set_: list[str] | None, *, progress: bool = False):
    """``(registrar, ndim, description, 0)`` for the optimiser with the given settings."""
    from medistill.optimise import register_optimise

    cfg = optimise_config(config, set_)

    def registrar(
        fixed: Image,
        moving: Image,
        *,
        moving_labels=None,
        fixed_labels=None,
        initial: str | None = None,
    ):
        if initial is not None:
            cfg.initial = initial
        return register_optimise(
            fixed,
            moving,
            cfg,
            moving_labels=moving_labels,
            fixed_labels=fixed_labels,
            progress=progress,
        )

    return registrar, None, f"optimise ({config or 'brain'})", 0
