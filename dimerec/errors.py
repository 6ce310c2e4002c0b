"""Errors that are the user's to fix; the CLI prints them as one line, no traceback."""


class DimeRecError(Exception):
    """Base class of every user-facing error (bad input, bad flag, diverged run)."""


class DataError(DimeRecError):
    """A data file or dataset name is wrong. The message names the file, and the line and field where it applies."""


class TrainingDiverged(DimeRecError):
    """A loss became NaN or infinite."""
