"""Registration commands: ``train``, ``register``, ``evaluate``, ``models``."""

from __future__ import annotations

import json
import os
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
    from medistill.train import load_config

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
    if os.environ.get("RANK", "0") == "0":
        typer.echo(f"trained {role} to step {state.get('step')}; checkpoint {out / 'model.pt'}")


def register(
    model: Annotated[Path, typer.Option(help="Registration checkpoint (.pt).")],
    fixed: Annotated[Path, typer.Option(help="Fixed image.")],
    moving: Annotated[Path, typer.Option(help="Moving image.")],
    out: Annotated[Path, typer.Option(help="Output folder.")],
    moving_labels: Annotated[
        Path | None, typer.Option(help="Label map on the moving image's grid.")
    ] = None,
    initial: Annotated[str, typer.Option(help="'com' (match centres of mass) or 'none'.")] = "com",
) -> None:
    """Register MOVING to FIXED; outputs on the fixed image's grid and affine."""
    from medistill.io import check_same_grid, load
    from medistill.registration.apply import register_images
    from medistill.registration.model import load_model

    net, _, cfg = load_model(model)
    ndim = len(cfg.data.shape)
    fixed_img = load(fixed, is_label=False, dims=ndim)
    moving_img = load(moving, is_label=False, dims=ndim)
    labels = None
    if moving_labels is not None:
        labels = check_same_grid(moving_img, load(moving_labels, is_label=True, dims=ndim))
    reg = register_images(
        net,
        fixed_img,
        moving_img,
        shape=tuple(cfg.data.shape),
        moving_labels=labels,
        initial=initial,
    )
    for path in reg.save(out):
        typer.echo(str(path))
    typer.echo(f"network {reg.seconds_network:.3f} s, total {reg.seconds_total:.3f} s")


def evaluate(
    model: Annotated[Path, typer.Option(help="Checkpoint (.pt); it knows its task.")],
    out: Annotated[Path, typer.Option(help="Output folder (metrics.csv, summary.json).")],
    pairs: Annotated[
        Path | None,
        typer.Option(help="Registration: CSV fixed, moving, fixed_labels, moving_labels."),
    ] = None,
    labels: Annotated[
        str | None,
        typer.Option(help="Registration / label transfer: label values to score (default: all)."),
    ] = None,
    affine_only: Annotated[
        bool, typer.Option(help="Registration: apply only the affine stem ('affine only').")
    ] = False,
    images: Annotated[
        list[Path] | None,
        typer.Option("--images", help="Reconstruction: volumes, slices or folders (repeat)."),
    ] = None,
    acceleration: Annotated[
        float | None, typer.Option(help="Reconstruction: undersampling factor.")
    ] = None,
    images_csv: Annotated[
        Path | None, typer.Option(help="Label transfer: CSV with columns image, labels.")
    ] = None,
    atlas: Annotated[
        Path | None,
        typer.Option(help="Label transfer: atlas image (default: the checkpoint's atlas)."),
    ] = None,
    atlas_labels: Annotated[
        Path | None, typer.Option(help="Label transfer: atlas labels on the atlas's grid.")
    ] = None,
) -> None:
    """Evaluate a checkpoint: registration pairs (Dice, HD95, folding...), reconstruction
    images (PSNR, SSIM, NMSE) or label transfer (Dice per structure), by the task stored in
    the checkpoint."""
    from medistill.train import load_checkpoint

    chosen = None
    if labels:
        try:
            chosen = [int(v) for v in labels.split(",")]
        except ValueError as err:
            raise InputError(f"--labels must be comma-separated integers, got {labels!r}") from err
    task = load_checkpoint(model).get("task")
    if task == "labeltransfer":
        if images_csv is None:
            raise InputError("evaluate: a label-transfer checkpoint needs --images-csv")
        from medistill.cli.labeltransfer import evaluate_labeltransfer

        evaluate_labeltransfer(
            model=model,
            images=images_csv,
            out=out,
            atlas=atlas,
            atlas_labels=atlas_labels,
            labels=chosen,
        )
        return
    if task == "recon":
        if not images:
            raise InputError("evaluate: a reconstruction checkpoint needs --images")
        from medistill.cli.recon import evaluate_recon

        evaluate_recon(model=model, images=images, out=out, acceleration=acceleration)
        return
    if task != "registration":
        raise InputError(f"{model}: evaluate does not know checkpoints of task {task!r}")
    if pairs is None:
        raise InputError("evaluate: a registration checkpoint needs --pairs pairs.csv")
    from medistill.registration.evaluate import evaluate as run

    summary = run(model, pairs, out, labels=chosen, affine_only=affine_only)
    typer.echo(json.dumps(summary, indent=2))


def models(
    sizes: Annotated[str, typer.Option(help="Grid sizes (comma-separated).")] = "64,128",
) -> None:
    """Parameters and GMAC of every registration network at the given cubic grid sizes."""
    from medistill.registration.profile import model_table

    typer.echo(model_table([int(s) for s in sizes.split(",")]))


def demo(
    out: Annotated[Path, typer.Option(help="Output folder (report.html, checkpoints).")],
    task: Annotated[
        str, typer.Argument(help="registration, recon or labeltransfer.")
    ] = "registration",
    config: Annotated[
        str, typer.Option(help="Preset or YAML for the demo (each task has a demo preset).")
    ] = "demo",
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a config value.")
    ] = None,
) -> None:
    """Train teacher and students on the embedded data, evaluate, and write report.html."""
    if task == "recon":
        from medistill.cli.recon import demo_recon

        demo_recon(out, config=config, sr=True, set_=set_)
        return
    if task == "labeltransfer":
        from medistill.cli.labeltransfer import demo_labeltransfer

        demo_labeltransfer(out, config=config, set_=set_)
        return
    if task != "registration":
        raise InputError(
            f"demo: unknown task {task!r}; available: registration, recon, labeltransfer"
        )
    from medistill.registration.demo import run_demo

    summary = run_demo(out, config=config, overrides=list(set_ or []))
    for row in summary["rows"]:
        typer.echo(
            f"{row['model']:18s} Dice {row['dice_mean']:.3f}  folding {row['folding_pct']:.3f} %"
        )
    typer.echo(f"report: {out / 'report.html'} (total {summary['timings_s']['total']:.0f} s)")


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
