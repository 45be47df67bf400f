"""What a program is: `ProgramConfig` (one per `[program:x]` / `[programs.x]`) and `ProcessSpec`
(one per process after `numprocs` expansion), with Supervisor's defaults and name expansions.

Two loaders fill them: `load_supervisor_ini` (a `supervisord.conf` as is; see `ini.py`) and
`programs_from_mapping` (the `[programs.NAME]` and `[groups.NAME]` tables of an arbiter.toml).
Both accept the same keys and run them through the same converters (`values.py`).
"""

from __future__ import annotations

import difflib
import os
import platform
import re
import shlex
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from arbiter.config.convert import to_positive_int, to_str
from arbiter.errors import ConfigError
from arbiter.programs import values as v
from arbiter.programs.listener_config import LISTENER_KEYS, ListenerConfig, split_listener
from arbiter.programs.states import Autorestart, Rules

if TYPE_CHECKING:
    from arbiter.programs.ini import IniResult

MB = 1024 * 1024


@dataclass(frozen=True)
class ProgramConfig:
    """One program section. String fields marked "template" may hold `%(name)s` expansions
    that differ per process (`%(process_num)02d`); `processes()` expands them."""

    name: str
    command: str | tuple[str, ...]  # template; a string is split like a shell would (shlex)
    process_name: str = "%(program_name)s"  # template
    numprocs: int = 1
    numprocs_start: int = 0
    priority: int = 999
    autostart: bool = True
    autorestart: Autorestart = Autorestart.UNEXPECTED
    exitcodes: tuple[int, ...] = (0,)
    startsecs: float = 1
    startretries: int = 3
    stopsignal: int = signal.SIGTERM
    stopwaitsecs: float = 10
    stopasgroup: bool = False
    killasgroup: bool = False
    user: str | None = None
    directory: str | None = None  # template
    umask: int | None = None
    environment: Mapping[str, str] = field(default_factory=dict)  # values are templates
    redirect_stderr: bool = False
    stdout_logfile: str | None = v.AUTO  # template; AUTO, None (discard), "-" (master), a path
    stdout_logfile_maxbytes: int = 50 * MB
    stdout_logfile_backups: int = 10
    stderr_logfile: str | None = v.AUTO
    stderr_logfile_maxbytes: int = 50 * MB
    stderr_logfile_backups: int = 10
    # Arbiter's own keys.
    depends_on: tuple[str, ...] = ()  # programs that must be RUNNING before this one starts
    log_timestamps: bool = False  # prefix each captured line with the time it was read
    # Supervisor's event keys: PROCESS_LOG_* per chunk read, PROCESS_COMMUNICATION_* for what is
    # written between the XSUPERVISOR tokens (kept up to this many bytes; 0: no capture mode).
    stdout_events_enabled: bool = False
    stderr_events_enabled: bool = False
    stdout_capture_maxbytes: int = 0
    stderr_capture_maxbytes: int = 0
    # Set for an `[eventlistener:x]`: its stdin/stdout speak the event protocol.
    listener: ListenerConfig | None = None
    # Where it came from: `%(here)s` and error messages.
    here: str | None = None
    origin: str = ""

    def processes(self, group: str | None = None) -> list[ProcessSpec]:
        """One `ProcessSpec` per process, names and templates expanded.

        Raises:
            ValueError: a template names an unknown expansion or the command cannot be split;
                the text names the key.
        """
        group = group or self.name
        base = expansions(self, group)
        specs = []
        for num in range(self.numprocs_start, self.numprocs_start + self.numprocs):
            values = {**base, "process_num": num}
            name = expand(self.process_name, values, "process_name")
            if not name or re.search(r"[\s:/]", name):
                raise ValueError(f"process_name: {name!r} is not a valid name (no spaces, ':' or '/')")
            if isinstance(self.command, str):
                line = expand(self.command, values, "command")
                try:
                    argv = tuple(shlex.split(line))
                except ValueError as exc:
                    raise ValueError(f"command: cannot split {self.command!r}: {exc}") from None
            else:
                argv = tuple(expand(arg, values, "command") for arg in self.command)
            if not argv:
                raise ValueError("command: is empty")
            logs = {}
            for channel in ("stdout", "stderr"):
                target = getattr(self, f"{channel}_logfile")
                if target not in (None, v.AUTO, v.MASTER):
                    target = os.path.expanduser(expand(target, values, f"{channel}_logfile"))
                logs[channel] = target
            specs.append(ProcessSpec(
                name=name,
                group=group,
                program=self,
                process_num=num,
                argv=argv,
                directory=expand(self.directory, values, "directory") if self.directory else None,
                environment={k: expand(val, values, f"environment {k}") for k, val in self.environment.items()},
                stdout_logfile=logs["stdout"],
                stderr_logfile=None if self.redirect_stderr else logs["stderr"],
            ))
        return specs


@dataclass(frozen=True)
class ProcessSpec:
    """One process to run: the program's settings with every template expanded."""

    name: str
    group: str
    program: ProgramConfig
    process_num: int
    argv: tuple[str, ...]
    directory: str | None
    environment: Mapping[str, str]
    stdout_logfile: str | None
    stderr_logfile: str | None

    @property
    def fullname(self) -> str:
        """`group:name`, or `name` when the group is the program's own (as supervisorctl shows)."""
        return self.name if self.group == self.name else f"{self.group}:{self.name}"

    @property
    def rules(self) -> Rules:
        p = self.program
        return Rules(
            name=self.name, startsecs=p.startsecs, startretries=p.startretries,
            autorestart=p.autorestart, exitcodes=frozenset(p.exitcodes), stopsignal=p.stopsignal,
            stopwaitsecs=p.stopwaitsecs, stopasgroup=p.stopasgroup, killasgroup=p.killasgroup,
        )


# ---- expansions ---------------------------------------------------------------------------

_BAD_PERCENT = re.compile(r"%(?![(%])")


def expansions(program: ProgramConfig, group: str) -> dict[str, Any]:
    """The names `%(name)s` may use, as Supervisor offers them (without `process_num`)."""
    values: dict[str, Any] = {f"ENV_{key}": val for key, val in os.environ.items()}
    values.update(
        here=program.here or os.getcwd(), program_name=program.name, group_name=group,
        host_node_name=platform.node(), numprocs=program.numprocs,
    )
    return values


def expand(template: str, values: Mapping[str, Any], what: str) -> str:
    """`template % values`, with errors that say which name is unknown and what is allowed."""
    if _BAD_PERCENT.search(template.replace("%%", "")):
        raise ValueError(f"{what}: {template!r} has a '%' that is not an expansion; write %% for a literal %")
    try:
        return template % values
    except KeyError as exc:
        known = ", ".join(sorted(k for k in values if not k.startswith("ENV_")))
        raise ValueError(f"{what}: %({exc.args[0]}) cannot be expanded; known names: {known} "
                         "and ENV_<variable>") from None
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what}: cannot expand {template!r}: {exc}") from None


# ---- keys shared by both loaders ----------------------------------------------------------


def _to_command(value: Any) -> str | tuple[str, ...]:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, (list, tuple)) and value and all(isinstance(a, str) for a in value):
        return tuple(value)
    raise ValueError("a command line, or a list of arguments")


PROGRAM_KEYS: dict[str, Callable[[Any], Any]] = {
    "command": _to_command,
    "process_name": to_str,
    "numprocs": to_positive_int,
    "numprocs_start": v.to_non_negative_int,
    "priority": v.to_int,
    "autostart": v.to_bool,
    "autorestart": v.to_autorestart,
    "exitcodes": v.to_exitcodes,
    "startsecs": v.to_seconds,
    "startretries": v.to_non_negative_int,
    "stopsignal": v.to_signal,
    "stopwaitsecs": v.to_seconds,
    "stopasgroup": v.to_bool,
    "killasgroup": v.to_bool,
    "user": v.to_user,
    "directory": to_str,
    "umask": v.to_umask,
    "environment": v.to_environment,
    "redirect_stderr": v.to_bool,
    "stdout_logfile": v.to_logfile,
    "stdout_logfile_maxbytes": v.to_byte_size,
    "stdout_logfile_backups": v.to_non_negative_int,
    "stderr_logfile": v.to_logfile,
    "stderr_logfile_maxbytes": v.to_byte_size,
    "stderr_logfile_backups": v.to_non_negative_int,
    "depends_on": v.to_names,
    "log_timestamps": v.to_bool,
    "stdout_events_enabled": v.to_bool,
    "stderr_events_enabled": v.to_bool,
    "stdout_capture_maxbytes": v.to_byte_size,
    "stderr_capture_maxbytes": v.to_byte_size,
}
assert set(PROGRAM_KEYS) == {f.name for f in fields(ProgramConfig)} - {"name", "here", "origin", "listener"}


def build_program(
    name: str, raw: Mapping[str, Any], *, here: str | None, origin: str,
    where: Callable[[str], str], warnings: list[str] | None = None, listener: bool = False,
) -> ProgramConfig:
    """Convert one program's raw keys into a checked `ProgramConfig`.

    Args:
        raw: key -> raw value; every key must be in `PROGRAM_KEYS` (the caller sorts out others).
        where: key -> "file:line [section] key" for messages.
        warnings: where to note settings that have no effect; None makes them errors.
        listener: an event listener's section: `raw` may hold `LISTENER_KEYS` too.

    Raises:
        ConfigError: a value of the wrong kind, or settings that contradict each other.
    """
    if not re.fullmatch(r"[^\s:/]+", name):
        raise ConfigError(f"{where('')}: program name {name!r} may not hold spaces, ':' or '/'")
    pool: ListenerConfig | None = None
    if listener:
        raw, pool = split_listener(raw, where)
    values: dict[str, Any] = {"listener": pool} if pool is not None else {}
    for key, value in raw.items():
        try:
            values[key] = PROGRAM_KEYS[key](value)
        except ValueError as exc:
            raise ConfigError(f"{where(key)} = {value!r}: expected {exc}") from None
    if "command" not in values:
        raise ConfigError(f"{where('')}: a program needs a command")
    # Supervisor: killasgroup follows stopasgroup unless set, and may not be weaker.
    values.setdefault("killasgroup", values.get("stopasgroup", False))
    if values.get("stopasgroup") and not values["killasgroup"]:
        raise ConfigError(f"{where('killasgroup')}: stopasgroup=true needs killasgroup=true too")
    numprocs = values.get("numprocs", 1)
    if numprocs > 1 and "%(process_num)" not in values.get("process_name", "%(program_name)s"):
        raise ConfigError(f"{where('process_name')}: with numprocs={numprocs}, process_name must "
                          "contain %(process_num)s (for example %(program_name)s_%(process_num)02d)")
    stderr_log = values.get("stderr_logfile", v.AUTO)
    if values.get("redirect_stderr") and stderr_log not in (None, v.AUTO):
        message = (f"{where('stderr_logfile')}: redirect_stderr=true sends stderr to the stdout "
                   f"log, so stderr_logfile={stderr_log} is ignored")
        if warnings is None:
            raise ConfigError(message)
        warnings.append(message)
    if pool is not None and values.get("stdout_logfile", v.AUTO) not in (None, v.AUTO):
        message = (f"{where('stdout_logfile')}: an event listener's stdout is the event protocol, "
                   "not a log; stdout_logfile is not used (its stderr is captured as usual)")
        if warnings is None:
            raise ConfigError(message)
        warnings.append(message)
    program = ProgramConfig(name=name, here=here, origin=origin, **values)
    for channel in ("stdout", "stderr"):
        target = getattr(program, f"{channel}_logfile")
        if target == v.AUTO and not getattr(program, f"{channel}_logfile_maxbytes") and warnings is not None:
            warnings.append(f"{where(channel + '_logfile')}: AUTO log without rotation; set "
                            f"{channel}_logfile_maxbytes > 0 so it cannot fill the disk")
    return program


def check_programs(
    programs: Sequence[ProgramConfig], groups: Mapping[str, Sequence[str]], origin: str
) -> list[ProcessSpec]:
    """Check names, groups and depends_on across programs; return every process.

    Raises:
        ConfigError: an unknown or duplicate name, a program in two groups, a dependency cycle,
            a bad expansion (named with the program's origin).
    """
    by_name: dict[str, ProgramConfig] = {}
    for program in programs:
        if program.name in by_name:
            raise ConfigError(f"{program.origin or origin}: program {program.name!r} is defined twice")
        by_name[program.name] = program
    group_of: dict[str, str] = {}
    for group, members in groups.items():
        for member in members:
            if member not in by_name:
                raise ConfigError(f"{origin}: group {group!r} names unknown program {member!r}"
                                  + _suggest(member, by_name))
            if member in group_of:
                raise ConfigError(f"{origin}: program {member!r} is in both group "
                                  f"{group_of[member]!r} and group {group!r}")
            group_of[member] = group
    for program in programs:
        for dep in program.depends_on:
            if dep not in by_name or dep == program.name:
                what = "itself" if dep == program.name else f"unknown program {dep!r}"
                raise ConfigError(f"{program.origin or origin}: depends_on of {program.name!r} names "
                                  + what + _suggest(dep, by_name))
    check_cycles(by_name, origin)
    specs: list[ProcessSpec] = []
    seen: dict[str, str] = {}
    for program in programs:
        group = group_of.get(program.name, program.name)
        if group != program.name and group in by_name and group not in group_of:
            raise ConfigError(f"{origin}: group {group!r} has the name of a program outside it")
        try:
            expanded = program.processes(group)
        except ValueError as exc:
            raise ConfigError(f"{program.origin or origin}: {exc}") from None
        for spec in expanded:
            if spec.fullname in seen:
                raise ConfigError(f"{program.origin or origin}: process name {spec.fullname!r} is "
                                  f"used by both {seen[spec.fullname]!r} and {program.name!r}")
            seen[spec.fullname] = program.name
            for channel in ("stdout", "stderr"):
                target = getattr(spec, f"{channel}_logfile")
                folder = os.path.dirname(target) if target not in (None, v.AUTO, v.MASTER) else ""
                if folder and not os.path.isdir(folder):
                    raise ConfigError(f"{program.origin or origin} {channel}_logfile = {target!r}: "
                                      f"expected a path in an existing directory; {folder} is not one")
        specs.extend(expanded)
    return specs


def check_cycles(by_name: Mapping[str, ProgramConfig], origin: str) -> None:
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = " -> ".join(path[path.index(name):] + [name])
            raise ConfigError(f"{origin}: depends_on goes round in a circle: {cycle}")
        if name in done:
            return
        for dep in by_name[name].depends_on:
            visit(dep, path + [name])
        done.add(name)

    for name in by_name:
        visit(name, [])


def _suggest(name: str, known: Mapping[str, Any] | Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


# ---- TOML ---------------------------------------------------------------------------------


def programs_from_mapping(
    data: Mapping[str, Any], path: str
) -> tuple[list[ProgramConfig], dict[str, list[str]]]:
    """Programs and groups from a parsed arbiter.toml (`[programs.NAME]`, `[groups.NAME]`).

    Other top-level keys are the caller's. Values may be TOML types or Supervisor's strings
    (`command = ["python", "x.py"]` or `"python x.py"`; `environment = {A = "1"}`).

    Raises:
        ConfigError: an unknown key, or a bad value, naming the key and the file.
    """
    text = _read_text(path)
    here = os.path.dirname(os.path.abspath(path))
    tables = data.get("programs", {})
    group_tables = data.get("groups", {})
    for key, table in (("programs", tables), ("groups", group_tables)):
        if not isinstance(table, Mapping):
            raise ConfigError(f"{path}: '{key}' must be a table of [{key}.NAME] tables")
    groups: dict[str, list[str]] = {}
    group_priority: dict[str, int] = {}
    for gname, table in group_tables.items():
        where = _toml_where(text, path, f"groups.{gname}")
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where('')}: must be a table with 'programs'")
        unknown = set(table) - {"programs", "priority"}
        if unknown:
            key = sorted(unknown)[0]
            raise ConfigError(f"{where(key)}: unknown key {key!r}; a group has 'programs' and 'priority'")
        try:
            groups[gname] = list(v.to_names(table.get("programs", ())))
            if "priority" in table:
                group_priority[gname] = v.to_int(table["priority"])
        except ValueError as exc:
            raise ConfigError(f"{where('programs')}: expected {exc}") from None
    programs = []
    listener_tables = data.get("eventlisteners", {})
    if not isinstance(listener_tables, Mapping):
        raise ConfigError(f"{path}: 'eventlisteners' must be a table of [eventlisteners.NAME] tables")
    sections = [("programs", name, table) for name, table in tables.items()]
    sections += [("eventlisteners", name, table) for name, table in listener_tables.items()]
    for kind, name, table in sections:
        where = _toml_where(text, path, f"{kind}.{name}")
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where('')}: must be a table of program settings")
        known = {**PROGRAM_KEYS, **LISTENER_KEYS} if kind == "eventlisteners" else PROGRAM_KEYS
        for key in table:
            if key not in known:
                raise ConfigError(f"{where(key)}: unknown program key {key!r}" + _suggest(key, known))
        raw = dict(table)
        for gname, members in groups.items():
            if name in members and gname in group_priority:
                raw.setdefault("priority", group_priority[gname])
        programs.append(build_program(name, raw, here=here, origin=where(""), where=where,
                                      listener=kind == "eventlisteners"))
    check_programs(programs, groups, path)
    return programs, groups


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""  # only used to find line numbers


def _toml_where(text: str, path: str, table: str) -> Callable[[str], str]:
    dotted = r"\s*\.\s*".join(re.escape(part) for part in table.split("."))
    header = re.search(rf"^\s*\[\s*{dotted}\s*\]", text, re.MULTILINE)

    def where(key: str) -> str:
        line = None
        if header:
            line = text.count("\n", 0, header.start()) + 1
            nxt = re.compile(r"^\s*\[", re.MULTILINE).search(text, header.end())
            key_re = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=", re.MULTILINE)
            found = key_re.search(text, header.end(), nxt.start() if nxt else len(text)) if key else None
            if found:
                line = text.count("\n", 0, found.start()) + 1
        place = f"{path}:{line}" if line else path
        return f"{place}: [{table}]" + (f" {key}" if key else "")

    return where


def load_supervisor_ini(path: str) -> IniResult:
    """Read a supervisord.conf: `(programs, groups, supervisord_options, warnings)`.

    See `arbiter.programs.ini.load`, which this calls.
    """
    from arbiter.programs import ini  # ini builds on this module, so it is imported late

    return ini.load(path)
