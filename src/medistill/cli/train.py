"""``medistill train``: train a network of any task (dispatch by role)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medistill.errors import InputError

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
    from medistill.recon.model import ROLES as RECON_ROLES
    from medistill.registration.config import RegistrationConfig, presets
    from medistill.registration.model import ROLES
    from medistill.registration.training import train as run
    from medistill.train import is_main_process, load_config

    if role in RECON_ROLES:
        from medistill.cli.recon import train_recon

        train_recon(role, config, out, resume, set_)
        return
    if role == "labeltransfer":
        from medistill.cli.labeltransfer import train_labeltransfer

        train_labeltransfer(config, out, resume, set_)
        return
    if role not in ROLES:
        known = ", ".join((*ROLES, *RECON_ROLES, "labeltransfer"))
        raise InputError(f"train: unknown model {role!r}; expected one of {known}")
    cfg = load_config(RegistrationConfig, config, presets=presets(), overrides=list(set_ or []))
    state = run(role, cfg, out, resume=resume)
    if is_main_process():
        typer.echo(f"trained {role} to step {state.get('step')}; checkpoint {out / 'model.pt'}")
