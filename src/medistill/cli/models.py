"""``medistill models``: parameters and GMAC of the registration networks."""

from __future__ import annotations

from typing import Annotated

import typer


def models(
    sizes: Annotated[str, typer.Option(help="Grid sizes (comma-separated).")] = "64,128",
) -> None:
    """Parameters and GMAC of every registration network at the given cubic grid sizes."""
    from medistill.registration.profile import model_table

    typer.echo(model_table([int(s) for s in sizes.split(",")]))
