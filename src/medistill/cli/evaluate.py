"""``medistill evaluate``: score a checkpoint (any task) or the registration optimiser."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from medistill.errors import InputError


def evaluate(
    out: Annotated[str, typer.Option(help="Output folder (metrics.csv, summary.json).")],
    model: Annotated[
        Path | None,
        typer.Option(
            help="Checkpoint (.pt; it knows its task) or built-in name; with --pairs the "
            "default is the built-in 'brain' registration model."
        ),
    ] = None,
    pairs: Annotated[
        Path | None,
        typer.Option(help="Registration: CSV fixed, moving, fixed_labels, moving_labels."),
    ] = None,
    labels: Annotated[
        str | None,
        typer.Option(help="Registration / label transfer: label values to score (default: all)."),
    ] = None,
    affine_only: Annotated[
        bool, typer.Option(help="Registration: apply only the affine stem ('affine only').")
    ] = False,
    images: Annotated[
        list[Path] | None,
        typer.Option("--images", help="Reconstruction: volumes, slices or folders (repeat)."),
    ] = None,
    acceleration: Annotated[
        float | None, typer.Option(help="Reconstruction: undersampling factor.")
    ] = None,
    images_csv: Annotated[
        Path | None, typer.Option(help="Label transfer: CSV with columns image, labels.")
    ] = None,
    atlas: Annotated[
        Path | None,
        typer.Option(help="Label transfer: atlas image (default: the checkpoint's atlas)."),
    ] = None,
    atlas_labels: Annotated[
        Path | None, typer.Option(help="Label transfer: atlas labels on the atlas's grid.")
    ] = None,
    method: Annotated[
        str,
        typer.Option(help="Registration: 'network' (--model) or 'optimise' (no model needed)."),
    ] = "network",
    config: Annotated[
        str | None,
        typer.Option(
            help="Registration optimiser: preset (brain, fast, multimodal, refine) or YAML; "
            "default brain (refine with --refine)."
        ),
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override an optimiser setting.")
    ] = None,
    refine: Annotated[
        int, typer.Option(help="Registration network: optimiser iterations from its field.")
    ] = 0,
) -> None:
    """Evaluate a checkpoint: registration pairs (Dice, HD95, folding...), reconstruction
    images (PSNR, SSIM, NMSE) or label transfer (Dice per structure), by the task stored in
    the checkpoint (``medistill.tasks.evaluate``); or the registration optimiser."""
    from medistill.io.validate import check_output_folder

    out = check_output_folder(out)

    chosen = None
    if labels:
        try:
            chosen = [int(v) for v in labels.split(",")]
        except ValueError as err:
            raise InputError(f"--labels must be comma-separated integers, got {labels!r}") from err
    from medistill.cli._methods import check_method

    if method == "optimise" or refine or config is not None or set_:
        check_method(method, model, refine, config, set_)
    if method == "optimise" or refine:  # a registration method, not a checkpoint's task
        _evaluate_registration(model, pairs, out, chosen, affine_only, method, config, set_, refine)
        return
    if model is None and pairs is None:
        raise InputError(
            "evaluate: give --model (or --pairs, which uses the built-in registration model)"
        )
    from medistill.builtin import resolve_model
    from medistill.cli.recon import check_acceleration
    from medistill.tasks import EvaluateRequest
    from medistill.tasks import evaluate as run

    check_acceleration(acceleration)
    request = EvaluateRequest(
        pairs=pairs,
        labels=chosen,
        affine_only=affine_only,
        images=images,
        acceleration=acceleration,
        images_csv=images_csv,
        atlas=atlas,
        atlas_labels=atlas_labels,
    )
    summary = run(resolve_model(model), request, out)  # the checkpoint's task decides
    typer.echo(json.dumps(summary, indent=2))


def _evaluate_registration(
    model: Path | None,
    pairs: Path | None,
    out: Path,
    labels: list[int] | None,
    affine_only: bool,
    method: str,
    config: str | None,
    set_: list[str] | None,
    refine: int,
) -> None:
    from medistill.cli._methods import network_registrar, optimiser_registrar
    from medistill.registration.evaluate import evaluate_pairs

    if pairs is None:
        raise InputError("evaluate: registration needs --pairs pairs.csv")
    if affine_only:
        raise InputError("--affine-only applies to a network without --refine")
    if method == "optimise":
        registrar, ndim, role, params = optimiser_registrar(config, set_)
        meta = {"method": "optimise", "role": role, "config": config or "brain"}
    else:
        registrar, ndim, role, params = network_registrar(model, refine, config, set_)
        meta = {"checkpoint": str(model), "role": role, "refine": refine}
    meta["params"] = params
    summary = evaluate_pairs(registrar, pairs, out, ndim=ndim, labels=labels, meta=meta)
    typer.echo(json.dumps(summary, indent=2))
