"""Gunicorn 27's settings and flags, and what Arbiter does with each.

The list is Gunicorn's own (its `--help` and its settings table, in its order); what Arbiter
does with each is derived from Arbiter's settings table, where every Gunicorn setting is
declared under Gunicorn's name: implemented, ignored with a reason, or refused with a reason.
A test runs Gunicorn's `--help` and fails when this list misses a flag; docs/gunicorn.md is
rendered from `rows()`, and a test keeps it current.
"""

from __future__ import annotations

from dataclasses import dataclass

from arbiter.config.names import ALIASES
from arbiter.config.settings import BY_NAME

# (flags, setting name), as Gunicorn 27 declares them; () for a setting only a config file sets.
GUNICORN: tuple[tuple[tuple[str, ...], str], ...] = (
    (("-h", "--help"), "help"),
    (("-v", "--version"), "version"),
    (('-c', '--config'), 'config'),
    (('-b', '--bind'), 'bind'),
    (('--backlog',), 'backlog'),
    (('-w', '--workers'), 'workers'),
    (('-k', '--worker-class'), 'worker_class'),
    (('--threads',), 'threads'),
    (('--worker-connections',), 'worker_connections'),
    (('--max-requests',), 'max_requests'),
    (('--max-requests-jitter',), 'max_requests_jitter'),
    (('-t', '--timeout'), 'timeout'),
    (('--graceful-timeout',), 'graceful_timeout'),
    (('--keep-alive',), 'keepalive'),
    (('--limit-request-line',), 'limit_request_line'),
    (('--limit-request-fields',), 'limit_request_fields'),
    (('--limit-request-field_size',), 'limit_request_field_size'),
    (('--reload',), 'reload'),
    (('--reload-engine',), 'reload_engine'),
    (('--reload-extra-file',), 'reload_extra_files'),
    (('--spew',), 'spew'),
    (('--check-config',), 'check_config'),
    (('--print-config',), 'print_config'),
    (('--preload',), 'preload_app'),
    (('--no-sendfile',), 'sendfile'),
    (('--reuse-port',), 'reuse_port'),
    (('--chdir',), 'chdir'),
    (('-D', '--daemon'), 'daemon'),
    (('-e', '--env'), 'raw_env'),
    (('-p', '--pid'), 'pidfile'),
    (('--worker-tmp-dir',), 'worker_tmp_dir'),
    (('-u', '--user'), 'user'),
    (('-g', '--group'), 'group'),
    (('-m', '--umask'), 'umask'),
    (('--initgroups',), 'initgroups'),
    ((), 'tmp_upload_dir'),
    ((), 'secure_scheme_headers'),
    (('--forwarded-allow-ips',), 'forwarded_allow_ips'),
    (('--access-logfile',), 'accesslog'),
    (('--disable-redirect-access-to-syslog',), 'disable_redirect_access_to_syslog'),
    (('--access-logformat',), 'access_log_format'),
    (('--error-logfile', '--log-file'), 'errorlog'),
    (('--log-level',), 'loglevel'),
    (('--capture-output',), 'capture_output'),
    (('--logger-class',), 'logger_class'),
    (('--log-config',), 'logconfig'),
    ((), 'logconfig_dict'),
    (('--log-config-json',), 'logconfig_json'),
    (('--log-syslog-to',), 'syslog_addr'),
    (('--log-syslog',), 'syslog'),
    (('--log-syslog-prefix',), 'syslog_prefix'),
    (('--log-syslog-facility',), 'syslog_facility'),
    (('-R', '--enable-stdio-inheritance'), 'enable_stdio_inheritance'),
    (('--statsd-host',), 'statsd_host'),
    (('--dogstatsd-tags',), 'dogstatsd_tags'),
    (('--statsd-prefix',), 'statsd_prefix'),
    (('--enable-backlog-metric',), 'enable_backlog_metric'),
    (('-n', '--name'), 'proc_name'),
    ((), 'default_proc_name'),
    (('--pythonpath',), 'pythonpath'),
    (('--paste', '--paster'), 'paste'),
    ((), 'on_starting'),
    ((), 'on_reload'),
    ((), 'when_ready'),
    ((), 'pre_fork'),
    ((), 'post_fork'),
    ((), 'post_worker_init'),
    ((), 'worker_int'),
    ((), 'worker_abort'),
    ((), 'pre_exec'),
    ((), 'pre_request'),
    ((), 'post_request'),
    ((), 'child_exit'),
    ((), 'worker_exit'),
    ((), 'nworkers_changed'),
    ((), 'on_exit'),
    ((), 'ssl_context'),
    (('--proxy-protocol',), 'proxy_protocol'),
    (('--proxy-allow-from',), 'proxy_allow_ips'),
    (('--protocol',), 'protocol'),
    (('--uwsgi-allow-from',), 'uwsgi_allow_ips'),
    (('--keyfile',), 'keyfile'),
    (('--certfile',), 'certfile'),
    (('--ssl-version',), 'ssl_version'),
    (('--cert-reqs',), 'cert_reqs'),
    (('--ca-certs',), 'ca_certs'),
    (('--suppress-ragged-eofs',), 'suppress_ragged_eofs'),
    (('--do-handshake-on-connect',), 'do_handshake_on_connect'),
    (('--ciphers',), 'ciphers'),
    (('--http-protocols',), 'http_protocols'),
    (('--http2-cleartext',), 'http2_cleartext'),
    (('--http2-max-concurrent-streams',), 'http2_max_concurrent_streams'),
    (('--http2-initial-window-size',), 'http2_initial_window_size'),
    (('--http2-max-frame-size',), 'http2_max_frame_size'),
    (('--http2-max-header-list-size',), 'http2_max_header_list_size'),
    (('--paste-global',), 'raw_paste_global_conf'),
    (('--permit-obsolete-folding',), 'permit_obsolete_folding'),
    (('--strip-header-spaces',), 'strip_header_spaces'),
    (('--permit-unconventional-http-method',), 'permit_unconventional_http_method'),
    (('--permit-unconventional-http-version',), 'permit_unconventional_http_version'),
    (('--casefold-http-method',), 'casefold_http_method'),
    (('--forwarder-headers',), 'forwarder_headers'),
    (('--header-map',), 'header_map'),
    (('--asgi-loop',), 'asgi_loop'),
    (('--asgi-lifespan',), 'asgi_lifespan'),
    (('--asgi-disconnect-grace-period',), 'asgi_disconnect_grace_period'),
    (('--websocket-max-message-size',), 'websocket_max_message_size'),
    (('--http-parser',), 'http_parser'),
    (('--root-path',), 'root_path'),
    (('--dirty-app',), 'dirty_apps'),
    (('--dirty-workers',), 'dirty_workers'),
    (('--dirty-timeout',), 'dirty_timeout'),
    (('--dirty-threads',), 'dirty_threads'),
    (('--dirty-graceful-timeout',), 'dirty_graceful_timeout'),
    ((), 'on_dirty_starting'),
    ((), 'dirty_post_fork'),
    ((), 'dirty_worker_init'),
    ((), 'dirty_worker_exit'),
    (('--control-socket',), 'control_socket'),
    (('--control-socket-mode',), 'control_socket_mode'),
    (('--no-control-socket',), 'control_socket_disable'),
)

# Where a setting of Gunicorn's name does more, less or otherwise than in Gunicorn, the table says
# so here; every other implemented setting has Gunicorn's meaning.
NOTES: dict[str, str] = {
    "help": "The same.",
    "version": "Arbiter's version.",
    "config": "The same, and more: also `arbiter.toml` and a supervisord.conf; with no `-c`, "
              "`./arbiter.toml` wins over `./gunicorn.conf.py` when both exist.",
    "worker_class": "Gunicorn's class names map to Arbiter's (sync, gthread, gevent and its spellings, "
                    "uvicorn.workers.UvicornWorker, uvicorn_worker.UvicornWorker), checked before any socket is "
                    "bound; eventlet and tornado are refused with a reason. The default picks uvicorn for an "
                    "ASGI app, gthread for a WSGI app with --threads above 1, else sync.",
    "check_config": "The same, and it prints every warning a start would print.",
    "print_config": "Prints the resolved settings and exits.",
    "reload": "The same; needs watchfiles (`pip install 'arbiter[reload]'`); workers roll over.",
    "umask": "The same when set; unset (the default) keeps the umask Arbiter was started with, where "
             "Gunicorn's default 0 leaves files world-writable.",
    "user": "The same; the default is the user Arbiter runs as.",
    "group": "The same; the default is the group Arbiter runs as.",
    "chdir": "The same; the default is the working directory.",
    "limit_request_field_size": "The same; `--limit-request-field-size` is Arbiter's spelling.",
    "errorlog": "The same.",
    "control_socket": "Arbiter's control socket, the same idea as Gunicorn's `gunicornc` socket: "
                      "`arbiter ctl`, the dashboard, metrics. Default: arbiter.sock beside the pidfile.",
    "control_socket_mode": "The same, for Arbiter's control socket.",
    "control_socket_disable": "The same: no control socket.",
    "reuse_port": "The same: SO_REUSEPORT on the TCP listening sockets.",
    "reload_engine": "The same choices, through watchfiles: `poll` polls, `auto` and `inotify` use inotify.",
    "reload_extra_files": "The same: any kind of file, watched through its directory.",
    "spew": "The same idea: every line a worker executes, on its stderr.",
    "initgroups": "The same; without it workers get no supplementary groups (Gunicorn leaves the root's "
                  "there, which a worker should not keep).",
    "sendfile": "The same: `wsgi.file_wrapper` is iterated instead of sent with sendfile(2).",
    "capture_output": "The same: fds 1 and 2 point at the error log file (again after USR1).",
    "logconfig": "The same; its `gunicorn.error` and `gunicorn.access` loggers configure Arbiter's.",
    "logconfig_json": "The same; Gunicorn's logger names configure Arbiter's.",
    "logconfig_dict": "The same; Gunicorn's logger names configure Arbiter's.",
    "syslog": "The same: the error log, and the access log unless "
              "`--disable-redirect-access-to-syslog`, also go to syslog.",
    "syslog_prefix": "The same, but the tag reads `arbiter.PREFIX.error` (Gunicorn: `gunicorn.PREFIX.error`).",
    "statsd_host": "The same metric names, from the same processes; sends never block (a datagram that cannot "
                   "leave at once is dropped).",
    "enable_backlog_metric": "The same: `gunicorn.backlog`, the accept queue length, from the master.",
    "paste": "The same: a PasteDeploy app (`pip install 'arbiter[paste]'`); its `[loggers]` configure logging.",
    "proxy_protocol": "The same modes, for the sync and gthread workers; a proxy in --proxy-allow-from must "
                      "send the header, another peer may not. Refused with --certfile and with the uvicorn worker.",
    "proxy_allow_ips": "The same.",
    "root_path": "SCRIPT_NAME for WSGI apps too (Gunicorn: ASGI only), root_path for the uvicorn worker.",
    "ssl_version": "The lowest TLS version a client may use (TLSv1_2, TLSv1_3); Gunicorn ignores this since "
                   "version 21. SSLv3, TLSv1 and TLSv1_1 are refused.",
    "cert_reqs": "The same; 1 or 2 need --ca-certs, checked at start.",
    "ciphers": "The same; a list OpenSSL rejects stops the start.",
    "ca_certs": "The same.",
    "suppress_ragged_eofs": "The same.",
    "certfile": "The same; a certificate that cannot be loaded stops the start.",
}


@dataclass(frozen=True)
class Row:
    """One Gunicorn setting and what Arbiter does with it."""

    flags: tuple[str, ...]
    name: str
    status: str  # "same", "ignored" (accepted, logged at start), "refused" (an error at start), "hook"
    what: str


def setting_for(name: str) -> str | None:
    """Arbiter's setting that takes Gunicorn's setting `name` (None for -h and -v)."""
    name = ALIASES.get(name, name)
    return name if name in BY_NAME else None


def rows() -> list[Row]:
    """Every Gunicorn setting, in Gunicorn's order, with Arbiter's treatment.

    Raises:
        LookupError: a Gunicorn setting has no Arbiter setting (a test catches this first).
    """
    found = []
    for flags, name in GUNICORN:
        if name in ("help", "version"):
            found.append(Row(flags, name, "same", NOTES[name]))
            continue
        ours = setting_for(name)
        if ours is None:
            raise LookupError(f"Gunicorn's setting {name!r} has no Arbiter setting")
        item = BY_NAME[ours]
        if item.refused:
            found.append(Row(flags, name, "refused", f"Refused unless left at its default: {item.refused}."))
        elif item.ignored:
            found.append(Row(flags, name, "ignored", f"Accepted; a value is logged and ignored: {item.ignored}."))
        elif item.section == "hooks":
            found.append(Row(flags, name, "same", "The same hook, called at the same moment."))
        else:
            found.append(Row(flags, name, "same", NOTES.get(name, "The same.")))
    return found


def render() -> str:
    """docs/gunicorn.md: `python3 -m arbiter.config.gunicorn > docs/gunicorn.md`."""
    lines = [
        "# Coming from Gunicorn",
        "",
        "Generated from `arbiter/config/gunicorn.py` and the settings table by",
        "`python3 -m arbiter.config.gunicorn`; do not edit by hand. A test compares this list with",
        "Gunicorn 27's own `--help`.",
        "",
        "`arbiter` takes Gunicorn's command line as it is: the same flags, the same config-file keys",
        "(`-c gunicorn.conf.py`, `-c gunicorn.conf`, `-c conf/prod`, `-c python:module`: any file",
        "without `[section]` headers whose name does not end in `.toml` is a Gunicorn Python config),",
        "`./gunicorn.conf.py` read when no `-c` is given (`./arbiter.toml` wins when both exist; the",
        "start log says which was read), `$GUNICORN_CMD_ARGS` and `$WEB_CONCURRENCY`. Precedence,",
        "lowest first: defaults, `$WEB_CONCURRENCY`, the config file, `$GUNICORN_CMD_ARGS`,",
        "`ARBITER_*` variables, the command line. As in Gunicorn, a Python config's own helper",
        "variables are ignored (named in one warning at start); a function that is no hook is an",
        "error. Gunicorn's worker class names map to Arbiter's.",
        "",
        "Every Gunicorn flag is in one of three states:",
        "",
        "- **same**: Gunicorn's meaning (the notes say where Arbiter does more);",
        "- **ignored**: accepted; a value other than the default is logged once at start, with why",
        "  it means nothing here;",
        "- **refused**: accepted at its default; any other value stops the start with a message.",
        "",
        "Settings Arbiter adds (programs, the control plane, rolling reloads) are in docs/settings.md.",
        "",
        "| Gunicorn | setting | Arbiter | what Arbiter does |",
        "|---|---|---|---|",
    ]
    for row in rows():
        flags = ", ".join(f"`{flag}`" for flag in row.flags) or "(file only)"
        what = row.what.replace("|", "\\|")
        lines.append(f"| {flags} | `{row.name}` | {row.status} | {what} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
