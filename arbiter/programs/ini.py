"""Read a `supervisord.conf` as Supervisor reads it, into `ProgramConfig`s and the master's options.

Supervisor's file rules kept here: `;` and `#` start an inline comment after whitespace; keys are
case-insensitive; `[include] files=` holds globs relative to the including file; `%(here)s` is
the directory of the file a section is in; `%(ENV_X)s` reads the environment; `[group:x]`
gathers programs; `[supervisord] environment` is inherited by every program.

What Arbiter does not do is never dropped silently: each unknown key and each unsupported
section comes back as one warning naming it (with file and line), and the rest still runs.
"""

from __future__ import annotations

import configparser
import glob
import os
import platform
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from arbiter.config.convert import to_log_level, to_str
from arbiter.errors import ConfigError
from arbiter.programs import values as v
from arbiter.programs.config import PROGRAM_KEYS, ProgramConfig, build_program, check_programs, expand
from arbiter.programs.listener_config import LISTENER_KEYS


@dataclass(frozen=True)
class HttpServer:
    """`[unix_http_server]` or `[inet_http_server]`: where Supervisor's control API listens."""

    file: str | None = None  # unix socket path
    chmod: int = 0o700
    chown: str | None = None
    port: str | None = None  # "host:port" for inet
    username: str | None = None
    password: str | None = None


@dataclass(frozen=True)
class SupervisordOptions:
    """The `[supervisord]`, `[*_http_server]` and `[supervisorctl]` settings, for the master.

    None means "not set in the file"; the master applies its own default.
    """

    logfile: str | None = None
    logfile_maxbytes: int | None = None
    logfile_backups: int | None = None
    loglevel: str | None = None
    pidfile: str | None = None
    umask: int | None = None
    nodaemon: bool | None = None
    silent: bool | None = None
    minfds: int | None = None
    minprocs: int | None = None
    nocleanup: bool | None = None
    childlogdir: str | None = None
    user: str | None = None
    directory: str | None = None
    strip_ansi: bool | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    identifier: str | None = None
    unix_http_server: HttpServer | None = None
    inet_http_server: HttpServer | None = None
    serverurl: str | None = None  # [supervisorctl]


class IniResult(NamedTuple):
    programs: list[ProgramConfig]
    groups: dict[str, list[str]]
    options: SupervisordOptions
    warnings: list[str]


def _to_loglevel(value: Any) -> str:
    # Supervisor's extra levels are finer than debug.
    text = str(value).strip().lower()
    return "debug" if text in ("trace", "blather") else to_log_level(text)


def _to_directory(value: Any) -> str:
    path = os.path.expanduser(to_str(value))
    if not os.path.isdir(path):
        raise ValueError("an existing directory")
    return path


_SUPERVISORD_KEYS: dict[str, Callable[[Any], Any]] = {
    "logfile": to_str, "logfile_maxbytes": v.to_byte_size, "logfile_backups": v.to_non_negative_int,
    "loglevel": _to_loglevel, "pidfile": to_str, "umask": v.to_umask, "nodaemon": v.to_bool,
    "silent": v.to_bool, "minfds": v.to_int, "minprocs": v.to_int, "nocleanup": v.to_bool,
    "childlogdir": _to_directory, "user": to_str, "directory": to_str, "strip_ansi": v.to_bool,
    "environment": v.to_environment, "identifier": to_str,
}
_SERVER_KEYS: dict[str, Callable[[Any], Any]] = {
    "file": to_str, "chmod": v.to_umask, "chown": to_str, "port": to_str,
    "username": to_str, "password": to_str,
}
_KNOWN_KEYS: dict[str, set[str]] = {
    "supervisord": set(_SUPERVISORD_KEYS),
    "unix_http_server": {"file", "chmod", "chown", "username", "password"},
    "inet_http_server": {"port", "username", "password"},
    "supervisorctl": {"serverurl", "username", "password", "prompt", "history_file"},
    "include": {"files"},
    "rpcinterface:supervisor": {"supervisor.rpcinterface_factory"},
}
# Supervisor program keys Arbiter does not act on, with the value that means "off": a file that
# sets them to that value loses nothing, so only another value earns a warning.
_PROGRAM_KEYS_IGNORED_AT = {"stdout_syslog": "false", "stderr_syslog": "false", "serverurl": "auto"}
# Kept as templates and expanded per process by ProgramConfig.processes().
_PER_PROCESS_KEYS = {"command", "process_name", "directory", "environment", "stdout_logfile", "stderr_logfile"}


@dataclass
class _Section:
    name: str
    path: str
    items: dict[str, str]
    lines: dict[str, int]  # key -> line; "" -> the header's line

    @property
    def here(self) -> str:
        return os.path.dirname(os.path.abspath(self.path))

    def where(self, key: str = "") -> str:
        line = self.lines.get(key) or self.lines.get("")
        place = f"{self.path}:{line}" if line else self.path
        return f"{place}: [{self.name}]" + (f" {key}" if key else "")


def load(path: str) -> IniResult:
    """Read `path` and its includes.

    Returns:
        (programs, groups, supervisord_options, warnings): groups maps `[group:x]` names to
        program names; each warning names one thing in the file that Arbiter ignores.

    Raises:
        ConfigError: the file cannot be read or parsed, or a value is wrong; the message names
            file, line, section, key, value and what was expected.
    """
    warnings: list[str] = []
    sections = _read(path)
    include = next((s for s in sections if s.name == "include"), None)
    if include is not None:
        if "files" not in include.items:
            raise ConfigError(f"{include.where()}: an [include] section needs 'files ='")
        for included in _included_files(include, warnings):
            more = _read(included)
            for section in more:
                if section.name == "include":
                    warnings.append(f"{section.where()}: an included file's own [include] is not "
                                    "read (as in Supervisor); put the globs in the main file")
                    continue
                clash = next((s for s in sections if s.name == section.name), None)
                if clash is not None:
                    raise ConfigError(f"{section.where()}: section [{section.name}] is also "
                                      f"defined at {clash.where()}")
                sections.append(section)

    groups: dict[str, list[str]] = {}
    group_priority: dict[str, int] = {}
    program_sections: list[_Section] = []
    options: dict[str, Any] = {}
    for section in sections:
        kind, _, name = section.name.partition(":")
        if section.name in _KNOWN_KEYS:
            _warn_unknown_keys(section, _KNOWN_KEYS[section.name], warnings)
            if section.name == "supervisord":
                options.update(_convert(section, _SUPERVISORD_KEYS))
            elif section.name.endswith("_http_server"):
                options[section.name] = HttpServer(**_convert(section, _SERVER_KEYS))
            elif section.name == "supervisorctl" and "serverurl" in section.items:
                options["serverurl"] = _expand_plain(section, "serverurl")
        elif kind in ("program", "eventlistener") and name:
            program_sections.append(section)
        elif kind == "group" and name:
            _warn_unknown_keys(section, {"programs", "priority"}, warnings)
            groups[name] = list(v.to_names(_expand_plain(section, "programs") if "programs" in section.items else ""))
            if "priority" in section.items:
                group_priority[name] = _convert(section, {"priority": v.to_int})["priority"]
        else:
            warnings.append(f"{section.where()}: section [{section.name}] is not supported by "
                            "Arbiter and is ignored")

    base_env = {k: val.replace("%", "%%") for k, val in options.get("environment", {}).items()}
    group_of = {member: g for g, members in groups.items() for member in members}
    programs = []
    for section in program_sections:
        kind, _, name = section.name.partition(":")
        listener = kind == "eventlistener"
        raw = _program_values(section, name, group_of.get(name, name), warnings, listener)
        if base_env:
            env = raw.get("environment", "")
            parsed = _convert_one(section, "environment", env, v.to_environment) if env else {}
            raw["environment"] = {**base_env, **parsed}
        if name in group_of and group_of[name] in group_priority:
            raw.setdefault("priority", str(group_priority[group_of[name]]))
        programs.append(build_program(name, raw, here=section.here, origin=section.where(),
                                      where=section.where, warnings=warnings, listener=listener))
    check_programs(programs, groups, path)
    return IniResult(programs, groups, SupervisordOptions(**options), warnings)


def _read(path: str) -> list[_Section]:
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";", "#"), strict=False)
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        parser.read_string(text, source=path)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except configparser.Error as exc:
        raise ConfigError(f"{path}: not a valid supervisord.conf: {exc}") from None
    lines = _line_index(text)
    return [
        _Section(name, path, dict(parser.items(name)), lines.get(name, {}))
        for name in parser.sections()
    ]


def _line_index(text: str) -> dict[str, dict[str, int]]:
    """section -> key -> line number of its first appearance ("" for the header)."""
    index: dict[str, dict[str, int]] = {}
    current: dict[str, int] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        header = re.match(r"\s*\[([^\]]+)\]", line)
        if header:
            current = index.setdefault(header.group(1).strip(), {})
            current.setdefault("", number)
            continue
        key = re.match(r"([^\s;#=:][^=:]*?)\s*[=:]", line)
        if key and current is not None:
            current.setdefault(key.group(1).strip().lower(), number)
    return index


def _plain_expansions(section: _Section) -> dict[str, Any]:
    values: dict[str, Any] = {f"ENV_{k}": val for k, val in os.environ.items()}
    values.update(here=section.here, host_node_name=platform.node())
    return values


def _expand_plain(section: _Section, key: str, extra: Mapping[str, Any] | None = None) -> str:
    values = {**_plain_expansions(section), **(extra or {})}
    try:
        return expand(section.items[key], values, key)
    except ValueError as exc:
        raise ConfigError(f"{section.where(key)}: {str(exc).partition(': ')[2]}") from None


def _convert_one(section: _Section, key: str, raw: Any, convert: Callable[[Any], Any]) -> Any:
    try:
        return convert(raw)
    except ValueError as exc:
        raise ConfigError(f"{section.where(key)} = {raw!r}: expected {exc}") from None


def _convert(section: _Section, converters: Mapping[str, Callable[[Any], Any]]) -> dict[str, Any]:
    return {
        key: _convert_one(section, key, _expand_plain(section, key), converters[key])
        for key in section.items if key in converters
    }


def _warn_unknown_keys(section: _Section, known: set[str], warnings: list[str]) -> None:
    for key in section.items:
        if key not in known:
            warnings.append(f"{section.where(key)}: {key!r} is not a [{section.name}] setting "
                            "Arbiter knows; ignored")


def _included_files(include: _Section, warnings: list[str]) -> list[str]:
    base = include.here
    found: list[str] = []
    for pattern in _expand_plain(include, "files").split():
        matches = sorted(glob.glob(os.path.join(base, os.path.expanduser(pattern))))
        if not matches:
            warnings.append(f"{include.where('files')}: no file matches {pattern!r}")
        found.extend(m for m in matches if m not in found)
    return found


def _program_values(section: _Section, name: str, group: str, warnings: list[str],
                    listener: bool = False) -> dict[str, Any]:
    extra = {"program_name": name, "group_name": group}
    raw: dict[str, Any] = {}
    for key, value in section.items.items():
        if listener and key in LISTENER_KEYS:
            raw[key] = value if key == "events" else _expand_plain(section, key, extra)
        elif key in _PROGRAM_KEYS_IGNORED_AT:
            if value.strip().lower() != _PROGRAM_KEYS_IGNORED_AT[key]:
                warnings.append(f"{section.where(key)}: {key}={value} is not supported by Arbiter; ignored")
        elif key not in PROGRAM_KEYS:
            warnings.append(f"{section.where(key)}: {key!r} is not a program setting Arbiter "
                            "knows; ignored")
        elif key in _PER_PROCESS_KEYS:
            # Expanded per process; environment after it is parsed, so that a value which
            # expands to a comma or quote stays whole.
            raw[key] = value
        else:
            raw[key] = _expand_plain(section, key, extra)
    return raw
