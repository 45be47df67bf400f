"""One frozen, validated `Config`, built from the settings table in layers.

Precedence, lowest first: defaults < config file < `ARBITER_*` environment < command line.
Every error names the key, where it came from (file and line, or variable, or flag) and what
was expected.
"""

from __future__ import annotations

import ast
import difflib
import os
import re
import sys
import traceback
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from arbiter.config.settings import BY_NAME, HOOKS, SETTINGS, Config, Extras, Setting, lookup
from arbiter.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class Value:
    """A raw value and where it came from, kept until conversion so errors can point at it."""

    raw: Any
    origin: str  # "arbiter.toml:12", "environment variable ARBITER_WORKERS", "--workers"


def _unknown(key: str, origin: str) -> ConfigError:
    names = [s.name for s in SETTINGS]
    close = difflib.get_close_matches(key.replace("-", "_").lower(), names, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"{origin}: unknown setting '{key}'{hint}")


def _convert(setting: Setting, value: Value) -> Any:
    try:
        return setting.convert(value.raw)
    except ValueError as exc:
        raise ConfigError(
            f"{value.origin}: '{setting.name}' must be {exc}, got {value.raw!r}"
        ) from None


def _line_of(text: str, pattern: str) -> int | None:
    match = re.search(pattern, text, re.MULTILINE)
    return text.count("\n", 0, match.start()) + 1 if match else None


def read_toml(path: str) -> tuple[dict[str, Value], Extras]:
    """Top-level keys of an `arbiter.toml`, each with its file and line, and its programs."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    text = data.decode("utf-8", "replace")
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    values: dict[str, Value] = {}
    extras = Extras()
    if "programs" in parsed or "groups" in parsed:
        from arbiter.programs.config import programs_from_mapping

        programs, groups = programs_from_mapping(parsed, path)
        extras = Extras(tuple(programs), {name: tuple(members) for name, members in groups.items()})
    for key, raw in parsed.items():
        if key in ("programs", "groups"):
            continue
        line = _line_of(text, rf"^[ \t]*[\"']?{re.escape(key)}[\"']?[ \t]*=") or _line_of(
            text, rf"^[ \t]*\[[ \t]*{re.escape(key)}\b"
        )
        origin = f"{path}:{line}" if line else path
        setting = lookup(key)
        if setting is None or setting.name in HOOKS:
            raise _unknown(key, origin)
        values[setting.name] = Value(raw, origin)
    return values, extras


# [supervisord] keys that have a setting of ours with the same meaning.
_SUPERVISORD_KEYS = {"logfile": "errorlog", "loglevel": "loglevel", "pidfile": "pidfile", "umask": "umask",
                     "childlogdir": "childlogdir", "identifier": "proc_name", "minfds": "minfds",
                     "minprocs": "minprocs"}
_SUPERVISORD_IGNORED = ("logfile_maxbytes", "logfile_backups", "user", "directory", "nocleanup", "strip_ansi")


def read_ini(path: str) -> tuple[dict[str, Value], Extras]:
    """A supervisord.conf: its programs and groups, and its [supervisord] options as settings."""
    from arbiter.programs.config import load_supervisor_ini

    result = load_supervisor_ini(path)
    options = result.options
    values: dict[str, Value] = {}
    for key, name in _SUPERVISORD_KEYS.items():
        raw = getattr(options, key)
        if raw is not None:
            values[name] = Value(raw, f"{path}: [supervisord] {key}")
    if options.umask is None:
        # Supervisor's own default: its programs (and their files) never get a umask of 0.
        values["umask"] = Value(0o022, f"{path}: [supervisord] umask (unset: Supervisor's default 022)")
    if options.nodaemon is not None:
        values["daemon"] = Value(not options.nodaemon, f"{path}: [supervisord] nodaemon")
        if options.nodaemon and not options.silent:  # supervisord logs to its terminal too then
            values["errorlog_to_stdout"] = Value(True, f"{path}: [supervisord] nodaemon")
    warnings_extra: list[str] = []
    http_auth: tuple[str | None, str | None] | None = None
    if options.unix_http_server is not None and options.unix_http_server.file:
        server = options.unix_http_server
        values["control_socket"] = Value(server.file, f"{path}: [unix_http_server] file")
        if server.chmod is not None:
            values["control_socket_mode"] = Value(server.chmod, f"{path}: [unix_http_server] chmod")
    if options.inet_http_server is not None and options.inet_http_server.port:
        values["control_bind"] = Value(options.inet_http_server.port, f"{path}: [inet_http_server] port")
        # Supervisor's Basic auth pair; the control server checks it (and refuses to start
        # without a username, naming the lines to add).
        http_auth = (options.inet_http_server.username, options.inet_http_server.password)
    warnings = list(result.warnings) + warnings_extra
    warnings += [f"{path}: [supervisord] {key} is not supported yet; ignored"
                 for key in _SUPERVISORD_IGNORED if getattr(options, key) is not None]
    groups = {name: tuple(members) for name, members in result.groups.items()}
    return values, Extras(tuple(result.programs), groups, tuple(warnings), http_auth)


def read_pyfile(path: str) -> tuple[dict[str, Value], Extras]:
    """A Gunicorn-style Python config: module-level names are settings, functions are hooks.

    Names starting with `_`, imported modules and imported functions are the file's own
    helpers and are skipped; any other unknown name is an error, so a typo never goes unseen.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            source = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    namespace: dict[str, Any] = {"__file__": path, "__name__": "__config__"}
    try:
        code = compile(source, path, "exec")
        exec(code, namespace)  # noqa: S102 - the user's own config file, as Gunicorn does
    except Exception:
        raise ConfigError(f"{path}: error while reading the config file:\n{traceback.format_exc()}") from None
    lines = _top_level_lines(source)
    values: dict[str, Value] = {}
    for key, raw in namespace.items():
        if key.startswith("_") or isinstance(raw, (types.ModuleType, type)):
            continue
        if callable(raw) and getattr(raw, "__module__", None) != "__config__":
            continue  # imported, not defined here
        origin = f"{path}:{lines[key]}" if key in lines else path
        setting = lookup(key)
        if setting is None:
            raise _unknown(key, origin)
        if (setting.name in HOOKS) != callable(raw) and raw is not None:
            kind = "a function" if setting.name in HOOKS else "a value, not a function"
            raise ConfigError(f"{origin}: '{key}' must be {kind}")
        values[setting.name] = Value(raw, origin)
    return values, Extras()


def _top_level_lines(source: str) -> dict[str, int]:
    lines: dict[str, int] = {}
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines.setdefault(node.name, node.lineno)
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        for target in targets:
            if isinstance(target, ast.Name):
                lines.setdefault(target.id, node.lineno)
    return lines


def read_file(path: str) -> tuple[dict[str, Value], Extras]:
    """Dispatch on the file's kind: TOML, a Gunicorn-style Python file, or a supervisord.conf."""
    if not os.path.exists(path):
        raise ConfigError(f"config file {path} does not exist")
    if path.endswith(".toml"):
        return read_toml(path)
    if path.endswith(".py"):
        return read_pyfile(path)
    if path.endswith((".conf", ".ini")):
        return read_ini(path)
    raise ConfigError(f"{path}: unknown config file kind; expected .toml, .py, or a supervisord .conf/.ini")


def read_environ(environ: Mapping[str, str]) -> tuple[dict[str, Value], dict[str, Value]]:
    """Settings from the environment, as (under the config file, over the config file).

    Under: the variables Gunicorn users expect (`WEB_CONCURRENCY`). Over: `ARBITER_<NAME>`;
    an unknown `ARBITER_*` variable is an error, like a bad key in a file.
    """
    under: dict[str, Value] = {}
    for setting in SETTINGS:
        if setting.env_default and setting.env_default in environ:
            under[setting.name] = Value(environ[setting.env_default], f"environment variable {setting.env_default}")
    over: dict[str, Value] = {}
    for key, raw in environ.items():
        if not key.startswith("ARBITER_") or key in _NOT_SETTINGS:
            continue
        origin = f"environment variable {key}"
        known = BY_NAME.get(key[len("ARBITER_"):].lower())
        if known is None or known.name in HOOKS:
            raise _unknown(key[len("ARBITER_"):], origin)
        over[known.name] = Value(raw, origin)
    return under, over


# Variables Arbiter sets for its own children; never settings.
_NOT_SETTINGS = frozenset({"ARBITER_REEXEC", "ARBITER_TOKEN", "ARBITER_SOCKET"})


def build(cli: Mapping[str, Value], environ: Mapping[str, str] | None = None) -> Config:
    """Layer defaults, the config file, the environment and the command line into a `Config`.

    Args:
        cli: values given on the command line, already keyed by setting name.
        environ: the environment to read (`os.environ` by default).

    Raises:
        ConfigError: a key is unknown or a value has the wrong type; the message says where.
    """
    environ = os.environ if environ is None else environ
    env_under, env_over = read_environ(environ)
    config_path = cli.get("config") or env_over.get("config")
    from_file: dict[str, Value] = {}
    extras = Extras()
    if config_path is not None:
        path = _convert(BY_NAME["config"], config_path)
        from_file, extras = read_file(path)
    layered: dict[str, Value] = {**env_under, **from_file, **env_over, **cli}
    values = {name: _convert(BY_NAME[name], value) for name, value in layered.items()}
    if values.get("threads", 1) > 1 and values.get("worker_class", "auto") == "sync":
        # Gunicorn's rule: sync with threads is gthread.
        values["worker_class"] = "gthread"
    if values.get("refork_after") and "gevent" in str(values.get("worker_class", "")).lower():
        # A gevent hub cannot be stopped and rebuilt across a fork the way a thread pool or an
        # event loop can; a mold forked from one would hand every worker a broken hub.
        raise ConfigError(f"refork_after = {','.join(map(str, values['refork_after']))}: reforking does not "
                          f"work with gevent workers (worker_class = {values['worker_class']!r}); use sync, "
                          "gthread or uvicorn, or turn reforking off")
    return Config(**values, extras=extras)
