"""The table of settings: each declared once, feeding the CLI, the config loaders and the docs.

A `Setting` names its Gunicorn config-file key (so a `gunicorn.conf.py` keeps working), its
command-line flags, its `ARBITER_*` environment variable, its default and a converter that turns
a raw value (a string from the command line or environment, or a TOML/Python value) into the
typed value, raising `ValueError` with what was expected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

HOOKS: dict[str, str] = {
    # name: signature, as Gunicorn documents them
    "on_starting": "on_starting(server)",
    "on_reload": "on_reload(server)",
    "when_ready": "when_ready(server)",
    "pre_fork": "pre_fork(server, worker)",
    "post_fork": "post_fork(server, worker)",
    "post_worker_init": "post_worker_init(worker)",
    "worker_int": "worker_int(worker)",
    "worker_abort": "worker_abort(worker)",
    "pre_exec": "pre_exec(server)",
    "pre_request": "pre_request(worker, req)",
    "post_request": "post_request(worker, req, environ, resp)",
    "child_exit": "child_exit(server, worker)",
    "worker_exit": "worker_exit(server, worker)",
    "nworkers_changed": "nworkers_changed(server, new_value, old_value)",
    "on_exit": "on_exit(server)",
}


def to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip(), 0)
        except ValueError:
            pass
    raise ValueError("an integer")


def to_positive_int(value: Any) -> int:
    number = to_int(value)
    if number < 1:
        raise ValueError("an integer of at least 1")
    return number


def to_non_negative_int(value: Any) -> int:
    number = to_int(value)
    if number < 0:
        raise ValueError("an integer of at least 0")
    return number


def to_seconds(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("a number of seconds")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("a number of seconds") from None
    if number < 0:
        raise ValueError("a number of seconds of at least 0")
    return number


_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f", ""}


def to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("true or false")


def to_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a string")
    return value


def to_optional_str(value: Any) -> str | None:
    if value is None:
        return None
    return to_str(value)


def to_str_list(value: Any) -> tuple[str, ...]:
    """A list of strings; a single string is one item (as Gunicorn's `bind = "x"` is)."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ValueError("a string or a list of strings")


def to_comma_list(value: Any) -> tuple[str, ...]:
    """Comma-separated in a string (`"10.0.0.1,10.0.0.2"`), or a list."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return to_str_list(value)


def to_umask(value: Any) -> int:
    """An octal mode: `0o22`, `"022"` and `"0o22"` all mean the same, as in Gunicorn."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        text = value.strip().lower().removeprefix("0o")
        try:
            number = int(text, 8)
        except ValueError:
            raise ValueError("an octal mode such as 022") from None
    else:
        raise ValueError("an octal mode such as 022")
    if not 0 <= number <= 0o777:
        raise ValueError("an octal mode between 000 and 777")
    return number


def to_log_level(value: Any) -> str:
    text = to_str(value).strip().lower()
    if text == "warn":
        text = "warning"
    if text not in LOG_LEVELS:
        raise ValueError("one of " + ", ".join(LOG_LEVELS))
    return text


def to_hook(value: Any) -> Callable[..., Any] | None:
    if value is None or callable(value):
        return value
    raise ValueError("a function")


def to_env_pairs(value: Any) -> tuple[str, ...]:
    items = to_str_list(value)
    for item in items:
        if "=" not in item:
            raise ValueError(f"KEY=VALUE pairs (got {item!r})")
    return items


@dataclass(frozen=True)
class Setting:
    """One setting. `name` is also its key in config files (Gunicorn's name where it has one)."""

    name: str
    convert: Callable[[Any], Any]
    default: Any
    help: str
    flags: Sequence[str] = ()
    metavar: str = ""
    multiple: bool = False  # the flag may be repeated; values accumulate
    is_flag: bool = False  # a boolean switch on the command line
    section: str = "server"
    # An environment variable Gunicorn users expect to work, read under the config file.
    env_default: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def env(self) -> str:
        return "ARBITER_" + self.name.upper()


S = Setting
SETTINGS: tuple[Setting, ...] = (
    S("config", to_optional_str, None, "A config file: arbiter.toml, a Gunicorn-style .py file.",
      ("-c", "--config"), "FILE", section="config"),
    S("wsgi_app", to_optional_str, None,
      "The application: module:attr, module:factory() or module (finds `application`, then `app`).",
      section="server"),
    S("check_config", to_bool, False, "Check the configuration and the app import, then exit.",
      ("--check-config",), is_flag=True, section="config"),
    S("print_config", to_bool, False, "Print the resolved configuration, then exit.",
      ("--print-config",), is_flag=True, section="config"),
    S("bind", to_str_list, ("127.0.0.1:8000",),
      "Where to listen: HOST:PORT, [::]:PORT, unix:PATH or fd://N. Repeat for several. Port 0 "
      "lets the kernel choose (the real address is logged).", ("-b", "--bind"), "ADDRESS",
      multiple=True, section="socket"),
    S("backlog", to_positive_int, 2048, "The most pending connections per listening socket.",
      ("--backlog",), "INT", section="socket"),
    S("workers", to_positive_int, 1, "The number of web workers (default: $WEB_CONCURRENCY or 1).",
      ("-w", "--workers"), "INT", section="worker", env_default="WEB_CONCURRENCY"),
    S("worker_class", to_str, "auto",
      "Worker class: sync, gthread, gevent (pip install 'arbiter[gevent]'), uvicorn, or module:Class; "
      "Gunicorn's names work too. `auto` picks uvicorn for an ASGI app and sync (gthread with "
      "--threads above 1) for a WSGI app.", ("-k", "--worker-class"), "CLASS", section="worker"),
    S("threads", to_positive_int, 1, "Threads per gthread worker (more than 1 with sync means gthread).",
      ("--threads",), "INT", section="worker"),
    S("worker_connections", to_positive_int, 1000, "The most open connections per worker (sync, gthread, gevent).",
      ("--worker-connections",), "INT", section="worker"),
    S("reload_batch", to_positive_int, 8,
      "During a rolling reload, how many new workers may boot at once beside the old ones.",
      ("--reload-batch",), "INT", section="worker"),
    S("max_requests", to_non_negative_int, 0, "Restart a worker after this many requests (0: never).",
      ("--max-requests",), "INT", section="worker"),
    S("max_requests_jitter", to_non_negative_int, 0,
      "Add up to this many (random) to max_requests, so workers do not all restart at once.",
      ("--max-requests-jitter",), "INT", section="worker"),
    S("timeout", to_seconds, 30.0, "A worker silent for this many seconds is killed and replaced (0: off).",
      ("-t", "--timeout"), "SECONDS", section="worker"),
    S("graceful_timeout", to_seconds, 30.0, "How long a stopping worker may finish in-flight requests.",
      ("--graceful-timeout",), "SECONDS", section="worker"),
    S("keepalive", to_seconds, 2.0, "Seconds an idle keep-alive connection is kept open.",
      ("--keep-alive",), "SECONDS", section="worker"),
    S("limit_request_line", to_non_negative_int, 4094,
      "The most bytes in the request line (0: unlimited).", ("--limit-request-line",), "INT",
      section="security"),
    S("limit_request_fields", to_non_negative_int, 100,
      "The most header fields in a request (0: unlimited).", ("--limit-request-fields",), "INT",
      section="security"),
    S("limit_request_field_size", to_non_negative_int, 8190,
      "The most bytes in one header field (0: unlimited).", ("--limit-request-field-size",), "INT",
      section="security"),
    S("forwarded_allow_ips", to_comma_list, ("127.0.0.1", "::1"),
      "Peers trusted to set X-Forwarded-* headers, comma separated; `*` trusts all.",
      ("--forwarded-allow-ips",), "IPS", section="security"),
    S("preload_app", to_bool, False, "Import the app in the master before forking workers.",
      ("--preload",), is_flag=True, section="server"),
    S("reload", to_bool, False, "Development: reload workers when the app's files change.",
      ("--reload",), is_flag=True, section="debugging"),
    S("chdir", to_optional_str, None, "Change to this directory before loading the app.",
      ("--chdir",), "DIR", section="server"),
    S("pythonpath", to_comma_list, (), "Directories added to sys.path, comma separated.",
      ("--pythonpath",), "PATHS", section="server"),
    S("raw_env", to_env_pairs, (), "Set an environment variable in the workers (KEY=VALUE); repeatable.",
      ("-e", "--env"), "KEY=VALUE", multiple=True, section="server"),
    S("proc_name", to_optional_str, None, "The name used in process titles (default: the app).",
      ("-n", "--name"), "NAME", section="logging"),
    S("pidfile", to_optional_str, None, "Write the master's pid to this file.",
      ("-p", "--pid"), "FILE", section="server"),
    S("user", to_optional_str, None, "Run workers as this user (name or uid).",
      ("-u", "--user"), "USER", section="server"),
    S("group", to_optional_str, None, "Run workers as this group (name or gid).",
      ("-g", "--group"), "GROUP", section="server"),
    S("umask", to_umask, 0, "The umask of the master and workers (octal).",
      ("-m", "--umask"), "INT", section="server"),
    S("daemon", to_bool, False, "Detach from the terminal.", ("-D", "--daemon"), is_flag=True,
      section="server"),
    S("accesslog", to_optional_str, None, "Access log file; `-` is stdout. Off by default.",
      ("--access-logfile",), "FILE", section="logging"),
    S("access_log_format", to_str,
      '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"',
      "Access log line format, with Gunicorn's atoms.", ("--access-logformat",), "FORMAT",
      section="logging"),
    S("errorlog", to_str, "-", "Error log file; `-` is stderr.", ("--error-logfile", "--log-file"),
      "FILE", section="logging"),
    S("loglevel", to_log_level, "info", "Error log level: " + ", ".join(LOG_LEVELS) + ".",
      ("--log-level",), "LEVEL", section="logging"),
    S("childlogdir", to_optional_str, None,
      "Directory for program logs set to AUTO (default: the system's temporary directory).",
      section="programs"),
    S("minfds", to_non_negative_int, 1024,
      "Raise the open-files limit to at least this many before starting anything, as Supervisor does.",
      section="programs"),
    S("minprocs", to_non_negative_int, 200,
      "Raise the process-count limit to at least this many, as Supervisor does.", section="programs"),
    S("control_socket", to_optional_str, None,
      "The control API's unix socket (`arbiter ctl`, dashboard, metrics). Default: arbiter.sock "
      "beside the pidfile, else in the working directory; `none` turns it off.",
      ("--control-socket",), "PATH", section="control"),
    S("control_socket_mode", to_umask, 0o600, "File mode of the control socket (octal).",
      ("--control-socket-mode",), "MODE", section="control"),
    S("control_bind", to_optional_str, None,
      "Also serve the control API on TCP HOST:PORT (off by default; needs a token unless loopback).",
      ("--control-bind",), "HOST:PORT", section="control"),
    S("control_token_file", to_optional_str, None,
      "File holding the bearer token for the TCP control API (or set $ARBITER_TOKEN).",
      ("--control-token-file",), "FILE", section="control"),
    S("certfile", to_optional_str, None, "TLS certificate file (turns TLS on, with keyfile).",
      ("--certfile",), "FILE", section="ssl"),
    S("keyfile", to_optional_str, None, "TLS private key file.", ("--keyfile",), "FILE", section="ssl"),
) + tuple(
    S(name, to_hook, None, f"Server hook `{signature}`, set in a Python config file.", section="hooks")
    for name, signature in HOOKS.items()
)

BY_NAME: dict[str, Setting] = {setting.name: setting for setting in SETTINGS}

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
