"""The one reader of /proc/PID/stat: a process's state, group, start time and CPU and memory.

One small read per process, no psutil. A leaf: it imports nothing of Arbiter. Linux only, as
Arbiter is.
"""

from __future__ import annotations

import os
from typing import NamedTuple

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICKS = os.sysconf("SC_CLK_TCK")


class ProcStat(NamedTuple):
    """The fields of proc(5) /proc/PID/stat that Arbiter reads."""

    state: str  # field 3: R, S, D, Z...
    ppid: int  # field 4
    pgrp: int  # field 5: its process group
    starttime: int  # field 22: clock ticks after boot; with the pid, it names one process for good
    cpu: float  # fields 14 + 15: user and system CPU seconds
    rss: int  # field 24, in bytes


def stat(pid: int) -> ProcStat | None:
    """`pid`'s stat, or None when there is no such process (or it cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    fields = raw[raw.rfind(b")") + 2:].split()
    try:
        return ProcStat(
            state=fields[0].decode(), ppid=int(fields[1]), pgrp=int(fields[2]),
            starttime=int(fields[19]), cpu=(int(fields[11]) + int(fields[12])) / _TICKS,
            rss=int(fields[21]) * _PAGE,
        )
    except (IndexError, ValueError):
        return None


def usage(pid: int) -> tuple[int, float] | None:
    """(resident bytes, user+system CPU seconds) of `pid`, or None when it cannot be read."""
    found = stat(pid)
    return None if found is None else (found.rss, found.cpu)


def same_process(pid: int, starttime: int) -> bool:
    """Whether `pid` is still the process that started at `starttime` (a live one, not a
    zombie): a pid the kernel gave to another process since does not count."""
    found = stat(pid)
    return found is not None and found.starttime == starttime and found.state != "Z"
