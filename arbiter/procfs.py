"""The one reader of /proc: a process's state, group, start time, CPU and memory from
/proc/PID/stat, its unique or proportional memory from /proc/PID/smaps_rollup (the memory
guards), and its descendants.

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


# -- memory (the memory guards) ------------------------------------------------------------

MEASURES = ("uss", "pss", "rss")
# Which lines of /proc/PID/smaps_rollup make up each measure (their values are in kB).
_ROLLUP_FIELDS = {"uss": (b"Private_Clean:", b"Private_Dirty:"), "pss": (b"Pss:",), "rss": (b"Rss:",)}


def memory(pid: int, measure: str = "uss") -> int | None:
    """`pid`'s memory in bytes by `measure`, from /proc/PID/smaps_rollup (Linux 4.14+); None
    when there is no such process (or it cannot be read).

    uss: its private pages (Private_Clean + Private_Dirty), what freeing it would give back;
    pss: its pages with each shared page divided among the processes sharing it;
    rss: every page it has in memory, shared ones included (those it shares with the master
    after a fork too, so it overstates a worker's own growth).
    """
    wanted = _ROLLUP_FIELDS[measure]
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    total, found = 0, 0
    for line in raw.splitlines():
        if line.startswith(wanted):  # a tuple of prefixes: any of them
            total += int(line.split()[1])
            found += 1
    return total * 1024 if found == len(wanted) else None


def resident(pid: int) -> int | None:
    """`pid`'s resident set in bytes from /proc/PID/statm: kernel counters, read without walking
    the process's page tables as smaps_rollup does (which holds its memory map's lock meanwhile,
    and can make a worker that maps or unmaps memory wait). None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            fields = handle.read().split()
        return int(fields[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return None


def _kernel_children(pid: int) -> list[int] | None:
    """`pid`'s children from /proc/PID/task/*/children, or None where the kernel lacks that
    file (built without CONFIG_PROC_CHILDREN)."""
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", "rb") as handle:
                found += [int(child) for child in handle.read().split()]
    except FileNotFoundError:
        return None if os.path.exists(f"/proc/{pid}") else []
    except OSError:
        pass
    return found


def _parents() -> dict[int, list[int]]:
    """Every process's children, by one scan of the parent pid of each."""
    by_parent: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            found = stat(int(entry))
            if found is not None:
                by_parent.setdefault(found.ppid, []).append(int(entry))
    return by_parent


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants (children, their children...), `pid` first. One scan of
    /proc at most, where the kernel cannot list a process's children itself."""
    by_parent: dict[int, list[int]] | None = None
    out, todo, seen = [], [pid], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        out.append(current)
        kids = _kernel_children(current) if by_parent is None else None
        if kids is None:
            by_parent = by_parent if by_parent is not None else _parents()
            kids = by_parent.get(current, [])
        todo += kids
    return out


def tree_memory(pid: int, measure: str = "uss") -> int | None:
    """The memory of `pid` and all its descendants, summed (what superlance's memmon -c
    measures: a program's own workers are its children). None when `pid` is gone."""
    own = memory(pid, measure)
    if own is None:
        return None
    return own + sum(memory(child, measure) or 0 for child in tree(pid)[1:])
