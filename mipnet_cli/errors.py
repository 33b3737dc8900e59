"""The error type that the CLI turns into a one-line message instead of a traceback."""


class MipnetError(Exception):
    """A user-facing failure: bad input file, missing weights, mismatched checkpoint."""
