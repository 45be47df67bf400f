"""Taking over running programs after an in-place upgrade (USR2, or HUP under --preload).

The old image records every running child with its pipes' read ends (`registry.Entry`) and
clears close-on-exec on those descriptors; `execve` keeps the pid, the children and the
descriptors. The new image reads the same record (`registry.adoptable`: the rule for adopting)
and gives each entry to the process of the same full name, which goes on reading the same
pipes into the same files: the children notice nothing, and no line is lost or read twice,
since whatever the old image did not read is still in the pipe. An entry the new configuration
no longer names is stopped as an orphan is (`registry.Orphans`: the rule for stopping).
"""

from __future__ import annotations

import logging
import os
import stat

from arbiter.programs import registry
from arbiter.programs.listeners import EventHub
from arbiter.programs.processes import ProcessSet
from arbiter.programs.states import ProcessStates, StopRequested

S = ProcessStates


def adopt(procs: ProcessSet, entries: list[registry.Entry], hub: EventHub,
          log: logging.Logger) -> list[registry.Entry]:
    """Give each entry to its process; returns those no configured process takes (to stop)."""
    by_name = {proc.fullname: proc for proc in procs}
    leftover = []
    for entry in entries:
        proc = by_name.get(entry.name)
        if proc is None or proc.record.pid:
            leftover.append(entry)
            for fd in entry.fds:  # the orphan is stopped; its pipes are of no more use
                _close(fd)
            continue
        proc.adopt(entry.pid, entry.state, entry.started, entry.starttime,
                   {"stdout": _pipe(entry.stdout_fd), "stderr": _pipe(entry.stderr_fd)}, _pipe(entry.stdin_fd),
                   {"stdout": entry.stdout_logfile, "stderr": entry.stderr_logfile})
        procs.spawned(proc, entry.pid)
        if proc.output.listener:
            hub.spawned(proc.fullname, proc.spec.program.name, proc.output.stdin_fd)
            hub.running(proc.fullname, proc.state is S.RUNNING)
        log.info("adopted: '%s' with pid %d, %s since the upgrade", entry.name, entry.pid, proc.state.name)
        if entry.state == "STOPPING":
            proc.feed(StopRequested())  # it was being stopped: the stop goes on
    return leftover


def _pipe(fd: int) -> int:
    """`fd` if it is an open pipe (what the record says it is), else -1: a number that names
    something else in this image is never read or closed as if it were the child's pipe."""
    try:
        return fd if fd >= 0 and stat.S_ISFIFO(os.fstat(fd).st_mode) else -1
    except OSError:
        return -1


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
