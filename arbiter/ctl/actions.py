"""What `arbiter ctl`'s commands share: the run's state (`Ctl`), and acting on processes by
name as supervisorctl does (unknown names, what `start all` / `stop all` report, the lines and
exit statuses of each result)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import click

from arbiter.control.names import matching
from arbiter.control.records import ProgramRow, Status
from arbiter.ctl.client import EXIT_GENERIC, EXIT_INVALID_ARGS, EXIT_NOT_RUNNING, ApiError, ControlClient

DEAD_CODES = {"SPAWN_ERROR", "ABNORMAL_TERMINATION", "NOT_RUNNING"}
REASONS = {"BAD_NAME": "no such process", "NO_FILE": "no such file", "NOT_EXECUTABLE": "file is not executable",
           "ALREADY_STARTED": "already started", "SPAWN_ERROR": "spawn error", "NOT_RUNNING": "not running",
           "ABNORMAL_TERMINATION": "abnormal termination", "BAD_SIGNAL": "bad signal name"}

@dataclass
class Ctl:
    client: ControlClient | None = None
    json: bool = False
    status: int = 0
    global_args: list[str] = field(default_factory=list)

    def fail(self, code: int) -> None:
        """Remember an exit status; later failures do not hide an earlier one."""
        self.status = self.status or code

    def api(self) -> ControlClient:
        assert self.client is not None
        return self.client

    def show(self, value: Any) -> None:
        click.echo(json.dumps(value, indent=2, default=str))



def programs_of(c: Ctl) -> list[ProgramRow]:
    return list(Status.from_json(c.api().call("GET", "/v1/status")).programs)


def known(c: Ctl, names: tuple[str, ...], bad_group_status: int) -> list[str]:
    """The names the server knows; unknown ones are reported as supervisorctl does."""
    return known_with_status(c, names, bad_group_status)[0]


def known_with_status(c: Ctl, names: tuple[str, ...], bad_group_status: int) -> tuple[list[str], list[ProgramRow]]:
    programs = programs_of(c)
    if "all" in names:
        return ["all"], programs
    known = []
    for name in names:
        if matching(programs, name):
            known.append(name)
        elif name.endswith(":*") or name.endswith(":"):
            click.echo(f"{name.rstrip(':*')}: ERROR (no such group)")
            c.fail(bad_group_status)
        else:
            click.echo(f"{name}: ERROR (no such process)")
            c.fail(EXIT_GENERIC)
    return known, programs


def _left_alone(action: str, names: list[str], programs: list[ProgramRow]) -> set[str]:
    """Processes a wildcard (`all`, `group:*`) reaches but Supervisor's start/stop-all leaves
    alone, so reports nothing of: `stop` skips what is not running (a FATAL one is not
    "stopped"), `start` what already runs. A process also named on its own is reported."""
    if action not in ("start", "stop"):
        return set()
    wildcards = [n for n in names if n == "all" or n.endswith(":*") or n.endswith(":")]
    alone = set()
    for p in programs:
        if (any(p in matching(programs, n) for n in names if n not in wildcards)
                or not any(p in matching(programs, n) for n in wildcards)):
            continue
        if p.running == (action == "start"):
            alone.add(p.namespec)
    return alone


def result_spec(result: dict[str, Any]) -> str:
    """A per-process result's namespec (Supervisor's make_namespec)."""
    name, group = str(result.get("name") or ""), str(result.get("group") or "")
    return name if not group or group == name else f"{group}:{name}"


def act(c: Ctl, action: str, names: tuple[str, ...], done: str, ignored: set[str], extra: dict[str, Any]) -> None:
    if not names:
        click.echo(f"Error: {action} requires a process name")
        c.fail(EXIT_INVALID_ARGS if action == "start" else EXIT_GENERIC)
        return
    known, programs = known_with_status(c, names, EXIT_INVALID_ARGS if action == "start" else EXIT_GENERIC)
    if not known:
        return
    alone = _left_alone(action, known, programs)
    try:
        results = c.api().call("POST", f"/v1/{action}", {"names": known, **extra}, timeout=None)
    except ApiError as exc:
        if len(known) != 1 or exc.code not in REASONS:
            click.echo(f"ERROR: {exc}")
            c.fail(EXIT_GENERIC)
            return
        # One name refused as a whole: the line supervisorctl prints for it.
        results = [{"name": known[0], "group": known[0].split(":")[0], "status": exc.code, "description": exc.message}]
    results = [r for r in results if result_spec(r) not in alone]
    if c.json:
        c.show(results)
    for r in results:
        name, code = result_spec(r), r.get("status")
        if not c.json:
            reason = REASONS.get(code, r.get("description"))
            click.echo(f"{name}: {done}" if code == "OK" else f"{name}: ERROR ({reason})")
        if code != "OK" and code not in ignored:
            c.fail(EXIT_NOT_RUNNING if code in DEAD_CODES else EXIT_GENERIC)
