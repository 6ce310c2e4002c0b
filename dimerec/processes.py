"""Linux's process table, read from /proc: one reader for the lock files (is a run's owner alive?), the PNG export's
kill of a hung browser, and the tests that find torchrun's workers. Without /proc every answer is empty or None."""
from __future__ import annotations

from pathlib import Path

PROC = Path("/proc")


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after "pid (comm)", whose comm may hold spaces and parentheses: [state, ppid, pgrp, ...], so
    field n of proc(5) is at index n - 3. None when the process is gone or there is no /proc."""
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> str | None:
    """When process `pid` started (clock ticks since boot, proc(5) field 22): with the pid, it names one process,
    where a pid alone may have been reused. None when it is gone or there is no /proc."""
    fields = stat_fields(pid)
    return fields[19] if fields else None


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children first, then theirs), from one pass over /proc."""
    children: dict[int, list[int]] = {}
    for stat in PROC.glob("[0-9]*/stat"):
        fields = stat_fields(int(stat.parent.name))
        if fields:  # None: it ended while we read
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, frontier = [], [pid]
    while frontier:
        below = children.get(frontier.pop(), [])
        found += below
        frontier += below
    return found
