"""``medistill bench``: teacher vs student CPU latency on the same inputs and threads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from medistill.errors import InputError


def bench(
    sizes: Annotated[str, typer.Option(help="Cubic grid sizes (comma-separated).")] = "64,128",
    threads: Annotated[int, typer.Option(help="CPU threads for every network.")] = 2,
    repeats: Annotated[int, typer.Option(help="Timed forward passes per network and size.")] = 3,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write JSON here.")] = None,
) -> None:
    """Teacher vs student CPU latency on the same inputs and threads, in one run."""
    from medistill.nets import VoxelMorph, build_student, build_teacher
    from medistill.nets.cascade import Cascade
    from medistill.registration.bench import format_latency, latency_table

    try:
        grid = [int(s) for s in sizes.split(",")]
    except ValueError as err:
        raise InputError(f"--sizes must be comma-separated integers, got {sizes!r}") from err
    if threads < 1:
        raise InputError(f"--threads must be a positive integer, got {threads}")
    if any(s % 64 for s in grid):
        raise InputError(f"--sizes must be multiples of 64 (teacher downsampling), got {grid}")
    reference = "teacher RCN 3 cascades + affine (w16)"
    models = {
        reference: build_teacher(3, 3, 16),
        "teacher RCN 3 cascades + affine (w8)": build_teacher(3, 3, 8),
        "teacher RCN 1 cascade + affine (w16)": build_teacher(1, 3, 16),
        "student LDR 1 cascade + affine": build_student(1, 3, "ldr"),
        "student LDR 3 cascades + affine": build_student(3, 3, "ldr"),
        "student LDR-fast 1 cascade + affine": build_student(1, 3, "fast"),
        "student LDR-fast 3 cascades + affine": build_student(3, 3, "fast"),
        "student LDR-fast 1 cascade + affine, half res": build_student(1, 3, "fast", downsample=2),
        "VoxelMorph-style": Cascade([VoxelMorph(3)]),
    }
    table = latency_table(models, grid, threads=threads, repeats=repeats, reference=reference)
    _onnx_rows(table, models, grid, threads, repeats, reference)
    typer.echo(format_latency(table, reference))
    if json_out is not None:
        from medistill.io.atomic import atomic_path

        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps(table, indent=2))


def _onnx_rows(table, models, sizes, threads, repeats, reference) -> None:
    """The half-resolution student run by onnxruntime next to PyTorch's rows (same inputs,
    threads and repeats); skipped with a note when onnxruntime or onnx is not installed."""
    import tempfile

    name = "student LDR-fast 1 cascade + affine, half res"
    try:
        import onnx  # noqa: F401 - the exporter needs it
        import onnxruntime  # noqa: F401
    except ImportError:
        typer.echo("onnxruntime row skipped: pip install 'medistill[onnx]'")
        return
    from medistill.registration.bench import time_forward
    from medistill.registration.onnx import OnnxField, export_network

    row = {}
    with tempfile.TemporaryDirectory(prefix="medistill_bench_") as tmp:
        for size in sizes:
            path = export_network(models[name], (size,) * 3, f"{tmp}/student_{size}.onnx")
            field = OnnxField(path, threads=threads)
            row[size] = time_forward(field, (size,) * 3, repeats=repeats)
            row[size]["speedup"] = table[reference][size]["median_s"] / row[size]["median_s"]
    table["student LDR-fast 1 cascade, half res, ORT"] = row
