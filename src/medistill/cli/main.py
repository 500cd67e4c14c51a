"""Entry point of the ``medistill`` command: the Typer app, exit codes and error reporting.

Exit codes: 0 success, 2 bad input (one line on stderr, no traceback), 1 internal error.
Set ``MEDISTILL_DEBUG=1`` to see the traceback of an internal error.
"""

from __future__ import annotations

import logging
import os
import sys

import typer

from medistill.errors import InputError

app = typer.Typer(
    name="medistill",
    help="Knowledge distillation for medical-imaging networks that run fast on a CPU.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Knowledge distillation for medical-imaging networks that run fast on a CPU."""


def _register_commands() -> None:
    from medistill.cli import (
        bench,
        demo,
        evaluate,
        export,
        info,
        labeltransfer,
        models,
        recon,
        register,
        selfcheck,
        train,
    )

    app.command("info")(info.info)
    app.command("selfcheck")(selfcheck.selfcheck)
    app.command("train")(train.train)
    app.command("register")(register.register)
    app.command("evaluate")(evaluate.evaluate)
    app.add_typer(models.app, name="models")
    app.command("demo")(demo.demo)
    app.command("bench")(bench.bench)
    app.command("export")(export.export)
    app.command("reconstruct")(recon.reconstruct)
    app.command("segment")(labeltransfer.segment)


_register_commands()


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def configure_logging() -> None:
    """Log records as ``medistill: LEVEL: message`` lines on stderr (INFO and above)."""
    logging.basicConfig(
        level=logging.INFO, format="medistill: %(levelname)s: %(message)s", stream=sys.stderr
    )


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    configure_logging()
    command = typer.main.get_command(app)
    try:
        # standalone mode: usage errors print their message and raise SystemExit(2)
        command.main(args=argv, prog_name="medistill", standalone_mode=True)
    except SystemExit as err:
        code = err.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except InputError as err:
        print(f"medistill: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except OSError as err:
        # the file system refused a path the user gave (missing folder, no permission, full
        # disk): a bad input, not a bug. Errors without a file name stay internal errors.
        if err.filename is None or os.environ.get("MEDISTILL_DEBUG"):
            return _internal(err)
        name = err.filename if err.filename2 is None else f"{err.filename} -> {err.filename2}"
        print(f"medistill: error: {name}: {err.strerror or type(err).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medistill: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the last resort of the command line
        return _internal(err)
    return 0


def _internal(err: BaseException) -> int:
    """Report an internal error in one line (or re-raise with ``MEDISTILL_DEBUG``); exit 1."""
    if os.environ.get("MEDISTILL_DEBUG"):
        raise err
    print(
        f"medistill: internal error: {type(err).__name__}: {_one_line(err)} "
        "(set MEDISTILL_DEBUG=1 for a traceback)",
        file=sys.stderr,
    )
    return 1


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
