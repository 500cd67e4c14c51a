"""``medistill register``: register one pair, outputs on the fixed image's grid."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medistill.errors import InputError


def register(
    fixed: Annotated[Path, typer.Option(help="Fixed image.")],
    moving: Annotated[Path, typer.Option(help="Moving image.")],
    out: Annotated[str, typer.Option(help="Output folder.")],
    model: Annotated[
        Path | None, typer.Option(help="Registration checkpoint (.pt) for --method network.")
    ] = None,
    method: Annotated[
        str,
        typer.Option(help="'network' (a trained checkpoint) or 'optimise' (per-pair optimiser)."),
    ] = "network",
    moving_labels: Annotated[
        Path | None, typer.Option(help="Label map on the moving image's grid.")
    ] = None,
    fixed_labels: Annotated[
        Path | None,
        typer.Option(help="Optimiser only: fixed label map for the privileged Dice term."),
    ] = None,
    initial: Annotated[str, typer.Option(help="'com' (match centres of mass) or 'none'.")] = "com",
    config: Annotated[
        str | None,
        typer.Option(help="Optimiser preset (brain, fast, multimodal) or YAML; default brain."),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Override an optimiser setting, e.g. --set deformable.kind=svf."
        ),
    ] = None,
    refine: Annotated[
        int, typer.Option(help="Network only: optimiser iterations from the network's field.")
    ] = 0,
    progress: Annotated[bool, typer.Option(help="Show the optimiser's progress bar.")] = False,
) -> None:
    """Register MOVING to FIXED; outputs on the fixed image's grid and affine."""
    from medistill.cli._methods import check_method, network_registrar, optimiser_registrar
    from medistill.io import check_same_grid, load
    from medistill.io.validate import check_image_values, check_output_folder

    check_method(method, model, refine, config, set_)
    out = check_output_folder(out)
    if initial not in ("com", "none"):
        raise InputError(f"--initial must be 'com' or 'none', got {initial!r}")
    if fixed_labels is not None and method != "optimise":
        raise InputError("--fixed-labels is used only by --method optimise (privileged term)")
    if method == "optimise":
        registrar, ndim, _, _ = optimiser_registrar(config, set_, progress=progress)
    else:
        registrar, ndim, _, _ = network_registrar(model, refine, config, set_, progress=progress)
    fixed_img = load(fixed, is_label=False, dims=ndim)
    moving_img = load(moving, is_label=False, dims=ndim)
    check_image_values(fixed_img, "fixed image")
    check_image_values(moving_img, "moving image")
    if fixed_img.ndim != moving_img.ndim:
        raise InputError(
            f"{moving}: moving image is {moving_img.ndim}-D, the fixed image {fixed_img.ndim}-D"
        )
    ndim = fixed_img.ndim
    labels = None
    if moving_labels is not None:
        labels = check_same_grid(moving_img, load(moving_labels, is_label=True, dims=ndim))
    f_labels = None
    if fixed_labels is not None:
        f_labels = check_same_grid(fixed_img, load(fixed_labels, is_label=True, dims=ndim))
    reg = registrar(
        fixed_img, moving_img, moving_labels=labels, fixed_labels=f_labels, initial=initial
    )
    for path in reg.save(out):
        typer.echo(str(path))
    what = "optimisation" if method == "optimise" else "network"
    typer.echo(f"{what} {reg.seconds_network:.3f} s, total {reg.seconds_total:.3f} s")
