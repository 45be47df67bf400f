"""How `arbiter ctl` prints status: supervisorctl's line layout for programs, a table for workers.

Colours come from click.style; click.echo drops them when the output is not a terminal.
"""

from __future__ import annotations

import datetime
from typing import Any

import click

from arbiter.control.names import namespec

COLOURS = {"RUNNING": "green", "READY": "green", "STARTING": "yellow", "BOOTING": "yellow", "BACKOFF": "yellow",
           "STOPPING": "yellow", "DRAINING": "yellow", "FATAL": "red", "EXITED": "red", "UNKNOWN": "red"}


def duration(seconds: Any) -> str:
    return str(datetime.timedelta(seconds=int(float(seconds or 0))))


def styled_state(state: str, width: int = 10) -> str:
    return click.style(f"{state:<{width}}", fg=COLOURS.get(state))


def describe(p: dict[str, Any]) -> str:
    if p.get("description"):
        text = str(p["description"])
    elif p.get("state") == "RUNNING":
        text = f"pid {p.get('pid')}, uptime {duration(p.get('uptime'))}"
    else:
        text = str(p.get("spawnerr") or "")
    dropped = int(p.get("log_dropped_bytes") or 0)
    if dropped:  # the log file cannot be written: say so where people look
        text += click.style(f"  [log not written: {dropped} bytes dropped, see the master's log]", fg="red")
    return text


def status_lines(programs: list[dict[str, Any]]) -> None:
    width = max([30, *(len(namespec(p)) for p in programs)]) + 3  # supervisorctl's layout
    for p in programs:
        click.echo(f"{namespec(p):<{width}}{styled_state(str(p.get('state')))}{describe(p)}")


def workers_table(status: dict[str, Any]) -> None:
    m, workers = status.get("master", {}), status.get("workers", [])
    ready = sum(w.get("state") == "READY" for w in workers)
    click.echo(f"master pid {m.get('pid')}  {styled_state(str(m.get('state')), 0)}  version {m.get('version')}  "
               f"uptime {duration(m.get('uptime'))}  generation {m.get('generation')}  "
               f"workers {ready}/{m.get('workers_target')} ready  reload: {m.get('reload', {}).get('state', 'none')}")
    if workers:
        click.echo(f"  {'PID':>8}  {'STATE':<9} {'GEN':>4} {'AGE':>9} {'BEAT':>6} {'REQUESTS':>9} {'CONNS':>5} {'RSS':>9}")
        for w in workers:
            click.echo(f"  {w.get('pid'):>8}  {styled_state(str(w.get('state')), 9)} {w.get('generation'):>4} "
                       f"{duration(w.get('age')):>9} {float(w.get('heartbeat_age') or 0):>5.1f}s "
                       f"{w.get('requests', 0):>9} {w.get('connections', 0):>5} "
                       f"{(w.get('rss') or 0) / 1048576:>7.1f}Mi")
