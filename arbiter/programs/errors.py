"""Errors from program control requests, with Supervisor's stable XML-RPC fault codes.

Supervisor's clients (supervisorctl, and the tools built on its API) branch on these numbers,
so they are kept as Supervisor numbers them; they come from the one table in
`arbiter.errors.ERROR_CODES`, which the control API's errors use too.
"""

from __future__ import annotations

from arbiter.errors import ArbiterError, fault_number

SHUTDOWN_STATE = fault_number("SHUTDOWN_STATE")
BAD_NAME = fault_number("BAD_NAME")
BAD_SIGNAL = fault_number("BAD_SIGNAL")
FAILED = fault_number("FAILED")
SPAWN_ERROR = fault_number("SPAWN_ERROR")
ALREADY_STARTED = fault_number("ALREADY_STARTED")
NOT_RUNNING = fault_number("NOT_RUNNING")
ALREADY_ADDED = fault_number("ALREADY_ADDED")
STILL_RUNNING = fault_number("STILL_RUNNING")


class ProgramError(ArbiterError):
    """A request about a program that cannot be done; `code` is Supervisor's fault number."""

    code: int = FAILED
    fault: str = "FAILED"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.fault}: {self.message}"


class ShutdownState(ProgramError):
    code, fault = SHUTDOWN_STATE, "SHUTDOWN_STATE"


class BadName(ProgramError):
    code, fault = BAD_NAME, "BAD_NAME"


class BadSignal(ProgramError):
    code, fault = BAD_SIGNAL, "BAD_SIGNAL"


class Failed(ProgramError):
    code, fault = FAILED, "FAILED"


class SpawnError(ProgramError):
    code, fault = SPAWN_ERROR, "SPAWN_ERROR"


class AlreadyStarted(ProgramError):
    code, fault = ALREADY_STARTED, "ALREADY_STARTED"


class NotRunning(ProgramError):
    code, fault = NOT_RUNNING, "NOT_RUNNING"


class AlreadyAdded(ProgramError):
    """`add` of a group that is already active."""

    code, fault = ALREADY_ADDED, "ALREADY_ADDED"


class StillRunning(ProgramError):
    """`remove` of a group that still has processes not stopped."""

    code, fault = STILL_RUNNING, "STILL_RUNNING"


BY_FAULT: dict[str, type[ProgramError]] = {
    cls.fault: cls
    for cls in (ShutdownState, BadName, BadSignal, Failed, SpawnError, AlreadyStarted, NotRunning,
                AlreadyAdded, StillRunning)
}
