"""How `arbiter ctl` prints status: supervisorctl's line layout for programs, a table for workers.

Colours come from click.style; click.echo drops them when the output is not a terminal.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

import click

from arbiter.control.records import ProgramRow, Status
from arbiter.programs.states import ProcessStates

COLOURS = {"RUNNING": "green", "READY": "green", "STARTING": "yellow", "BOOTING": "yellow", "BACKOFF": "yellow",
           "STOPPING": "yellow", "DRAINING": "yellow", "FATAL": "red", "EXITED": "red", "UNKNOWN": "red"}


def duration(seconds: Any) -> str:
    return str(datetime.timedelta(seconds=int(float(seconds or 0))))


def styled_state(state: str, width: int = 10) -> str:
    return click.style(f"{state:<{width}}", fg=COLOURS.get(state))


def describe(p: ProgramRow) -> str:
    if p.description:
        text = p.description
    elif p.state == ProcessStates.RUNNING:
        text = f"pid {p.pid}, uptime {duration(p.uptime)}"
    else:
        text = p.spawnerr
    if p.log_dropped_bytes:  # the log file cannot be written: say so where people look
        text += click.style(f"  [log not written: {p.log_dropped_bytes} bytes dropped, see the master's log]", fg="red")
    return text


def status_lines(programs: Sequence[ProgramRow]) -> None:
    width = max([30, *(len(p.namespec) for p in programs)]) + 3  # supervisorctl's layout
    for p in programs:
        click.echo(f"{p.namespec:<{width}}{styled_state(p.state.name)}{describe(p)}")


def workers_table(status: Status) -> None:
    m, workers = status.master, status.workers
    ready = sum(w.state == "READY" for w in workers)
    click.echo(f"master pid {m.pid}  {styled_state(m.state, 0)}  version {m.version}  "
               f"uptime {duration(m.uptime)}  generation {m.generation}  "
               f"workers {ready}/{m.workers_target} ready  reload: {m.reload.state}")
    if workers:
        click.echo(f"  {'PID':>8}  {'STATE':<9} {'GEN':>4} {'AGE':>9} {'BEAT':>6} {'REQUESTS':>9} {'CONNS':>5} "
                   f"{'RSS':>9}  FORKED BY")
        for w in workers:
            click.echo(f"  {w.pid:>8}  {styled_state(w.state, 9)} {w.generation:>4} {duration(w.age):>9} "
                       f"{w.heartbeat_age:>5.1f}s {w.requests:>9} {w.connections:>5} {w.rss / 1048576:>7.1f}Mi  "
                       f"{f'mold {w.forked_from}' if w.forked_from else 'master'}")
