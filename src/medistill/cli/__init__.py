"""The ``medistill`` command line (Typer); heavy imports stay inside the commands."""
