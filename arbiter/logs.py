"""The error log and the access log, in Gunicorn's formats, and reopening them on USR1.

Named `logs` rather than `logging` so that `import logging` inside the package always means the
standard library.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

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

    @property  # type: ignore[override]
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


def setup(cfg: Any) -> logging.Logger:
    """Configure both loggers from `cfg.errorlog`, `cfg.loglevel` and `cfg.accesslog`.

    Raises:
        OSError: a log file cannot be opened (the caller names the setting).
    """
    error = logging.getLogger(ERROR_LOGGER)
    error.handlers.clear()
    handler = _handler(cfg.errorlog, "stderr")
    handler.setFormatter(logging.Formatter(_FORMAT, _DATEFMT))
    error.addHandler(handler)
    error.setLevel(cfg.loglevel.upper())
    error.propagate = False

    access = logging.getLogger(ACCESS_LOGGER)
    access.handlers.clear()
    access.propagate = False
    if cfg.accesslog:
        access_handler = _handler(cfg.accesslog, "stdout")
        access_handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(access_handler)
        access.setLevel(logging.INFO)
        access.disabled = False
    else:
        access.disabled = True
    return error


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
