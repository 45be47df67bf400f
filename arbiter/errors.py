"""Exceptions that carry what a user needs to act on them, and the exit codes they map to.

Library code raises these; only `arbiter.cli` turns them into a message and an exit status.
"""

from __future__ import annotations

# Gunicorn's exit codes, kept so that process managers above us read them the same way.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
WORKER_BOOT_ERROR = 3
APP_LOAD_ERROR = 4


# The one table of numbered errors, for program requests (`arbiter.programs.errors`) and control
# requests (`arbiter.control.backend.ControlError`) alike: the stable name scripts and the JSON
# API see -> (the HTTP status it is sent with, Supervisor's XML-RPC fault number from
# supervisor/xmlrpc.py `Faults`, so supervisorctl reads our faults as it reads its own).
ERROR_CODES: dict[str, tuple[int, int]] = {
    "BAD_REQUEST": (400, 2),        # INCORRECT_PARAMETERS
    "BAD_ARGUMENTS": (400, 3),
    "BAD_SIGNAL": (400, 11),
    "UNAUTHORIZED": (401, 2),
    "FORBIDDEN": (403, 2),
    "NOT_FOUND": (404, 1),          # UNKNOWN_METHOD: the closest meaning
    "BAD_NAME": (404, 10),
    "NO_FILE": (404, 20),
    "METHOD_NOT_ALLOWED": (405, 1),
    "TIMEOUT": (408, 30),
    "ALREADY_STARTED": (409, 60),
    "NOT_RUNNING": (409, 70),
    "ALREADY_ADDED": (409, 90),
    "STILL_RUNNING": (409, 91),
    "TOO_LARGE": (413, 2),
    "HEADERS_TOO_LARGE": (431, 2),
    "FAILED": (500, 30),
    "INTERNAL": (500, 30),
    "SPAWN_ERROR": (500, 50),
    "ABNORMAL_TERMINATION": (500, 40),
    "NOT_EXECUTABLE": (500, 21),
    "RELOAD_FAILED": (500, 30),
    "CANT_REREAD": (500, 92),
    "SHUTTING_DOWN": (503, 6),
    "SHUTDOWN_STATE": (503, 6),     # Supervisor's spelling, as arbiter.programs raises it
}


def fault_number(code: str) -> int:
    """Supervisor's XML-RPC fault number for error `code` (30, FAILED, when it has none)."""
    return ERROR_CODES.get(code, (500, 30))[1]


class ArbiterError(Exception):
    """An error meant for the user: its message is printed as is, and it exits with `exit_code`."""

    exit_code: int = EXIT_ERROR

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(ArbiterError):
    """A setting is unknown or has a value of the wrong kind. The message names the key and file."""

    exit_code = EXIT_USAGE


class BindError(ArbiterError):
    """A listening socket could not be bound or adopted."""


class AppLoadError(ArbiterError):
    """The application could not be imported or found. `details` holds the traceback text."""

    exit_code = APP_LOAD_ERROR

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


class WorkerBootError(ArbiterError):
    """A worker could not start serving (bad worker class, app of the wrong interface...)."""

    exit_code = WORKER_BOOT_ERROR
