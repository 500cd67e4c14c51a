"""How ``register`` and ``evaluate`` register a pair: a network, the optimiser, or both."""

from __future__ import annotations

from pathlib import Path

from medistill.errors import InputError

METHODS = ("network", "optimise")


def optimise_config(config: str | None, set_: list[str] | None, *, default: str = "brain"):
    """The optimiser's settings from ``--config`` (default: preset ``default``; ``refine`` for
    ``--refine``) and ``--set``."""
    from medistill.optimise import load_optimise_config

    return load_optimise_config(config or default, set_ or [])


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
        if (config is not None or set_) and not refine:
            raise InputError(
                "--config / --set configure the optimiser: use them with "
                "--method optimise or --refine N"
            )


def network_registrar(
    model: Path | None,
    refine: int,
    config: str | None,
    set_: list[str] | None,
    *,
    engine: str = "torch",
):
    """``(registrar, ndim, description, params)`` for ``--model`` (a checkpoint, a built-in
    name, or ``None`` for the default built-in model; ``--engine``), refined by ``--refine``
    optimiser iterations with the ``--config`` / ``--set`` settings."""
    from medistill.builtin import resolve_model
    from medistill.registration.methods import network_registrar as build

    model = resolve_model(model)
    refine_cfg = optimise_config(config, set_, default="refine") if refine else None
    return build(model, refine=refine, refine_cfg=refine_cfg, engine=engine)


def optimiser_registrar(config: str | None, set_: list[str] | None, *, progress: bool = False):
    """``(registrar, ndim, description, 0)`` for the optimiser with the given settings."""
    from medistill.registration.methods import optimiser_registrar as build

    registrar = build(optimise_config(config, set_), progress=progress)
    return registrar, None, f"optimise ({config or 'brain'})", 0
