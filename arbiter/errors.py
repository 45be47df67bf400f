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
