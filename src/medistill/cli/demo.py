"""``medistill demo``: the whole story of a task on the embedded data, report.html."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medistill.errors import InputError


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
    from medistill.io.validate import check_output_folder

    if task not in ("registration", "recon", "labeltransfer"):
        raise InputError(
            f"demo: unknown task {task!r}; available: registration, recon, labeltransfer"
        )
    out = check_output_folder(out)
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
        fold = row.get("folding_pct")
        seconds = row.get("seconds_per_pair")
        typer.echo(
            f"{row['model']:18s} Dice {row['dice_mean']:.3f}"
            + (f"  folding {fold:.3f} %" if fold is not None else "")
            + (f"  {seconds:.2f} s/pair" if seconds else "")
        )
    typer.echo(f"report: {out / 'report.html'} (total {summary['timings_s']['total']:.0f} s)")
