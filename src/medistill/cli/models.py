"""``medistill models``: the built-in models (``models info NAME``: a card) and the parameters
and GMAC of the registration networks."""

from __future__ import annotations

from typing import Annotated

import typer

app = typer.Typer(
    help="Built-in models and the registration networks' sizes.",
    invoke_without_command=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback(invoke_without_command=True)
def models(
    ctx: typer.Context,
    sizes: Annotated[str, typer.Option(help="Grid sizes (comma-separated).")] = "64,128",
) -> None:
    """The built-in models, then parameters and GMAC of every registration network at the
    given cubic grid sizes. `medistill models info NAME` prints a built-in model's card."""
    if ctx.invoked_subcommand is not None:
        return
    from medistill.builtin import DEFAULT, available
    from medistill.errors import InputError
    from medistill.registration.profile import model_table

    try:
        grid = [int(s) for s in sizes.split(",")]
    except ValueError as err:
        raise InputError(f"--sizes must be comma-separated integers, got {sizes!r}") from err
    if not grid or min(grid) < 16 or max(grid) > 512:
        raise InputError(f"--sizes must lie in 16..512, got {sizes!r}")
    builtin = available()
    typer.echo("built-in models (medistill models info NAME):")
    for name, model in builtin.items():
        tag = " (default)" if name == DEFAULT else ""
        typer.echo(f"  {name}{tag}: {' '.join(model.card().get('summary', '').split())}")
    if not builtin:
        typer.echo("  none in this installation")
    typer.echo("")
    typer.echo(model_table(grid))


@app.command("info")
def info(name: Annotated[str, typer.Argument(help="Built-in model name.")]) -> None:
    """Print the model card of a built-in model (training data, teacher, steps, held-out
    metrics with the commands that produced them, licence of the data)."""
    from medistill.builtin import builtin, sha256

    model = builtin(name)  # refuses an unknown name
    meta = model.card()
    text = model.card_path.read_text(encoding="utf-8").splitlines()
    typer.echo("\n".join(line for line in text if not line.startswith("#")).strip())
    verdict = "matches the card" if sha256(model.weights) == meta.get("sha256") else "MISMATCH"
    typer.echo(f"weights_file: {model.weights}  (sha256 {verdict})")
