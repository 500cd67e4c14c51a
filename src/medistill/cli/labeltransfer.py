"""One-shot label-transfer commands (LT-Net): ``segment`` (a command of its own), and
``train`` / ``demo`` for label transfer as functions (the commands dispatch through
:mod:`medistill.tasks`; ``evaluate`` too)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medistill.errors import InputError


def train_labeltransfer(
    config: str, out: Path, resume: bool = False, set_: list[str] | None = None
) -> None:
    """Train LT-Net (``medistill train labeltransfer`` through the task registry)."""
    from medistill.cli.train import train

    train("labeltransfer", config, out, resume, set_)


def segment(
    model: Annotated[Path, typer.Option(help="Label-transfer checkpoint (.pt).")],
    out: Annotated[Path, typer.Option(help="Output label map (.nii.gz), on IMAGE's grid.")],
    image: Annotated[Path, typer.Argument(help="Image to segment.")],
    atlas: Annotated[
        Path | None,
        typer.Option(help="Atlas image (default: the atlas stored in the checkpoint)."),
    ] = None,
    atlas_labels: Annotated[
        Path | None, typer.Option(help="Atlas label map on the atlas image's grid.")
    ] = None,
    interp: Annotated[
        str, typer.Option(help="'linear' (one-hot, then argmax) or 'nearest'.")
    ] = "linear",
) -> None:
    """Segment IMAGE by warping the atlas labels onto it; written atomically on IMAGE's grid."""
    from medistill.io import load, save
    from medistill.io.validate import check_output_file
    from medistill.labeltransfer.apply import transfer_labels
    from medistill.labeltransfer.evaluate import resolve_atlas
    from medistill.labeltransfer.model import load_model, transfer_network

    check_output_file(out, "--out", (".nii", ".nii.gz"))
    if interp not in ("linear", "nearest"):
        raise InputError(f"--interp must be 'linear' or 'nearest', got {interp!r}")
    net, ckpt, cfg = load_model(model)
    shape = tuple(cfg.data.shape)
    atlas_img, atlas_lab = resolve_atlas(ckpt, len(shape), atlas, atlas_labels, model)
    target = load(image, is_label=False, dims=len(shape))
    result = transfer_labels(
        transfer_network(net), atlas_img, atlas_lab, target, shape=shape, interp=interp
    )
    save(result.labels, out)
    typer.echo(str(out))
    typer.echo(
        f"network {result.seconds_network:.3f} s, total {result.seconds_total:.3f} s, "
        f"labels {sorted(int(v) for v in result.labels.labels())}"
    )


def demo_labeltransfer(out: Path, config: str = "demo", set_: list[str] | None = None) -> None:
    """Train LT-Net and a forward-only baseline on the embedded data, evaluate on held-out
    subjects, and write report.html."""
    from medistill.tasks import run_demo

    run_demo("labeltransfer", out, config=config, overrides=list(set_ or []), echo=typer.echo)
