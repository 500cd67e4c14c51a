"""``medistill selfcheck --out DIR``: exercise I/O, the spatial core and the metrics on the
embedded data (no files needed) and write the results as NIfTI with a JSON summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer


def run_selfcheck(out: Path, *, size: int = 48, seed: int = 0) -> dict:
    """Run the checks; returns ``{"checks": {name: {"value", "ok"}}, "ok": bool}``."""
    import torch

    from medistill.data import embedded_subjects
    from medistill.io import Image, load, save, save_nifti
    from medistill.metrics import folding_fraction, mean_dice, mean_hd95
    from medistill.spatial import (
        itk_displacement_nifti,
        jacobian_det,
        random_smooth_disp,
        warp,
        warp_labels,
    )

    out.mkdir(parents=True, exist_ok=True)
    image, labels = embedded_subjects(1, shape=(size,) * 3, seed=seed, split="test")[0]
    x = torch.from_numpy(image.data[None, None].astype(np.float32))
    lab = torch.from_numpy(labels.data[None, None].astype(np.int64))
    gen = torch.Generator().manual_seed(seed)
    disp = random_smooth_disp((size,) * 3, max_disp=3.0, generator=gen)
    warped = warp(x, disp)
    warped_lab = warp_labels(lab, disp)
    jac = jacobian_det(disp)[0, 0].numpy()
    identity = warp(x, torch.zeros_like(disp))
    shift = torch.zeros_like(disp)
    shift[:, 0] = 2.0
    rolled = warp(x, shift)[0, 0, 4:-4].numpy()
    spacing = image.spacing
    checks = {
        "identity warp max |diff|": (float((identity - x).abs().max()), lambda v: v < 1e-5),
        "2-voxel shift equals roll (interior)": (
            float(np.abs(rolled - np.roll(x[0, 0].numpy(), -2, axis=0)[4:-4]).max()),
            lambda v: v < 1e-5,
        ),
        "Dice(labels, deformed labels)": (
            mean_dice(warped_lab[0, 0].numpy(), lab[0, 0].numpy()),
            lambda v: 0.5 < v < 0.999,
        ),
        "HD95 deformed vs original (mm)": (
            mean_hd95(warped_lab[0, 0].numpy(), lab[0, 0].numpy(), spacing=spacing),
            lambda v: 0 < v < 3 * 3 * max(spacing),
        ),
        "folding of the smooth field (%)": (100 * folding_fraction(jac), lambda v: v == 0),
    }
    save(image, out / "subject.nii.gz")
    save(labels, out / "subject_labels.nii.gz")
    save(Image(warped[0, 0].numpy(), image.affine), out / "deformed.nii.gz")
    save(
        Image(warped_lab[0, 0].numpy().astype(np.int32), image.affine, True),
        out / "deformed_labels.nii.gz",
    )
    save_nifti(jac, image.affine, out / "jacobian.nii.gz")
    itk = itk_displacement_nifti(disp[0].numpy(), image.affine)
    save_nifti(np.asarray(itk.dataobj), itk.affine, out / "disp_mm.nii.gz", intent=1007)
    back = load(out / "subject.nii.gz")
    checks["NIfTI round trip affine max |diff|"] = (
        float(np.abs(back.affine - image.affine).max()),
        lambda v: v < 1e-4,
    )
    result = {
        "checks": {k: {"value": v, "ok": bool(ok(v))} for k, (v, ok) in checks.items()},
        "working_grid": list(image.shape),
        "spacing_mm": list(spacing),
    }
    result["ok"] = all(c["ok"] for c in result["checks"].values())
    (out / "summary.json").write_text(json.dumps(result, indent=2))
    return result


def selfcheck(
    out: Annotated[Path, typer.Option(help="Folder for the NIfTI outputs and summary.json.")],
    size: Annotated[int, typer.Option(help="Working-grid size per axis.")] = 48,
) -> None:
    """Check warping, label transfer, Jacobians, metrics and NIfTI I/O on the embedded data."""
    from medistill.errors import InputError
    from medistill.io.validate import check_output_folder

    if not 16 <= size <= 256:
        raise InputError(f"--size must be in 16..256, got {size}")
    out = check_output_folder(out)
    result = run_selfcheck(out, size=size)
    for name, check in result["checks"].items():
        typer.echo(f"{'ok  ' if check['ok'] else 'FAIL'}  {name}: {check['value']:.6g}")
    typer.echo(f"outputs in {out}")
    if not result["ok"]:
        raise typer.Exit(1)
