"""The error log and the access log, in Gunicorn's formats, and reopening them on USR1.

Named `logs` rather than `logging` so that `import logging` inside the package always means the
standard library.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Protocol

ERROR_LOGGER = "arbiter.error"
ACCESS_LOGGER = "arbiter.access"
_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"
_DATEFMT = "%Y-%m-%d %H:%M:%S %z"


class _StreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler whose stream is looked up at each write.

    A forked worker or a test may replace `sys.stderr`; looking it up late follows that.
    """

    def __init__(self, which: str) -> None:
        super().__init__()
        self._which = which

    @property
    def stream(self) -> Any:
        return getattr(sys, self._which)

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _handler(target: str, default_stream: str) -> logging.Handler:
    if target == "-":
        return _StreamHandler(default_stream)
    # delay=False: a path that cannot be opened fails now, at start, with its reason.
    return logging.FileHandler(target, encoding="utf-8")


class LogSettings(Protocol):
    """What `setup` reads from a config."""

    @property
    def errorlog(self) -> str: ...
    @property
    def loglevel(self) -> str: ...
    @property
    def accesslog(self) -> str | None: ...
    @property
    def errorlog_to_stdout(self) -> bool: ...


def setup(cfg: LogSettings) -> logging.Logger:
    """Configure both loggers from `cfg.errorlog`, `cfg.loglevel` and `cfg.accesslog`.

    All or nothing: the new handlers are opened before the old ones are closed, so a log file
    that cannot be opened leaves the logging as it was (a HUP must not silence the master).

    Raises:
        OSError: a log file cannot be opened (the caller names the setting).
    """
    handler = _handler(cfg.errorlog, "stderr")
    try:
        access_handler = _handler(cfg.accesslog, "stdout") if cfg.accesslog else None
    except OSError:
        handler.close()
        raise
    handlers = [handler]
    if cfg.errorlog_to_stdout and cfg.errorlog != "-":
        handlers.append(_StreamHandler("stdout"))  # supervisord's nodaemon=true: the terminal too
    error = logging.getLogger(ERROR_LOGGER)
    _replace_handlers(error, *handlers)
    for each in handlers:
        each.setFormatter(logging.Formatter(_FORMAT, _DATEFMT))
    error.setLevel(cfg.loglevel.upper())
    error.propagate = False

    access = logging.getLogger(ACCESS_LOGGER)
    access.propagate = False
    _replace_handlers(access, access_handler)
    if access_handler is not None:
        access_handler.setFormatter(logging.Formatter("%(message)s"))
        access.setLevel(logging.INFO)
        access.disabled = False
    else:
        access.disabled = True
    return error


def _replace_handlers(logger: logging.Logger, *handlers: logging.Handler | None) -> None:
    old = list(logger.handlers)
    logger.handlers.clear()
    for handler in handlers:
        if handler is not None:
            logger.addHandler(handler)
    for previous in old:
        previous.close()  # a file handler's descriptor, else one leaks per HUP


def access_enabled() -> bool:
    return not logging.getLogger(ACCESS_LOGGER).disabled


def reopen() -> None:
    """Reopen every log file (logrotate moved it away). Streams are left alone."""
    for name in (ERROR_LOGGER, ACCESS_LOGGER):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.FileHandler):
                handler.acquire()
                try:
                    handler.close()
                    handler.stream = handler._open()
                finally:
                    handler.release()


def flush() -> None:
    """Flush every handler (before the process image is replaced)."""
    for name in (ERROR_LOGGER, ACCESS_LOGGER):
        for handler in logging.getLogger(name).handlers:
            handler.flush()


REPEAT_EVERY = 10.0  # seconds between the summaries of an error that persists


class RepeatedError:
    """One error that can persist and recur many times a second (accept() failing with EMFILE):
    logged when it starts, then once every `every` seconds with how often it recurred meanwhile,
    and once when it clears. Times come from the caller, so a fake clock can drive it."""

    def __init__(self, log: logging.Logger, what: str, every: float = REPEAT_EVERY) -> None:
        self.log = log
        self.what = what
        self.every = every
        self.since: float | None = None  # None: not happening
        self._count = 0
        self._next = 0.0

    def occurred(self, now: float, detail: object) -> None:
        if self.since is None:
            self.since, self._count, self._next = now, 0, now + self.every
            self.log.error("%s: %s", self.what, detail)
            return
        self._count += 1
        if now >= self._next:
            self.log.error("%s: %s (%d more times in the last %.0f s)", self.what, detail, self._count,
                           now - (self._next - self.every))
            self._count, self._next = 0, now + self.every

    def cleared(self, now: float) -> None:
        if self.since is not None:
            self.log.warning("%s: recovered after %.1f s", self.what, now - self.since)
            self.since = None
