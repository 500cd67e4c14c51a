"""``medistill export``: a registration checkpoint as ONNX (fixed working shape)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medistill.errors import InputError


def export(
    model: Annotated[
        str, typer.Option(help="Registration checkpoint (.pt) or a built-in model's name.")
    ],
    onnx: Annotated[Path, typer.Option(help="Output .onnx file (written atomically).")],
    opset: Annotated[int, typer.Option(help="ONNX opset (>= 20 for 3-D grid sampling).")] = 20,
) -> None:
    """Export a registration network to ONNX; run it with `register --engine onnx`."""
    from medistill.builtin import resolve_model
    from medistill.registration.onnx import export_onnx

    if opset < 20:
        raise InputError(f"--opset must be >= 20 (3-D GridSample), got {opset}")
    if onnx.exists() and onnx.is_dir():
        raise InputError(f"--onnx {onnx}: is a folder")
    if not onnx.parent.is_dir():
        raise InputError(f"--onnx {onnx}: folder {onnx.parent} does not exist")
    path = export_onnx(resolve_model(model), onnx, opset=opset)
    typer.echo(f"exported {model} to {path} (opset {opset})")
