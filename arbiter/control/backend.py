"""What the control server needs from the master: a `Backend`, the `Command`s it queues, and
the `ControlError`s they fail with.

Handlers never touch master state. They read `Backend.status()` and `Backend.log_path()`, and
anything that changes state becomes a `Command` handed to `Backend.submit()`. The master runs it
in its own loop and later calls `command.reply(result)` or `command.fail(ControlError(...))`:
in the same turn, or many turns later (a `reload` with `wait` replies when the reload is over).

`status()` returns one dict, cheap to build (it is called on every request)::

    {"master": {
        "pid": int, "version": str, "started": float (unix time), "uptime": float (seconds),
        "state": "RUNNING" | "STOPPING", "generation": int, "workers_target": int,
        "reload": {"state": "none" | "in progress" | "done" | "failed: <why>",
                   "count": int, "failures": int},
        # optional counters, exported by /metrics when present:
        "worker_restarts": int, "worker_timeouts": int},
     "workers": [{"pid": int, "age": float, "generation": int,
                  "state": "BOOTING" | "READY" | "DRAINING" | "RETIRING",
                  "heartbeat_age": float, "requests": int, "connections": int,
                  "rss": int (bytes), "cpu": float (seconds)}],
     "programs": [{"name": str, "group": str, "state": str (Supervisor state name),
                   "statecode": int, "pid": int (0 when not running), "start": float,
                   "stop": float, "now": float (unix times, 0 = never), "uptime": float,
                   "exitstatus": int, "spawnerr": str, "description": str,
                   "stdout_logfile": str, "stderr_logfile": str,
                   # optional: "restarts": int (exported by /metrics when present)
                   }]}

Command names and their `args` (names are `prog`, `group:prog`, `group:*` or `all`):

==========  ==========================================  ===================================
name        args                                        reply(result)
==========  ==========================================  ===================================
start       {"names": [...], "wait": bool}              list of per-process results, or None
stop        {"names": [...], "wait": bool}              same
restart     {"names": [...], "wait": bool}              same
signal      {"names": [...], "signal": "HUP"}           same
clear       {"names": [...] or ["master"],              same (log files truncated)
             "streams": ["stdout", "stderr"]}
reload      {"wait": bool}                              anything JSON-able (reply at the end
                                                        when wait, else when started)
scale       {"spec": "+N" | "-N" | "=N"}                anything, e.g. {"workers_target": N}
reread      {}                                          {"added": [...], "changed": [...],
                                                         "removed": [...]} (group names)
update      {"names": [...]} (empty = all)              same shape: what was done
add         {"names": [group, ...]}                     anything
remove      {"names": [group, ...]}                     anything
shutdown    {}                                          anything (reply before exiting)
==========  ==========================================  ===================================

A per-process result is ``{"name", "group", "status": "OK" | <error code>, "description"}``;
when a command replies None the server reports "OK" for every process the names matched.
`wait` asks to reply once the processes reached their goal state (Supervisor's `wait=True`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

# Stable error codes and their numbers: one table for program and control errors alike.
from arbiter.errors import ERROR_CODES as ERROR_CODES
from arbiter.errors import ArbiterError, fault_number
from arbiter.programs.memlog import MemoryLog

COMMAND_NAMES = frozenset({
    "start", "stop", "restart", "signal", "reload", "scale", "shutdown",
    "reread", "update", "add", "remove", "clear",
})

class ControlError(ArbiterError):
    """A control request that cannot be done. `code` is one of `ERROR_CODES` (stable, for
    scripts); `message` is for a person; `http_status` defaults from the code."""

    def __init__(self, code: str, message: str, http_status: int | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.http_status = http_status or ERROR_CODES.get(code, (500, 30))[0]

    @property
    def fault_code(self) -> int:
        """Supervisor's XML-RPC fault number for this error (30, FAILED, when it has none)."""
        return fault_number(self.code)

    def to_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}


@dataclass
class Command:
    """One state change for the master loop to carry out. Call `reply` or `fail` once."""

    name: str
    args: dict[str, Any] = field(default_factory=dict)
    reply: Callable[[Any], None] = lambda result: None
    fail: Callable[[ControlError], None] = lambda error: None

    def __post_init__(self) -> None:
        if self.name not in COMMAND_NAMES:
            raise ValueError(f"unknown control command {self.name!r}; expected one of {sorted(COMMAND_NAMES)}")


class Backend(Protocol):
    """The master, as the control server sees it (see the module docstring for the schema)."""

    def status(self) -> dict[str, Any]:
        """A snapshot of master, workers and programs; cheap, called on every request."""
        ...

    def submit(self, command: Command) -> None:
        """Queue `command` to the master loop; it calls `command.reply`/`fail` when done.

        May raise ControlError to refuse at once (the server then fails the request)."""
        ...

    def log_path(self, name: str, stream: str) -> str | None:
        """The file holding `stream` ("stdout"/"stderr") of program `name` (a namespec), or the
        master's own log when `name` is "master"; None when that output is not captured."""
        ...

    def log_memory(self, name: str, stream: str) -> MemoryLog | None:
        """The last output of `stream` of program `name` when it has no log file but goes
        through the master's own stream (kept in memory for tail); None otherwise."""
        ...
