"""One frozen, validated `Config`, built from the settings table in layers.

Precedence, lowest first: defaults < config file < `ARBITER_*` environment < command line.
Every error names the key, where it came from (file and line, or variable, or flag) and what
was expected.
"""

from __future__ import annotations

import ast
import configparser
import dataclasses
import difflib
import importlib
import os
import re
import sys
import traceback
import types
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from arbiter.config.convert import to_hook
from arbiter.config.names import lookup
from arbiter.config.settings import BY_NAME, SETTINGS, Config, Extras, Setting
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


def _unknown(key: str, origin: str, also: tuple[str, ...] = (), cutoff: float = 0.6) -> ConfigError:
    names = [s.name for s in SETTINGS] + list(also)
    close = difflib.get_close_matches(key.replace("-", "_").lower(), names, n=1, cutoff=cutoff)
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


def load_toml(path: str) -> tuple[str, dict[str, Any]]:
    """A TOML file's text (to find lines in for error messages) and its parsed tables.

    Raises:
        ConfigError: the file cannot be read, or is not valid TOML.
    """
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    text = data.decode("utf-8", "replace")
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def read_toml(path: str) -> tuple[dict[str, Value], Extras]:
    """Top-level keys of an `arbiter.toml`, each with its file and line, and its programs."""
    text, parsed = load_toml(path)
    values: dict[str, Value] = {}
    extras = Extras()
    if "programs" in parsed or "groups" in parsed or "eventlisteners" in parsed:
        from arbiter.programs.config import programs_from_mapping

        programs, groups = programs_from_mapping(parsed, path)
        extras = Extras(tuple(programs), {name: tuple(members) for name, members in groups.items()})
    for key, raw in parsed.items():
        if key in ("programs", "groups", "eventlisteners"):
            continue
        line = _line_of(text, rf"^[ \t]*[\"']?{re.escape(key)}[\"']?[ \t]*=") or _line_of(
            text, rf"^[ \t]*\[[ \t]*{re.escape(key)}\b"
        )
        origin = f"{path}:{line}" if line else path
        setting = lookup(key)
        if setting is None or setting.convert is to_hook:
            # `[program.x]` means [programs.x]
            raise _unknown(key, origin, also=("programs", "groups", "eventlisteners"))
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
        if server.chown:
            values["control_socket_owner"] = Value(server.chown, f"{path}: [unix_http_server] chown")
    if options.inet_http_server is not None and options.inet_http_server.port:
        values["control_bind"] = Value(options.inet_http_server.port, f"{path}: [inet_http_server] port")
        # Supervisor's Basic auth pair; the control server checks it (and refuses to start
        # without a username, naming the lines to add).
        http_auth = (options.inet_http_server.username, options.inet_http_server.password)
    warnings = list(result.warnings) + warnings_extra
    warnings += [f"{path}: [supervisord] {key} is not supported yet; ignored"
                 for key in _SUPERVISORD_IGNORED if getattr(options, key) is not None]
    groups = {name: tuple(members) for name, members in result.groups.items()}
    return values, Extras(tuple(result.programs), groups, tuple(warnings), http_auth=http_auth)


def read_pyfile(path: str) -> tuple[dict[str, Value], Extras]:
    """A Gunicorn-style Python config: module-level names are settings, functions are hooks.

    Names starting with `_`, imported modules and imported functions are the file's own
    helpers and are skipped; any other unknown name is an error, so a typo never goes unseen.
    """
    source = _read_text(path)
    namespace: dict[str, Any] = {"__file__": path, "__name__": "__config__"}
    try:
        code = compile(source, path, "exec")
    except SyntaxError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not valid Python: {exc.msg}") from None
    try:
        exec(code, namespace)  # noqa: S102 - the user's own config file, as Gunicorn does
    except Exception:
        raise ConfigError(f"{path}: error while reading the config file:\n{traceback.format_exc()}") from None
    return _from_namespace(namespace, _top_level_lines(source), path, "__config__")


def read_module(name: str) -> tuple[dict[str, Value], Extras]:
    """`-c python:package.module`: a Gunicorn Python config imported as a module, as Gunicorn does."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # as for the app: a module beside the user
    try:
        module = importlib.import_module(name)
    except Exception:
        raise ConfigError(f"python:{name}: cannot import the config module:\n{traceback.format_exc()}") from None
    path = getattr(module, "__file__", None) or f"python:{name}"
    try:
        lines = _top_level_lines(_read_text(path))
    except (ConfigError, SyntaxError):
        lines = {}
    return _from_namespace(vars(module), lines, path, name)


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (not UTF-8)") from None


def _from_namespace(namespace: Mapping[str, Any], lines: Mapping[str, int], path: str,
                    module: str) -> tuple[dict[str, Value], Extras]:
    """The settings a Python config's names hold.

    A function that is no hook is an error (a misspelt hook would never run). A value that is no
    setting is the file's own helper, as Gunicorn takes it (Docker images' configs compute
    `workers` from a dozen of them): named in one warning, and one warning each, with the
    setting meant, where the name looks like a misspelt setting.
    """
    values: dict[str, Value] = {}
    helpers: list[str] = []
    warnings: list[str] = []
    for key, raw in namespace.items():
        if key.startswith("_") or isinstance(raw, (types.ModuleType, type)):
            continue
        if callable(raw) and getattr(raw, "__module__", None) != module:
            continue  # imported, not defined here
        origin = f"{path}:{lines[key]}" if key in lines else path
        setting = lookup(key)
        if setting is None:
            if callable(raw):
                raise _unknown(key, origin)
            hint = str(_unknown(key, origin, cutoff=0.85))  # only a near miss (wrokers) looks like a typo
            if "did you mean" in hint:
                warnings.append(f"{hint}; ignored")
            else:
                helpers.append(key)
            continue
        if (setting.convert is to_hook) != callable(raw) and raw is not None:
            kind = "a function" if setting.convert is to_hook else "a value, not a function"
            raise ConfigError(f"{origin}: '{key}' must be {kind}")
        values[setting.name] = Value(raw, origin)
    if helpers:
        warnings.insert(0, f"{path}: not settings, ignored as Gunicorn ignores them (name a helper _like_this to "
                           f"say so): {', '.join(helpers)}")
    return values, Extras(warnings=tuple(warnings))


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


# A line that opens an INI section: `[program:web]`, and also a broken `[group:x` (a supervisord.conf
# with a typo is still one, and its reader says what is wrong). A Python config never starts a line
# with `[name`, a TOML file is known by its name.
_INI_HEADER = re.compile(r"^\[[ \t]*[A-Za-z_][\w.:\- \t]*(\]|[ \t]*$)", re.MULTILINE)


def read_file(path: str) -> tuple[dict[str, Value], Extras]:
    """Read one config file: the one place that decides how a file is read.

    `python:MODULE` is a Gunicorn config imported as a module; a name ending in `.toml` is
    TOML; a `.py` file is Python; any other file is a supervisord.conf when it has INI section
    headers, else a Gunicorn Python config (`gunicorn.conf`, `conf/prod`), as Gunicorn reads it.

    Raises:
        ConfigError: the file is missing, unreadable, or none of these; the message says which
            readings were tried and why each did not fit.
    """
    if path.startswith("python:"):
        return read_module(path[len("python:"):])
    if not os.path.exists(path):
        raise ConfigError(f"config file {path} does not exist")
    if path.endswith(".toml"):
        return read_toml(path)
    if path.endswith(".py"):
        return read_pyfile(path)
    text = _read_text(path)
    if _INI_HEADER.search(text):
        return read_ini(path)
    try:
        compile(text, path, "exec")
    except SyntaxError as exc:
        raise ConfigError(
            f"{path}: not a config file Arbiter can read: not a supervisord.conf (no [section] header), "
            f"not TOML (the name does not end in .toml), not a Gunicorn Python config (line {exc.lineno}: "
            f"{exc.msg})") from None
    return read_pyfile(path)


# Read with no -c: ours first. When both exist, arbiter.toml wins and gunicorn.conf.py is left
# unread (layering two files would hide where a value came from); the log says so.
DEFAULT_FILES = ("arbiter.toml", "gunicorn.conf.py")


def default_file(cwd: str) -> tuple[str | None, list[str], list[str]]:
    """The config file read when none is named, with what the start log says of it (a note, and
    a warning when a second file is left unread)."""
    found = [name for name in DEFAULT_FILES if os.path.isfile(os.path.join(cwd, name))]
    if not found:
        return None, [], []
    notes = [f"Reading ./{found[0]}, found in {cwd} (no -c given)"]
    warnings = [f"./{name} is not read because ./{found[0]} is there too; pass -c {name} to use it"
                for name in found[1:]]
    return os.path.join(cwd, found[0]), notes, warnings


def read_environ(environ: Mapping[str, str]) -> tuple[dict[str, Value], dict[str, Value], list[str]]:
    """Settings from the environment, as (under the config file, over it, warnings).

    Under: the variables Gunicorn users expect (`WEB_CONCURRENCY`). Over: `ARBITER_<NAME>`.
    An `ARBITER_*` variable that names no setting is only a warning: the name is short and
    common enough that an unrelated tool may use it (`ARBITER_URL`), and that must not stop
    the service.
    """
    under: dict[str, Value] = {}
    for setting in SETTINGS:
        if setting.env_default and setting.env_default in environ:
            under[setting.name] = Value(environ[setting.env_default], f"environment variable {setting.env_default}")
    over: dict[str, Value] = {}
    warnings: list[str] = []
    for key, raw in sorted(environ.items()):
        if not key.startswith("ARBITER_") or key in NOT_SETTINGS:
            continue
        origin = f"environment variable {key}"
        known = BY_NAME.get(key[len("ARBITER_"):].lower())
        if known is None or known.convert is to_hook:
            warnings.append(f"{_unknown(key[len('ARBITER_'):], origin)}; ignored")
            continue
        over[known.name] = Value(raw, origin)
    return under, over, warnings


# Variables Arbiter and `arbiter ctl` read or set for their own use; never settings, never warned of.
NOT_SETTINGS = frozenset({"ARBITER_REEXEC", "ARBITER_TOKEN", "ARBITER_SOCKET"})


def build(cli: Mapping[str, Value], environ: Mapping[str, str] | None = None, cwd: str | None = None) -> Config:
    """Layer defaults, the config file, the environment and the command line into a `Config`.

    Precedence, lowest first: defaults, `WEB_CONCURRENCY`, the config file, `GUNICORN_CMD_ARGS`
    (where Gunicorn reads it), `ARBITER_*`, the command line.

    Args:
        cli: values given on the command line, already keyed by setting name.
        environ: the environment to read (`os.environ` by default).
        cwd: where ./arbiter.toml or ./gunicorn.conf.py is looked for when no file is named.

    Raises:
        ConfigError: a key is unknown, a value has the wrong type, or a Gunicorn setting Arbiter
            refuses is set; the message says where.
    """
    from arbiter.config import flags

    environ = os.environ if environ is None else environ
    env_under, env_over, warnings = read_environ(environ)
    gunicorn_args: dict[str, Value] = {}
    if environ.get("GUNICORN_CMD_ARGS", "").strip():
        parsed = flags.parse_env(environ["GUNICORN_CMD_ARGS"], "GUNICORN_CMD_ARGS")
        gunicorn_args = {name: Value(raw, origin) for name, (raw, origin) in parsed.items()}
    named = cli.get("config") or env_over.get("config") or gunicorn_args.get("config")
    notes: list[str] = []
    cwd = cwd or os.getcwd()
    path = _convert(BY_NAME["config"], named) if named is not None else None
    if path is None:
        path, notes, unread = default_file(cwd)
        warnings += unread
    elif not path.startswith("python:"):
        # Relative to where Arbiter started: a reload (HUP) after --chdir reads the same file.
        path = os.path.join(cwd, path)
    from_file: dict[str, Value] = {}
    extras = Extras()
    if path is not None:
        from_file, extras = read_file(path)
        from_file["config"] = Value(path, "the config file read")
    layered: dict[str, Value] = {**env_under, **from_file, **gunicorn_args, **env_over, **cli}
    values = {name: _convert(BY_NAME[name], value) for name, value in layered.items()}
    warnings = list(extras.warnings) + warnings + _unsupported(layered, values)
    if values.get("paste"):
        _paste_app(values, layered)
    if values.get("proxy_protocol", "off") != "off" and values.get("certfile"):
        # The header comes before the TLS handshake, which the worker starts at accept.
        raise ConfigError(f"{layered['proxy_protocol'].origin}: --proxy-protocol with --certfile is not "
                          "supported: terminate TLS at the proxy, or use one of the two")
    if values.pop("control_socket_disable", False):
        values["control_socket"] = "none"
    if values.get("threads", 1) > 1 and values.get("worker_class", "auto") == "sync":
        # Gunicorn's rule: sync with threads is gthread.
        values["worker_class"] = "gthread"
    if 0 < values.get("max_workers", 0) < values.get("workers", 1):
        raise ConfigError(f"{layered['max_workers'].origin}: max_workers ({values['max_workers']}) must be 0 (off) "
                          f"or at least workers "
                          f"({values.get('workers', 1)}), the floor autoscaling starts from")
    if values.get("refork_after") and "gevent" in str(values.get("worker_class", "")).lower():
        # A gevent hub cannot be stopped and rebuilt across a fork the way a thread pool or an
        # event loop can; a mold forked from one would hand every worker a broken hub.
        raise ConfigError(f"refork_after = {','.join(map(str, values['refork_after']))}: reforking does not "
                          f"work with gevent workers (worker_class = {values['worker_class']!r}); use sync, "
                          "gthread or uvicorn, or turn reforking off")
    extras = dataclasses.replace(extras, warnings=tuple(warnings), notes=tuple(notes) + extras.notes)
    return Config(**values, extras=extras)


def _paste_app(values: dict[str, Any], layered: Mapping[str, Value]) -> None:
    """`--paste FILE[#NAME]`: the app is the file's (as `paste:ABSPATH`), and its [loggers], if
    any, configure logging unless a logging config is named, as in Gunicorn."""
    if "wsgi_app" in layered:
        raise ConfigError(f"{layered['wsgi_app'].origin}: an APP and --paste name two apps; give one")
    path = os.path.abspath(values["paste"])
    filename = path.partition("#")[0]
    if not os.path.isfile(filename):
        raise ConfigError(f"{layered['paste'].origin}: the PasteDeploy file {filename} does not exist")
    values["wsgi_app"] = f"paste:{path}"
    if not any(values.get(name) for name in ("logconfig", "logconfig_json", "logconfig_dict")):
        parser = configparser.RawConfigParser(strict=False)
        try:
            parser.read(filename, encoding="utf-8")
        except configparser.Error:
            return  # PasteDeploy reports the file's errors when it loads the app
        if parser.has_section("loggers"):
            values["logconfig"] = filename


def _unsupported(layered: Mapping[str, Value], values: Mapping[str, Any]) -> list[str]:
    """Gunicorn's settings that mean nothing here, set to something else than their default:
    an error for the refused ones, one warning each for the ignored ones."""
    warnings: list[str] = []
    for name, value in layered.items():
        item = BY_NAME[name]
        if not (item.ignored or item.refused) or values[name] == item.default:
            continue
        what = item.flags[-1] if item.flags and value.origin.startswith(("option", "environment variable GUN"))\
            else f"'{name}'"
        if item.refused:
            raise ConfigError(f"{value.origin}: {what} is not supported: {item.refused}")
        warnings.append(f"{value.origin}: {what} is ignored: {item.ignored}")
    return warnings


def startup_messages(cfg: Config) -> list[tuple[int, str]]:
    """What a start says about its configuration before it serves, as (logging level, text):
    `--check-config` prints the same list, so a check shows every warning a start would."""
    import logging

    return [(logging.INFO, note) for note in cfg.extras.notes] + \
        [(logging.WARNING, warning) for warning in cfg.extras.warnings]
