"""MRI reconstruction / super-resolution commands (KD-MRI): train, reconstruct, demo.

``evaluate`` dispatches through :mod:`medistill.tasks`. Command functions only;
``medistill.cli.main`` registers them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medistill.errors import InputError

#: the largest undersampling factor ``reconstruct`` / ``evaluate`` accept (the paper: 4-8x).
MAX_ACCELERATION = 32.0


def check_acceleration(acceleration: float | None) -> None:
    """Refuse an ``--acceleration`` outside ``(1, MAX_ACCELERATION]`` (NaN and inf included)."""
    if acceleration is not None and not (1 < acceleration <= MAX_ACCELERATION):
        raise InputError(
            f"--acceleration must be a number in (1, {MAX_ACCELERATION:g}], got {acceleration:g}"
        )


def train_recon(
    role: str, config: str, out: Path, resume: bool = False, set_: list[str] | None = None
) -> None:
    """Train a reconstruction or super-resolution network (``medistill train`` through the task
    registry); students distil per the config's 'distill' section."""
    from medistill.cli.train import train
    from medistill.recon.model import ROLES

    if role not in ROLES:
        raise InputError(f"train: unknown model {role!r}; expected one of {', '.join(ROLES)}")
    train(role, config, out, resume, set_)


def reconstruct(
    model: Annotated[Path, typer.Option(help="Recon / SR checkpoint (.pt).")],
    out: Annotated[Path, typer.Option(help="Output image (.nii.gz), written atomically.")],
    kspace: Annotated[
        Path | None,
        typer.Option(help="Complex k-space .npy, (H, W) or (slices, H, W); needs --mask."),
    ] = None,
    mask: Annotated[
        Path | None,
        typer.Option(help="Sampling mask .npy, (W,) lines along the last axis or (H, W), 0/1."),
    ] = None,
    image: Annotated[
        Path | None,
        typer.Option(help="Magnitude image (NIfTI, NRRD, ...): simulate the acquisition."),
    ] = None,
    acceleration: Annotated[
        float | None,
        typer.Option(help="Undersampling factor for --image (default: the model's)."),
    ] = None,
    layout: Annotated[
        str,
        typer.Option(
            help="k-space layout of --kspace and --mask: 'centered' (fastMRI, DC at H//2, W//2) "
            "or 'uncentered' (numpy.fft.fft2, DC at 0, 0)."
        ),
    ] = "centered",
    save_input: Annotated[
        Path | None,
        typer.Option(help="Also write the zero-filled / low-resolution input image here."),
    ] = None,
) -> None:
    """Reconstruct from measured k-space (--kspace --mask) or from an image with simulated
    undersampling (--image [--acceleration]); super-resolution checkpoints take --image."""
    import numpy as np

    from medistill.io import load, save_nifti
    from medistill.io.validate import check_output_file
    from medistill.recon.inference import (
        load_kspace,
        reconstruct_image,
        reconstruct_kspace,
        zero_filled,
    )
    from medistill.recon.kspace import LAYOUTS
    from medistill.recon.masks import load_mask
    from medistill.recon.model import load_model

    if (kspace is None) == (image is None):
        raise InputError("reconstruct: give either --kspace (with --mask) or --image")
    if layout not in LAYOUTS:
        raise InputError(f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    for option, path in (("--out", out), ("--save-input", save_input)):
        if path is not None:
            check_output_file(path, option, (".nii", ".nii.gz"))
    check_acceleration(acceleration)
    net = load_model(model)
    if kspace is not None:
        if mask is None:
            raise InputError("reconstruct: --kspace needs --mask")
        if acceleration is not None:
            raise InputError("reconstruct: --acceleration applies to --image only")
        k = load_kspace(kspace)
        m = load_mask(mask, k.shape[-2:], layout=layout)
        result = reconstruct_kspace(net, k, m, layout=layout)
        arr = result if result.ndim == 2 else np.moveaxis(result, 0, -1)
        save_nifti(arr, np.eye(4), out)
        if save_input is not None:
            zf = zero_filled(k, m, layout=layout)
            save_nifti(zf if zf.ndim == 2 else np.moveaxis(zf, 0, -1), np.eye(4), save_input)
        typer.echo(f"{out} ({' x '.join(map(str, arr.shape))}, from k-space, {layout} layout)")
        return
    if mask is not None:
        raise InputError("reconstruct: --mask applies to --kspace only")
    img = load(image, is_label=False)
    output, degraded = reconstruct_image(net, img, acceleration)
    save_nifti(output.data, output.affine, out)
    if save_input is not None:
        save_nifti(degraded.data, degraded.affine, save_input)
    acc = acceleration or net.config.mask.acceleration
    what = "super-resolved" if net.is_sr else f"reconstructed at {acc:g}x"
    typer.echo(f"{out} ({' x '.join(map(str, output.shape))}, {what})")


def demo_recon(
    out: Annotated[Path, typer.Option(help="Output folder (report.html, checkpoints).")],
    config: Annotated[str, typer.Option(help="Preset or YAML for the demo.")] = "demo",
    sr: Annotated[bool, typer.Option(help="Also train the super-resolution (VDSR) models.")] = True,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config value.")
    ] = None,
) -> None:
    """Train DC-CNN teacher and students (none / AT / imitation / KD) on the embedded slices,
    evaluate them on held-out slices and write report.html."""
    from medistill.recon.demo import run_demo
    from medistill.tasks import TASKS

    summary = run_demo(out, config=config, overrides=list(set_ or []), sr=sr)
    for row in summary["rows"]:
        typer.echo(TASKS["recon"].demo_line(row))
    typer.echo(f"report: {out / 'report.html'} (total {summary['timings_s']['total']:.0f} s)")
