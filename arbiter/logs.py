"""The error log and the access log, in Gunicorn's formats, and reopening them on USR1.

Named `logs` rather than `logging` so that `import logging` inside the package always means the
standard library.
"""

from __future__ import annotations

import json
import logging
import logging.config
import logging.handlers
import os
import sys
from typing import Any, Protocol

from arbiter.config.convert import syslog_address
from arbiter.errors import ConfigError

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
    """Configure both loggers from `cfg.errorlog`, `cfg.loglevel` and `cfg.accesslog`, then
    Gunicorn's extras when `cfg` has them: `--capture-output`, `--log-syslog`, a logging config
    of the user's (`--log-config`, `--log-config-json`, `logconfig_dict`, applied last as in
    Gunicorn) and the StatsD log-line counters.

    All or nothing: the new handlers are opened before the old ones are closed, so a log file
    that cannot be opened leaves the logging as it was (a HUP must not silence the master).

    Raises:
        OSError: a log file cannot be opened (the caller names the setting).
        ConfigError: a logging config or the syslog address is wrong.
    """
    global _captured
    handler = _handler(cfg.errorlog, "stderr")
    handlers: list[logging.Handler] = [handler]
    access_handlers: list[logging.Handler] = []
    try:
        if cfg.accesslog:
            access_handlers.append(_handler(cfg.accesslog, "stdout"))
            access_handlers[-1].setFormatter(logging.Formatter("%(message)s"))
        if getattr(cfg, "syslog", False):
            handlers.append(_syslog_handler(cfg, "error"))
            if not cfg.disable_redirect_access_to_syslog:  # type: ignore[attr-defined]
                access_handlers.append(_syslog_handler(cfg, "access"))
    except (OSError, ConfigError):
        for each in handlers + access_handlers:
            each.close()
        raise
    _captured = cfg.errorlog if getattr(cfg, "capture_output", False) and cfg.errorlog != "-" else None
    _capture()
    if cfg.errorlog_to_stdout and cfg.errorlog != "-":
        handlers.append(_StreamHandler("stdout"))  # supervisord's nodaemon=true: the terminal too
    for each in handlers:
        if each.formatter is None:
            each.setFormatter(logging.Formatter(_FORMAT, _DATEFMT))
    error = logging.getLogger(ERROR_LOGGER)
    _replace_handlers(error, *handlers)
    error.setLevel(cfg.loglevel.upper())
    error.propagate = False

    access = logging.getLogger(ACCESS_LOGGER)
    access.propagate = False
    _replace_handlers(access, *access_handlers)
    if access_handlers:
        access.setLevel(logging.INFO)
        access.disabled = False
    else:
        access.disabled = True
    _user_config(cfg)
    if getattr(cfg, "statsd_host", None):
        from arbiter.statsd import LogCounter

        error.addHandler(LogCounter(cfg))  # after the user's config, which may replace the handlers
    return error


def _replace_handlers(logger: logging.Logger, *handlers: logging.Handler | None) -> None:
    old = list(logger.handlers)
    logger.handlers.clear()
    for handler in handlers:
        if handler is not None:
            logger.addHandler(handler)
    for previous in old:
        previous.close()  # a file handler's descriptor, else one leaks per HUP


# -- --capture-output: the app's print() and tracebacks go to the error log file ----------------

_captured: str | None = None  # the error log file fds 1 and 2 point to, when capturing


def _capture() -> None:
    """Point fds 1 and 2 at the error log file (Gunicorn's `--capture-output`), so what an app
    or a library writes to stdout or stderr lands there too; redone by `reopen` after rotation."""
    if _captured is None:
        return
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    fd = os.open(_captured, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)


# -- --log-syslog ----------------------------------------------------------------------------

def _syslog_handler(cfg: Any, which: str) -> logging.Handler:
    address, kind = syslog_address(cfg.syslog_addr)
    try:
        handler = logging.handlers.SysLogHandler(address=address, facility=cfg.syslog_facility, socktype=kind)
    except OSError as exc:
        raise ConfigError(f"--log-syslog-to {cfg.syslog_addr}: cannot reach syslog: {exc.strerror or exc}") from None
    # The tag syslog files the line under: `arbiter.<prefix>.error` (Gunicorn writes gunicorn.<...>).
    prefix = (cfg.syslog_prefix or cfg.title_name).replace(":", ".")
    handler.setFormatter(logging.Formatter(f"arbiter.{prefix}.{which}: [%(process)d] %(message)s"))
    return handler


# -- --log-config, --log-config-json, logconfig_dict ---------------------------------------------

# A config written for Gunicorn names its loggers; Arbiter's carry the same records.
_GUNICORN_NAMES = {"gunicorn.error": ERROR_LOGGER, "gunicorn.access": ACCESS_LOGGER}


def _user_config(cfg: Any) -> None:
    if getattr(cfg, "logconfig_dict", None):
        origin = "logconfig_dict"
    elif getattr(cfg, "logconfig_json", None):
        origin = f"--log-config-json {cfg.logconfig_json}"
    elif getattr(cfg, "logconfig", None):
        origin = f"--log-config {cfg.logconfig}"
    else:
        return
    base: dict[str, Any] = {"version": 1, "disable_existing_loggers": False}
    try:
        if cfg.logconfig_dict:
            logging.config.dictConfig({**base, **cfg.logconfig_dict})
        elif cfg.logconfig_json:
            with open(cfg.logconfig_json, encoding="utf-8") as handle:
                logging.config.dictConfig({**base, **json.load(handle)})
        else:
            if not os.path.exists(cfg.logconfig):
                raise FileNotFoundError("the file does not exist")
            defaults = {"__file__": cfg.logconfig, "here": os.path.dirname(cfg.logconfig)}
            logging.config.fileConfig(cfg.logconfig, defaults=defaults, disable_existing_loggers=False)
    except (OSError, ValueError, TypeError, AttributeError, ImportError, KeyError, RuntimeError) as exc:
        raise ConfigError(f"{origin}: not a usable logging config: {exc}") from None
    for theirs, ours in _GUNICORN_NAMES.items():
        if theirs in logging.Logger.manager.loggerDict:
            source = logging.getLogger(theirs)
            if not source.handlers:
                continue
            target = logging.getLogger(ours)
            target.handlers = list(source.handlers)
            target.setLevel(source.level)
            target.propagate = source.propagate
            target.disabled = False


def access_enabled() -> bool:
    return not logging.getLogger(ACCESS_LOGGER).disabled


def reopen() -> None:
    """Reopen every log file (logrotate moved it away). Streams are left alone, except those
    `--capture-output` points at the error log file."""
    _capture()
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
