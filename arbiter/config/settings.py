"""The settings, each declared once: a field of the frozen `Config`, whose metadata feeds the CLI,
the config loaders, the environment variables and the docs.

A field's name is its config-file key (Gunicorn's name where it has one); its metadata (a
`Setting`) holds the converter that turns a raw value into the typed value, the command-line
flags, the help text, the docs section and, where Gunicorn users expect one, an environment
variable read under the config file. `SETTINGS` is the table derived from the fields, in order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from arbiter.config.convert import (
    choice,
    to_bool,
    to_cert_reqs,
    to_comma_list,
    to_dict,
    to_env_pairs,
    to_hook,
    to_int,
    to_log_level,
    to_memory_measure,
    to_non_negative_int,
    to_optional_bool,
    to_optional_str,
    to_positive_int,
    to_positive_seconds,
    to_proxy_protocol,
    to_refork_thresholds,
    to_scheme_headers,
    to_seconds,
    to_size,
    to_ssl_version,
    to_statsd_host,
    to_str,
    to_str_list,
    to_syslog_addr,
    to_syslog_facility,
    to_umask,
)
from arbiter.config.setting import Extras, Setting, hook, ignored, refused, setting

__all__ = ["BY_NAME", "HOOKS", "SETTINGS", "Config", "Extras", "Setting"]

Hook = Callable[..., Any]

@dataclass(frozen=True)
class Config:
    """The resolved settings (`cfg.workers`), frozen; built by `arbiter.config.loader.build`."""

    config: str | None = setting(
        to_optional_str, None,
        "A config file: a .toml file, a supervisord.conf (a file with [sections]), or a Gunicorn Python "
        "config (any other name, or python:MODULE). Default: ./arbiter.toml, else ./gunicorn.conf.py.",
        ("-c", "--config"),
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
    request_timeout: float = setting(
        to_seconds, 0.0,
        "A request running longer than this many seconds is stopped by its worker: its stack is logged and "
        "the client gets a 504 if nothing was sent yet (0: off). See docs/guards.md.",
        ("--request-timeout",), metavar="SECONDS", section="worker")
    graceful_timeout: float = setting(
        to_seconds, 30.0, "How long a stopping worker may finish in-flight requests.",
        ("--graceful-timeout",), metavar="SECONDS", section="worker")
    keepalive: float = setting(
        to_seconds, 2.0, "Seconds an idle keep-alive connection is kept open.", ("--keep-alive",),
        metavar="SECONDS", section="worker")
    # Guards (docs/guards.md): memory limits and autoscaling, decided in the master.
    max_worker_memory: int = setting(
        to_size, 0,
        "Replace a worker whose memory stays over this size for 3 samples in a row, its replacement ready "
        "first (0: off). A bare number is MiB; 512MB, 1GB use 1024-based units.", ("--max-worker-memory",),
        metavar="SIZE", section="guards")
    worker_memory_interval: float = setting(
        to_positive_seconds, 1.0,
        "Seconds between two samples of each worker's memory (and each program's with a memory_limit).",
        ("--worker-memory-interval",), metavar="SECONDS", section="guards")
    worker_memory_measure: str = setting(
        to_memory_measure, "uss",
        "What max_worker_memory measures: uss (the worker's own pages), pss (shared pages divided among "
        "their sharers) or rss (every resident page, those shared with the master too).",
        ("--worker-memory-measure",), metavar="uss|pss|rss", section="guards")
    max_workers: int = setting(
        to_non_negative_int, 0,
        "Autoscale between workers (the floor) and this many: one more a second while the pool is busy, one "
        "fewer a second once it has been idle for scale_down_idle (0: off).", ("--max-workers",),
        metavar="INT", section="guards")
    scale_down_idle: float = setting(
        to_seconds, 30.0, "Seconds the pool's busy ratio must stay below 0.5 before autoscaling removes a worker.",
        ("--scale-down-idle",), metavar="SECONDS", section="guards")
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
        "bounded as if each field were at most 8190 bytes, as Gunicorn).", ("--limit-request-field-size",
        "--limit-request-field_size"),
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
        to_umask, 0o600, "File mode of the control socket (octal).", ("--control-socket-mode",), metavar="MODE",
        section="control")
    control_socket_owner: str | None = setting(
        to_optional_str, None,
        "Owner of the control socket, USER or USER:GROUP (Supervisor's [unix_http_server] chown), so a"
        " program running as that user (an event listener calling back over XML-RPC) may use it.",
        ("--control-socket-owner",), metavar="USER[:GROUP]", section="control")
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
    # -- Gunicorn's settings beyond the core ones (issue 10; what each does: docs/gunicorn.md) ------
    reuse_port: bool = setting(
        to_bool, False, "Set SO_REUSEPORT on the listening sockets: several servers may bind one port.",
        ("--reuse-port",), is_flag=True, section="socket")
    proxy_protocol: str = setting(
        to_proxy_protocol, "off", "Read HAProxy's PROXY header (v1, v2, or auto for either) from peers in "
        "--proxy-allow-from, for their client's address; bare --proxy-protocol means auto.", ("--proxy-protocol",),
        metavar="MODE", section="security", flag_value="auto")
    proxy_allow_ips: tuple[str, ...] = setting(
        to_comma_list, ("127.0.0.1", "::1"), "Peers that must send a PROXY header (others may not), comma "
        "separated; `*` for all.", ("--proxy-allow-from",), metavar="IPS", section="security")
    paste: str | None = setting(
        to_optional_str, None, "Serve the WSGI app of a PasteDeploy config file (FILE or FILE#NAME) instead of APP; "
        "its [loggers] configure logging unless --log-config is given.", ("--paste", "--paster"),
        metavar="FILE", section="server")
    raw_paste_global_conf: tuple[str, ...] = setting(
        to_env_pairs, (), "A PasteDeploy global config variable (KEY=VALUE); repeatable.", ("--paste-global",),
        metavar="KEY=VALUE", multiple=True, section="server")
    root_path: str = setting(
        to_str, "", "The path the app is mounted at behind a proxy: SCRIPT_NAME for WSGI, root_path for ASGI.",
        ("--root-path",), metavar="PATH", section="server")
    sendfile: bool | None = setting(
        to_optional_bool, None, "Never send files with sendfile(2) (wsgi.file_wrapper is iterated instead).",
        ("--no-sendfile",), is_flag=True, flag_value=False, section="server")
    initgroups: bool = setting(
        to_bool, False, "With --user, give workers the user's supplementary groups (else they have none).",
        ("--initgroups",), is_flag=True, section="server")
    capture_output: bool = setting(
        to_bool, False, "Send the app's stdout and stderr to the error log file too.", ("--capture-output",),
        is_flag=True, section="logging")
    logconfig: str | None = setting(
        to_optional_str, None, "A logging config file (Python's fileConfig INI format), applied after the "
        "settings above; its gunicorn.error/gunicorn.access loggers configure Arbiter's.", ("--log-config",),
        metavar="FILE", section="logging")
    logconfig_json: str | None = setting(
        to_optional_str, None, "A logging config as JSON (Python's dictConfig schema).", ("--log-config-json",),
        metavar="FILE", section="logging")
    logconfig_dict: dict[str, Any] = setting(
        to_dict, {}, "A logging config as a dict (dictConfig schema), set in a config file; wins over "
        "--log-config-json and --log-config.", section="logging")
    syslog: bool = setting(
        to_bool, False, "Also send the error log (and the access log) to syslog.", ("--log-syslog",),
        is_flag=True, section="logging")
    syslog_addr: str = setting(
        to_syslog_addr, "udp://localhost:514", "Where syslog listens: unix://PATH[#dgram|#stream], "
        "udp://HOST:PORT or tcp://HOST:PORT.", ("--log-syslog-to",), metavar="SYSLOG_ADDR", section="logging")
    syslog_prefix: str | None = setting(
        to_optional_str, None, "The program name in syslog lines (arbiter.PREFIX.error); default: --name, "
        "else the app.", ("--log-syslog-prefix",), metavar="SYSLOG_PREFIX", section="logging")
    syslog_facility: str = setting(
        to_syslog_facility, "user", "The syslog facility.", ("--log-syslog-facility",), metavar="FACILITY",
        section="logging")
    disable_redirect_access_to_syslog: bool = setting(
        to_bool, False, "With --log-syslog, keep the access log out of syslog.",
        ("--disable-redirect-access-to-syslog",), is_flag=True, section="logging")
    enable_stdio_inheritance: bool = setting(
        to_bool, False, "With --daemon, keep stdout and stderr where they were redirected (not a terminal).",
        ("-R", "--enable-stdio-inheritance"), is_flag=True, section="logging")
    ssl_version: str = setting(
        to_ssl_version, "tls", "The lowest TLS version a client may use: TLS (any the library allows), "
        "TLSv1_2 or TLSv1_3.", ("--ssl-version",), metavar="VERSION", section="ssl")
    ciphers: str | None = setting(
        to_optional_str, None, "Allowed ciphers, as an OpenSSL cipher list (default: Python's).", ("--ciphers",),
        metavar="CIPHERS", section="ssl")
    cert_reqs: int = setting(
        to_cert_reqs, 0, "Client certificates: 0 none, 1 optional, 2 required (checked against --ca-certs).",
        ("--cert-reqs",), metavar="INT", section="ssl")
    ca_certs: str | None = setting(
        to_optional_str, None, "CA certificates that sign client certificates (PEM).", ("--ca-certs",),
        metavar="FILE", section="ssl")
    suppress_ragged_eofs: bool = setting(
        to_bool, True, "Take a TLS connection closed without close_notify as a clean end.",
        ("--suppress-ragged-eofs",), is_flag=True, section="ssl")
    reload_engine: str = setting(
        choice("auto", "poll", "inotify"), "auto", "How --reload notices changes: auto (inotify on Linux), "
        "inotify, or poll (for file systems without change events).", ("--reload-engine",), metavar="ENGINE",
        section="debugging")
    reload_extra_files: tuple[str, ...] = setting(
        to_str_list, (), "With --reload, also reload when this file changes (templates, configs); repeatable.",
        ("--reload-extra-file",), metavar="FILE", multiple=True, section="debugging")
    spew: bool = setting(
        to_bool, False, "Print every line the workers execute (a trace; very slow).", ("--spew",), is_flag=True,
        section="debugging")
    statsd_host: str | None = setting(
        to_statsd_host, None, "Send Gunicorn's StatsD metrics to HOST:PORT or unix://PATH (UDP, never blocking).",
        ("--statsd-host",), metavar="STATSD_ADDR", section="metrics")
    statsd_prefix: str = setting(
        to_str, "", "Prefix for the StatsD metric names (a dot is added).", ("--statsd-prefix",),
        metavar="PREFIX", section="metrics")
    dogstatsd_tags: str = setting(
        to_str, "", "DogStatsD tags added to every metric, comma separated (tag:value,...).", ("--dogstatsd-tags",),
        metavar="TAGS", section="metrics")
    enable_backlog_metric: bool = setting(
        to_bool, False, "Also send the listening sockets' accept queue length as the gunicorn.backlog gauge.",
        ("--enable-backlog-metric",), is_flag=True, section="metrics")

    # -- Gunicorn's flags that mean nothing here: accepted, a value other than the default logged
    # -- once at start with the reason (`ignored`) or refused at start (`refused`) ---------------
    control_socket_disable: bool = setting(
        to_bool, False, "Turn the control socket off (as `--control-socket none`).", ("--no-control-socket",),
        is_flag=True, section="control")
    do_handshake_on_connect: bool = ignored(
        to_bool, False, ("--do-handshake-on-connect",),
        "the TLS handshake always starts at accept and never blocks a worker", is_flag=True)
    worker_tmp_dir: str | None = ignored(
        to_optional_str, None, ("--worker-tmp-dir",),
        "no heartbeat files here: workers report to the master through a shared-memory scoreboard",
        metavar="DIR")
    tmp_upload_dir: str | None = ignored(
        to_optional_str, None, (), "request bodies are never spooled to disk; wsgi.input reads the socket")
    default_proc_name: str | None = ignored(
        to_optional_str, "gunicorn", (), "process titles use --name, else the app")
    uwsgi_allow_ips: tuple[str, ...] = ignored(
        to_comma_list, ("127.0.0.1", "::1"), ("--uwsgi-allow-from",), "the uwsgi protocol is not served",
        metavar="IPS")
    asgi_loop: str = ignored(
        choice("auto", "asyncio", "uvloop"), "auto", ("--asgi-loop",),
        "the uvicorn worker runs on uvloop when it is installed, else asyncio", metavar="LOOP")
    asgi_lifespan: str = ignored(
        choice("auto", "on", "off"), "auto", ("--asgi-lifespan",),
        "the uvicorn worker runs the lifespan protocol in uvicorn's auto mode", metavar="MODE")
    asgi_disconnect_grace_period: int = ignored(
        to_non_negative_int, 3, ("--asgi-disconnect-grace-period",),
        "disconnects reach the app through uvicorn; draining is bounded by --graceful-timeout", metavar="INT")
    websocket_max_message_size: int = ignored(
        to_positive_int, 16777216, ("--websocket-max-message-size",),
        "WebSockets are served by uvicorn with its own 16 MiB limit", metavar="INT")
    http_parser: str = ignored(
        choice("auto", "fast", "python"), "auto", ("--http-parser",),
        "HTTP/1.1 is always parsed by httptools (llhttp)", metavar="PARSER")
    logger_class: str = refused(
        to_str, "gunicorn.glogging.Logger", ("--logger-class",),
        "Gunicorn's Logger class API is not offered; use --log-config or logconfig_dict", metavar="CLASS")
    protocol: str = refused(to_str, "http", ("--protocol",), "only HTTP is served (no uwsgi protocol)",
                            metavar="PROTOCOL")
    http_protocols: str = refused(to_str, "h1", ("--http-protocols",), "HTTP/2 is not served yet",
                                  metavar="PROTOCOLS")
    http2_cleartext: str = refused(to_str, "off", ("--http2-cleartext",), "HTTP/2 is not served yet",
                                   metavar="MODE")
    http2_max_concurrent_streams: int = refused(
        to_int, 100, ("--http2-max-concurrent-streams",), "HTTP/2 is not served yet", metavar="INT")
    http2_initial_window_size: int = refused(
        to_int, 65535, ("--http2-initial-window-size",), "HTTP/2 is not served yet", metavar="INT")
    http2_max_frame_size: int = refused(
        to_int, 16384, ("--http2-max-frame-size",), "HTTP/2 is not served yet", metavar="INT")
    http2_max_header_list_size: int = refused(
        to_int, 65536, ("--http2-max-header-list-size",), "HTTP/2 is not served yet", metavar="INT")
    permit_obsolete_folding: bool = refused(
        to_bool, False, ("--permit-obsolete-folding",),
        "llhttp refuses obsolete line folding (RFC 9112 5.2), a request-smuggling risk", is_flag=True)
    strip_header_spaces: bool = refused(
        to_bool, False, ("--strip-header-spaces",),
        "a space before a header's colon is refused (RFC 9112 5.1), a request-smuggling risk", is_flag=True)
    permit_unconventional_http_method: bool = refused(
        to_bool, False, ("--permit-unconventional-http-method",),
        "llhttp knows a fixed list of methods; any other is answered 501", is_flag=True)
    permit_unconventional_http_version: bool = refused(
        to_bool, False, ("--permit-unconventional-http-version",),
        "llhttp accepts HTTP/1.0 and HTTP/1.1 only", is_flag=True)
    casefold_http_method: bool = refused(
        to_bool, False, ("--casefold-http-method",), "llhttp matches methods case-sensitively", is_flag=True)
    forwarder_headers: tuple[str, ...] = refused(
        to_comma_list, ("SCRIPT_NAME", "PATH_INFO"), ("--forwarder-headers",),
        "a trusted proxy may set SCRIPT_NAME (and the X-Forwarded-* headers) only", metavar="HEADERS")
    header_map: str = refused(
        choice("drop", "refuse", "dangerous"), "drop", ("--header-map",),
        "headers with underscores are dropped, as Gunicorn's safe default does", metavar="MODE")
    secure_scheme_headers: dict[str, str] = ignored(
        to_scheme_headers, {"X-FORWARDED-PROTOCOL": "ssl", "X-FORWARDED-PROTO": "https", "X-FORWARDED-SSL": "on"},
        (), "Gunicorn's three default scheme headers are always honoured from --forwarded-allow-ips peers")
    dirty_apps: tuple[str, ...] = refused(
        to_str_list, (), ("--dirty-app",), "the dirty worker pool is not offered yet", metavar="APP", multiple=True)
    dirty_workers: int = refused(
        to_non_negative_int, 0, ("--dirty-workers",), "the dirty worker pool is not offered yet", metavar="INT")
    dirty_timeout: int = refused(
        to_non_negative_int, 300, ("--dirty-timeout",), "the dirty worker pool is not offered yet", metavar="INT")
    dirty_threads: int = refused(
        to_positive_int, 1, ("--dirty-threads",), "the dirty worker pool is not offered yet", metavar="INT")
    dirty_graceful_timeout: int = refused(
        to_non_negative_int, 30, ("--dirty-graceful-timeout",), "the dirty worker pool is not offered yet",
        metavar="INT")
    on_dirty_starting: Hook | None = refused(to_hook, None, (), "the dirty worker pool is not offered yet")
    dirty_post_fork: Hook | None = refused(to_hook, None, (), "the dirty worker pool is not offered yet")
    dirty_worker_init: Hook | None = refused(to_hook, None, (), "the dirty worker pool is not offered yet")
    dirty_worker_exit: Hook | None = refused(to_hook, None, (), "the dirty worker pool is not offered yet")

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
    ssl_context: Hook | None = hook("ssl_context(config, default_ssl_context_factory)")
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

# The server hooks (functions, set only in a Python config file), by name.
HOOKS: frozenset[str] = frozenset(item.name for item in SETTINGS if item.section == "hooks")
