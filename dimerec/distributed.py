"""Launch by `torchrun`: what this process's environment says about the other processes.

`torchrun --nproc_per_node N -m dimerec ...` starts N copies of the command with WORLD_SIZE=N and a RANK
each. Training here is one process: N copies would train N independent models into one run directory at
once, so every command that writes refuses when WORLD_SIZE > 1 (`refuse_multiprocess`).
"""
from __future__ import annotations

import os

from dimerec.errors import DimeRecError


def world_size() -> int:
    """WORLD_SIZE as torchrun sets it (1 when not launched by torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise DimeRecError(f"WORLD_SIZE must be an integer; got {os.environ['WORLD_SIZE']!r}") from None


def refuse_multiprocess(what: str) -> None:
    """A one-line DimeRecError when this process is one of several launched by torchrun."""
    n = world_size()
    if n > 1:
        raise DimeRecError(f"{what} runs in one process, but torchrun started {n} (WORLD_SIZE={n}, RANK="
                           f"{os.environ.get('RANK', '?')}): they would train {n} independent models into the "
                           f"same run directory; run `python -m dimerec ...` (or torchrun --nproc_per_node 1)")
