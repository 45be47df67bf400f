"""The spellings of setting names that config files use: Gunicorn's aliases and dashes."""

from __future__ import annotations

from arbiter.config.settings import BY_NAME, Setting

# Names Gunicorn users also write in config files, mapped to ours.
ALIASES: dict[str, str] = {
    "preload": "preload_app",
    "app": "wsgi_app",
    "application": "wsgi_app",
    "keep_alive": "keepalive",
    "log_level": "loglevel",
    "access_logfile": "accesslog",
    "error_logfile": "errorlog",
    "pid": "pidfile",
    "env": "raw_env",
    "name": "proc_name",
}


def lookup(key: str) -> Setting | None:
    """The setting a config-file key names, through Gunicorn's spellings and dashes."""
    normal = key.replace("-", "_").lower()
    return BY_NAME.get(ALIASES.get(normal, normal))
