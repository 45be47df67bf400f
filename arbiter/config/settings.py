"""The settings, each declared once: a field of the frozen `Config`, whose metadata feeds the CLI,
the config loaders, the environment variables and the docs.

A field's name is its config-file key (Gunicorn's name where it has one); its metadata (a
`Setting`) holds the converter that turns a raw value into the typed value, the command-line
flags, the help text, the docs section and, where Gunicorn users expect one, an environment
variable read under the config file. `SETTINGS` is the table derived from the fields, in order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from arbiter.config.convert import (
    to_bool,
    to_comma_list,
    to_env_pairs,
    to_hook,
    to_log_level,
    to_non_negative_int,
    to_optional_str,
    to_positive_int,
    to_refork_thresholds,
    to_seconds,
    to_str,
    to_str_list,
    to_umask,
)

Hook = Callable[..., Any]

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
    "on_refork": "on_refork(worker)",
}


@dataclass(frozen=True)
class Setting:
    """One setting's declaration: what the CLI, the loaders and the docs need to know of it."""

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

    @property
    def env(self) -> str:
        return "ARBITER_" + self.name.upper()


def setting(
    convert: Callable[[Any], Any],
    default: Any,
    help: str,
    flags: Sequence[str] = (),
    *,
    metavar: str = "",
    multiple: bool = False,
    is_flag: bool = False,
    section: str = "server",
    env_default: str | None = None,
) -> Any:
    """A `Config` field carrying its `Setting` (its name is filled in from the field's)."""
    meta = Setting("", convert, default, help, tuple(flags), metavar, multiple, is_flag, section, env_default)
    return field(default=default, metadata={"setting": meta})


def hook(signature: str) -> Any:
    """A `Config` field for a server hook, set only in a Python config file (as in Gunicorn)."""
    return setting(to_hook, None, f"Server hook `{signature}`, set in a Python config file.", section="hooks")


@dataclass(frozen=True)
class Extras:
    """What a config file holds beyond the flat settings: programs, groups, and warnings about
    what it asked for that Arbiter does not do (yet)."""

    programs: tuple[Any, ...] = ()  # ProgramConfig records (the programs layer sits above this one)
    groups: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    # A supervisord.conf's [inet_http_server] (username, password): the TCP control API's Basic
    # auth credential. None when the file has no such section. A secret: never printed.
    http_auth: tuple[str | None, str | None] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Config:
    """The resolved settings (`cfg.workers`), frozen; built by `arbiter.config.loader.build`."""

    config: str | None = setting(
        to_optional_str, None, "A config file: arbiter.toml, a Gunicorn-style .py file.", ("-c", "--config"),
        metavar="FILE", section="config")
    wsgi_app: str | None = setting(
        to_optional_str, None,
        "The application: module:attr, module:factory() or module (finds `application`, then `app`).",
        section="server")
    check_config: bool = setting(
        to_bool, False, "Check the configuration and the app import, then exit.", ("--check-config",),
        is_flag=True, section="config")
    print_config: bool = setting(
        to_bool, False, "Print the resolved configuration, then exit.", ("--print-config",), is_flag=True,
        section="config")
    bind: tuple[str, ...] = setting(
        to_str_list, ("127.0.0.1:8000",),
        "Where to listen: HOST:PORT, [::]:PORT, unix:PATH or fd://N. Repeat for several. Port 0 lets the "
        "kernel choose (the real address is logged).", ("-b", "--bind"), metavar="ADDRESS", multiple=True,
        section="socket")
    backlog: int = setting(
        to_positive_int, 2048, "The most pending connections per listening socket.", ("--backlog",),
        metavar="INT", section="socket")
    workers: int = setting(
        to_positive_int, 1, "The number of web workers (default: $WEB_CONCURRENCY or 1).",
        ("-w", "--workers"), metavar="INT", section="worker", env_default="WEB_CONCURRENCY")
    worker_class: str = setting(
        to_str, "auto",
        "Worker class: sync, gthread, gevent (pip install 'arbiter[gevent]'), uvicorn, or module:Class; "
        "Gunicorn's names work too. `auto` picks uvicorn for an ASGI app and sync (gthread with "
        "--threads above 1) for a WSGI app.", ("-k", "--worker-class"), metavar="CLASS", section="worker")
    threads: int = setting(
        to_positive_int, 1, "Threads per gthread worker (more than 1 with sync means gthread).",
        ("--threads",), metavar="INT", section="worker")
    worker_connections: int = setting(
        to_positive_int, 1000, "The most open connections per worker (sync, gthread, gevent).",
        ("--worker-connections",), metavar="INT", section="worker")
    reload_batch: int = setting(
        to_positive_int, 8,
        "During a rolling reload, how many new workers may boot at once beside the old ones.",
        ("--reload-batch",), metavar="INT", section="worker")
    max_requests: int = setting(
        to_non_negative_int, 0, "Restart a worker after this many requests (0: never).", ("--max-requests",),
        metavar="INT", section="worker")
    max_requests_jitter: int = setting(
        to_non_negative_int, 0,
        "Add up to this many (random) to max_requests, so workers do not all restart at once.",
        ("--max-requests-jitter",), metavar="INT", section="worker")
    refork_after: tuple[int, ...] = setting(
        to_refork_thresholds, (),
        "Reforking: once a worker has served this many requests it becomes the mold that new workers "
        "fork from, so what the app built lazily is shared. A list (50,100,1000) promotes again at each "
        "count, then never. Off by default; see docs/reforking.md.",
        ("--refork-after",), metavar="N[,N...]", section="worker")
    timeout: float = setting(
        to_seconds, 30.0, "A worker silent for this many seconds is killed and replaced (0: off).",
        ("-t", "--timeout"), metavar="SECONDS", section="worker")
    graceful_timeout: float = setting(
        to_seconds, 30.0, "How long a stopping worker may finish in-flight requests.",
        ("--graceful-timeout",), metavar="SECONDS", section="worker")
    keepalive: float = setting(
        to_seconds, 2.0, "Seconds an idle keep-alive connection is kept open.", ("--keep-alive",),
        metavar="SECONDS", section="worker")
    limit_request_line: int = setting(
        to_non_negative_int, 4094,
        "The most bytes in the request line, without its CRLF (0: no limit of its own; above 8190: 8190, as "
        "Gunicorn).", ("--limit-request-line",), metavar="INT", section="security")
    limit_request_fields: int = setting(
        to_non_negative_int, 100, "The most header fields in a request (0 or above 32768: 32768, as Gunicorn).",
        ("--limit-request-fields",), metavar="INT", section="security")
    limit_request_field_size: int = setting(
        to_non_negative_int, 8190,
        "The most bytes in one header field line, CRLF included (0: no check per field, but the head is still "
        "bounded as if each field were at most 8190 bytes, as Gunicorn).", ("--limit-request-field-size",),
        metavar="INT", section="security")
    forwarded_allow_ips: tuple[str, ...] = setting(
        to_comma_list, ("127.0.0.1", "::1"),
        "Peers trusted to set X-Forwarded-* headers, comma separated; `*` trusts all.",
        ("--forwarded-allow-ips",), metavar="IPS", section="security")
    preload_app: bool = setting(
        to_bool, False, "Import the app in the master before forking workers.", ("--preload",), is_flag=True,
        section="server")
    reload: bool = setting(
        to_bool, False, "Development: reload workers when the app's files change.", ("--reload",),
        is_flag=True, section="debugging")
    chdir: str | None = setting(
        to_optional_str, None, "Change to this directory before loading the app.", ("--chdir",),
        metavar="DIR", section="server")
    pythonpath: tuple[str, ...] = setting(
        to_comma_list, (), "Directories added to sys.path, comma separated.", ("--pythonpath",),
        metavar="PATHS", section="server")
    raw_env: tuple[str, ...] = setting(
        to_env_pairs, (), "Set an environment variable in the workers (KEY=VALUE); repeatable.",
        ("-e", "--env"), metavar="KEY=VALUE", multiple=True, section="server")
    proc_name: str | None = setting(
        to_optional_str, None, "The name used in process titles (default: the app).", ("-n", "--name"),
        metavar="NAME", section="logging")
    pidfile: str | None = setting(
        to_optional_str, None, "Write the master's pid to this file.", ("-p", "--pid"), metavar="FILE",
        section="server")
    user: str | None = setting(
        to_optional_str, None, "Run workers as this user (name or uid).", ("-u", "--user"), metavar="USER",
        section="server")
    group: str | None = setting(
        to_optional_str, None, "Run workers as this group (name or gid).", ("-g", "--group"), metavar="GROUP",
        section="server")
    umask: int | None = setting(
        to_umask, None,
        "The umask of the master and workers (octal), also applied while binding unix sockets. Unset: "
        "the umask Arbiter was started with, and unix sockets are never world-writable.",
        ("-m", "--umask"), metavar="INT", section="server")
    daemon: bool = setting(
        to_bool, False, "Detach from the terminal.", ("-D", "--daemon"), is_flag=True, section="server")
    accesslog: str | None = setting(
        to_optional_str, None, "Access log file; `-` is stdout. Off by default.", ("--access-logfile",),
        metavar="FILE", section="logging")
    access_log_format: str = setting(
        to_str, '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"',
        "Access log line format, with Gunicorn's atoms.", ("--access-logformat",), metavar="FORMAT",
        section="logging")
    errorlog: str = setting(
        to_str, "-", "Error log file; `-` is stderr.", ("--error-logfile", "--log-file"), metavar="FILE",
        section="logging")
    loglevel: str = setting(
        to_log_level, "info", "Error log level: debug, info, warning, error, critical.", ("--log-level",),
        metavar="LEVEL", section="logging")
    errorlog_to_stdout: bool = setting(
        to_bool, False,
        "Also write the error log to stdout when it goes to a file. A supervisord.conf with nodaemon=true "
        "sets it (unless silent=true), as supervisord logs to its terminal then.", section="logging")
    childlogdir: str | None = setting(
        to_optional_str, None,
        "Directory for program logs set to AUTO (default: the system's temporary directory).",
        section="programs")
    minfds: int = setting(
        to_non_negative_int, 1024,
        "Raise the open-files limit to at least this many before starting anything, as Supervisor does.",
        section="programs")
    minprocs: int = setting(
        to_non_negative_int, 200, "Raise the process-count limit to at least this many, as Supervisor does.",
        section="programs")
    control_socket: str | None = setting(
        to_optional_str, None,
        "The control API's unix socket (`arbiter ctl`, dashboard, metrics). Default: arbiter.sock beside the"
        " pidfile, else in the working directory; `none` turns it off.", ("--control-socket",),
        metavar="PATH", section="control")
    control_socket_mode: int = setting(
        to_umask, 384, "File mode of the control socket (octal).", ("--control-socket-mode",), metavar="MODE",
        section="control")
    control_bind: str | None = setting(
        to_optional_str, None,
        "Also serve the control API on TCP HOST:PORT (off by default; needs a credential, loopback too:"
        " control_token_file).",
        ("--control-bind",), metavar="HOST:PORT", section="control")
    control_token_file: str | None = setting(
        to_optional_str, None,
        "File holding the bearer token for the TCP control API (or set $ARBITER_TOKEN).",
        ("--control-token-file",), metavar="FILE", section="control")
    metrics_token_file: str | None = setting(
        to_optional_str, None,
        "File holding a read-only bearer token that opens GET /metrics on the TCP control API and "
        "nothing else (one Prometheus credential for a fleet).",
        ("--metrics-token-file",), metavar="FILE", section="control")
    certfile: str | None = setting(
        to_optional_str, None, "TLS certificate file (turns TLS on, with keyfile).", ("--certfile",),
        metavar="FILE", section="ssl")
    keyfile: str | None = setting(
        to_optional_str, None, "TLS private key file.", ("--keyfile",), metavar="FILE", section="ssl")
    on_starting: Hook | None = hook("on_starting(server)")
    on_reload: Hook | None = hook("on_reload(server)")
    when_ready: Hook | None = hook("when_ready(server)")
    pre_fork: Hook | None = hook("pre_fork(server, worker)")
    post_fork: Hook | None = hook("post_fork(server, worker)")
    post_worker_init: Hook | None = hook("post_worker_init(worker)")
    worker_int: Hook | None = hook("worker_int(worker)")
    worker_abort: Hook | None = hook("worker_abort(worker)")
    pre_exec: Hook | None = hook("pre_exec(server)")
    pre_request: Hook | None = hook("pre_request(worker, req)")
    post_request: Hook | None = hook("post_request(worker, req, environ, resp)")
    child_exit: Hook | None = hook("child_exit(server, worker)")
    worker_exit: Hook | None = hook("worker_exit(server, worker)")
    nworkers_changed: Hook | None = hook("nworkers_changed(server, new_value, old_value)")
    on_exit: Hook | None = hook("on_exit(server)")
    on_refork: Hook | None = hook("on_refork(worker)")
    extras: Extras = field(default_factory=Extras)

    @property
    def programs(self) -> tuple[Any, ...]:
        return self.extras.programs

    @property
    def groups(self) -> Mapping[str, tuple[str, ...]]:
        return self.extras.groups

    @property
    def is_ssl(self) -> bool:
        return bool(self.certfile)

    @property
    def title_name(self) -> str:
        """What process titles call this service: `--name`, else the app."""
        return self.proc_name or self.wsgi_app or "arbiter"

    def hook(self, name: str) -> Hook | None:
        """The user's hook function, or None."""
        value: Hook | None = getattr(self, name) if name in HOOKS else None
        return value

    def as_text(self) -> str:
        """`--print-config` output: one `name = value` a line, in table order."""
        lines = []
        for item in SETTINGS:
            value = getattr(self, item.name)
            if callable(value):
                value = f"<{getattr(value, '__qualname__', 'function')}>"
            lines.append(f"{item.name:<26} = {value!r}")
        return "\n".join(lines)


SETTINGS: tuple[Setting, ...] = tuple(
    dataclasses.replace(f.metadata["setting"], name=f.name)
    for f in dataclasses.fields(Config)
    if "setting" in f.metadata
)

BY_NAME: dict[str, Setting] = {item.name: item for item in SETTINGS}

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
