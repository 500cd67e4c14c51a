"""Parameter and GMAC table of the registration networks (``medistill models``)."""

from __future__ import annotations

from torch import nn

from medistill.nets import (
    VTN,
    FieldCritic,
    LDRStudent,
    LDRStudentFast,
    VoxelMorph,
    build_student,
    build_teacher,
    count_macs,
    count_parameters,
)


def catalogue() -> list[tuple[str, nn.Module, int]]:
    """(name, network, number of image inputs) for every registration network we ship."""
    return [
        ("VTN subnetwork (width 16)", VTN(3, base_width=16), 2),
        ("teacher 1 cascade + affine (width 16)", build_teacher(1, 3, 16), 2),
        ("teacher 3 cascades + affine (width 16)", build_teacher(3, 3, 16), 2),
        ("teacher 3 cascades + affine (width 8, cpu-64)", build_teacher(3, 3, 8), 2),
        ("LDR student subnetwork", LDRStudent(3), 2),
        ("LDR-fast student subnetwork", LDRStudentFast(3), 2),
        ("student 1 cascade + affine (LDR)", build_student(1, 3, "ldr"), 2),
        ("student 3 cascades + affine (LDR)", build_student(3, 3, "ldr"), 2),
        ("student 3 cascades + affine (LDR-fast)", build_student(3, 3, "fast"), 2),
        (
            "student 1 cascade + affine (LDR-fast, half res)",
            build_student(1, 3, "fast", downsample=2),
            2,
        ),
        ("VoxelMorph-style baseline", VoxelMorph(3), 2),
        ("ALDK critic (on a 3-channel field)", FieldCritic(3), 1),
    ]


def model_table(sizes: list[int]) -> str:
    """A text table: parameters (M) and GMAC per forward pass at each cubic size."""
    header = f"{'network':48s} {'params (M)':>10s}" + "".join(
        f" {f'GMAC@{s}^3':>11s}" for s in sizes
    )
    lines = [header, "-" * len(header)]
    for name, net, inputs in catalogue():
        cells = []
        for s in sizes:
            channels = 3 if isinstance(net, FieldCritic) else 1
            shapes = [(1, channels, s, s, s)] * inputs
            cells.append(f" {count_macs(net, shapes) / 1e9:11.2f}")
        lines.append(f"{name:48s} {count_parameters(net) / 1e6:10.3f}" + "".join(cells))
    return "\n".join(lines)
