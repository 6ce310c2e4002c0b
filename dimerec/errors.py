"""Errors that are the user's to fix; the CLI prints them as one line, no traceback."""
import typing


class DimeRecError(Exception):
    """Base class of every user-facing error (bad input, bad flag, diverged run)."""


class DataError(DimeRecError):
    """A data file or dataset name is wrong. The message names the file, and the line and field where it applies."""


class TrainingDiverged(DimeRecError):
    """A loss became NaN or infinite."""


def check_choices(config, **fields) -> None:
    """DimeRecError naming the flag, the allowed values and the value, for each `field=Literal[...]` whose value in
    `config` (a dataclass, or a mapping of values) is not one of the Literal's: a dataclass's type hints are not
    enforced at run time. The one check of a Literal setting, for every config and for the diffusion they build."""
    for name, kind in fields.items():
        allowed = typing.get_args(kind)
        value = config[name] if isinstance(config, dict) else getattr(config, name)
        if value not in allowed:
            raise DimeRecError(f"--{name.replace('_', '-')} must be one of {', '.join(map(str, allowed))}; "
                               f"got {value!r}")
