"""What the control server needs from the master: a `Backend`, the `Command`s it queues, and
the `ControlError`s they fail with.

Handlers never touch master state. They read `Backend.status()` and `Backend.log_path()`, and
anything that changes state becomes a `Command` handed to `Backend.submit()`. The master runs it
in its own loop and later calls `command.reply(result)` or `command.fail(ControlError(...))`:
in the same turn, or many turns later (a `reload` with `wait` replies when the reload is over).

`status()` returns one `records.Status` (master, web workers, programs: typed records), cheap to
build (it is called on every request). Each command carries its arguments as a record:

==============  =================  ====================================================
name            args               reply(result)
==============  =================  ====================================================
start           ProcessArgs        list of per-process results (dicts), or None
stop            ProcessArgs        same
restart         ProcessArgs        same
signal          SignalArgs         same
clear           ClearArgs          same (log files truncated; names ("master",): its log)
reload          ReloadArgs         anything JSON-able (at the end when wait, else at once)
scale           ScaleArgs          anything, e.g. {"workers_target": N}
reread          NoArgs             {"added": [...], "changed": [...], "removed": [...]}
update          GroupArgs          same shape: what was done (no names: all)
add             GroupArgs          anything
remove          GroupArgs          anything
replace_worker  ReplaceWorkerArgs  {"pid": pid} once the worker's successor is asked for
                                   (it boots, then pid drains: the max_requests path)
refork          NoArgs             {"refork": true} once a worker is chosen for promotion
shutdown        NoArgs             anything (reply before exiting)
remote_event    RemoteEventArgs    anything (a REMOTE_COMMUNICATION event was published)
==============  =================  ====================================================

A per-process result is ``{"name", "group", "status": "OK" | <error code>, "description"}``
(`commands.ProcessResult` once read); when a command replies None the server reports "OK" for
every process the names matched. `wait` asks to reply once the processes reached their goal
state (Supervisor's `wait=True`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from arbiter.control.records import (
    ClearArgs,
    CommandArgs,
    GroupArgs,
    NoArgs,
    ProcessArgs,
    ReloadArgs,
    RemoteEventArgs,
    ReplaceWorkerArgs,
    ScaleArgs,
    SignalArgs,
    Status,
)

# Stable error codes and their numbers: one table for program and control errors alike.
from arbiter.errors import ERROR_CODES as ERROR_CODES
from arbiter.errors import ArbiterError, fault_number
from arbiter.programs.memlog import MemoryLog

# Each command and the record its arguments come in.
COMMAND_ARGS: dict[str, type] = {
    "start": ProcessArgs, "stop": ProcessArgs, "restart": ProcessArgs, "signal": SignalArgs,
    "clear": ClearArgs, "reload": ReloadArgs, "scale": ScaleArgs, "reread": NoArgs, "update": GroupArgs,
    "add": GroupArgs, "remove": GroupArgs, "replace_worker": ReplaceWorkerArgs, "shutdown": NoArgs,
    "refork": NoArgs,
    "remote_event": RemoteEventArgs,
}
COMMAND_NAMES = frozenset(COMMAND_ARGS)

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
    args: CommandArgs = field(default_factory=NoArgs)
    reply: Callable[[Any], None] = lambda result: None
    fail: Callable[[ControlError], None] = lambda error: None

    def __post_init__(self) -> None:
        if self.name not in COMMAND_ARGS:
            raise ValueError(f"unknown control command {self.name!r}; expected one of {sorted(COMMAND_NAMES)}")
        if not isinstance(self.args, COMMAND_ARGS[self.name]):
            raise TypeError(f"command {self.name!r} takes {COMMAND_ARGS[self.name].__name__}, "
                            f"not {type(self.args).__name__}")


class Backend(Protocol):
    """The master, as the control server sees it (see the module docstring)."""

    def status(self) -> Status:
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
