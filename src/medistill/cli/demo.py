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
    from medistill.tasks import TASKS, run_demo

    if task not in TASKS:
        raise InputError(f"demo: unknown task {task!r}; available: {', '.join(TASKS)}")
    out = check_output_folder(out)
    run_demo(task, out, config=config, overrides=list(set_ or []), echo=typer.echo)
