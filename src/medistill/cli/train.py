"""``medistill train``: train a network of any task (dispatch by role)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ROLE_HELP = (
    "Registration: teacher (RCN), student (LDR), voxelmorph. Reconstruction: recon-teacher, "
    "recon-student, sr-teacher, sr-student. Label transfer: labeltransfer (LT-Net)."
)


def train(
    role: Annotated[str, typer.Argument(help=ROLE_HELP)],
    config: Annotated[
        str,
        typer.Option(
            help="YAML file or preset name (registration: cpu-64, paper-128, demo; recon: "
            "cpu-128, paper-256, demo; labeltransfer: cpu-64, cpu-2d, demo, paper-128)."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Run folder (checkpoints, log, config).")],
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from last.pt.")] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config value, e.g. --set loop.steps=500."),
    ] = None,
) -> None:
    """Train a network: registration (distillation in the config's 'distill' section),
    reconstruction / super-resolution, or LT-Net label transfer."""
    from medistill.tasks import load_task_config, run_task, task_of_role
    from medistill.train import is_main_process

    task = task_of_role(role)
    cfg = load_task_config(task, config, set_)
    state = run_task(task, role, cfg, out, resume=resume)
    if is_main_process():
        typer.echo(
            f"trained {task.done(role, state)} to step {state.get('step')}; "
            f"checkpoint {out / 'model.pt'}"
        )
