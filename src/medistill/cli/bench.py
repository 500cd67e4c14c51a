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
    typer.echo(format_latency(table, reference))
    if json_out is not None:
        from medistill.io.atomic import atomic_path

        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps(table, indent=2))
