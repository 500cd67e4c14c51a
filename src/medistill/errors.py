"""Errors that the command line reports as bad input (exit code 2, one line on stderr)."""


class InputError(ValueError):
    """Bad user input: a file that cannot be read, a wrong shape, NaN voxels, grids that disagree.

    The message must be one self-contained line that names the offending file or argument and
    says what was expected and what was found.
    """
