"""Errors that the command line reports as bad input (exit code 2, one line on stderr)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class InputError(ValueError):
    """Bad user input: a file that cannot be read, a wrong shape, NaN voxels, grids that disagree.

    The message must be one self-contained line that names the offending file or argument and
    says what was expected and what was found.
    """


def check_option(fn: str, name: str, value: object, valid: Iterable[str]) -> str:
    """Return ``value`` if it is one of ``valid``; otherwise raise :class:`InputError` naming
    ``fn`` and ``name``, listing the options and the closest match."""
    valid = tuple(valid)
    if isinstance(value, str) and value in valid:
        return value
    hint = ""
    if isinstance(value, str):
        close = difflib.get_close_matches(value, valid, n=1)
        if close:
            hint = f" (did you mean {close[0]!r}?)"
    raise InputError(f"{fn}(): '{name}' must be one of {valid}, got {value!r}{hint}")
