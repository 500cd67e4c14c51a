"""``medistill info FILE``: what an image file holds and where it lies in the world."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer


def describe(path: Path, *, key: str | None = None, label: bool | None = None) -> dict:
    """Facts about one image file as a JSON-serialisable dict (shape, spacing in mm, ...)."""
    from medistill.io import load

    image = load(path, key=key, is_label=label)
    facts: dict = {
        "file": str(path),
        "kind": "label map" if image.is_label else "intensity image",
        "shape": list(image.shape),
        "spacing_mm": [round(s, 6) for s in image.spacing],
        "orientation": image.orientation,
        "origin_mm": [round(v, 4) for v in image.origin[: max(image.ndim, 3)]],
        "dtype": str(image.data.dtype),
    }
    if image.is_label:
        facts["labels"] = [int(v) for v in image.labels()]
    else:
        facts["intensity_range"] = [float(image.data.min()), float(image.data.max())]
    return facts


def _format(facts: dict) -> str:
    shape = "x".join(str(s) for s in facts["shape"])
    spacing = facts["spacing_mm"]
    if np.allclose(spacing, spacing[0], rtol=1e-4):
        spacing_text = f"{spacing[0]:g} mm isotropic"
    else:
        spacing_text = " x ".join(f"{s:g}" for s in spacing) + " mm"
    lines = [
        f"file:        {facts['file']}",
        f"kind:        {facts['kind']} ({facts['dtype']})",
        f"summary:     {shape}, {spacing_text}, {facts['orientation']}",
        f"shape:       {shape} voxels",
        f"spacing:     {spacing_text}",
        f"orientation: {facts['orientation']}",
        "origin:      (" + ", ".join(f"{v + 0.0:g}" for v in facts["origin_mm"]) + ") mm",
    ]
    if "labels" in facts:
        labels = facts["labels"]
        shown = ", ".join(str(v) for v in labels[:40]) + (" ..." if len(labels) > 40 else "")
        lines.append(f"labels:      {len(labels)} non-zero: {shown}")
    else:
        lo, hi = facts["intensity_range"]
        lines.append(f"intensity:   {lo:g} .. {hi:g}")
    return "\n".join(lines)


def info(
    file: Annotated[
        Path,
        typer.Argument(help="Image (NIfTI, NRRD, MHA, NPZ, HDF5, PNG/JPG) or a DICOM folder."),
    ],
    key: Annotated[
        str | None, typer.Option(help="Array or group inside an NPZ / HDF5 file (e.g. 'seg').")
    ] = None,
    label: Annotated[
        bool | None,
        typer.Option("--label/--image", help="Label map / intensity image (default: guess)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Print shape, spacing, orientation codes, intensity range or label set of an image."""
    facts = describe(file, key=key, label=label)
    typer.echo(json.dumps(facts, indent=2) if as_json else _format(facts))
