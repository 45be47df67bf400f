"""Changing what runs without restarting the master: supervisorctl's reread (`diff`), update,
add and remove. `ProgramManager` keeps thin methods that call these.

A configuration is compared group by group, as Supervisor's reread does (a program outside an
explicit group is a group of its own), but applied process by process, where Supervisor
restarts a whole changed group:

- A process whose settings changed (`process_key`) is stopped as usual (stopsignal,
  stopwaitsecs, then SIGKILL) and, once stopped, takes up its new settings, log files
  included, and starts again if it was started or has autostart.
- A process whose settings did not change keeps running, untouched.
- A process that is no longer configured (a removed group, a smaller numprocs) is stopped and
  forgotten once stopped. Until then it still shows in `status()`, but no name selects it, and
  a new process of the same full name takes it over rather than run beside it.

Nothing here feeds a state machine or waits: it only sets each process's `intent` (REMOVE,
REPLACE, START), and the manager carries intents out on its next turn (`intent.next_step`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from arbiter.errors import ConfigError
from arbiter.programs import errors
from arbiter.programs import states as st
from arbiter.programs.child import Process
from arbiter.programs.config import (
    ProcessSpec,
    ProgramConfig,
    check_cycles,
    check_programs,
)
from arbiter.programs.intent import Intent, Want, queue_start, was_started
from arbiter.programs.processes import ProcessSet

# Settings already compared through the expanded fields of `ProcessSpec` (`command` is `argv`,
# and so on), or that only say where the configuration came from: a change to them alone
# restarts nothing. So a numprocs change leaves the processes that stay alone.
_SEEN_EXPANDED = frozenset({
    "command", "process_name", "directory", "environment", "stdout_logfile", "stderr_logfile",
    "numprocs", "numprocs_start", "here", "origin",
})

Plan = dict[str, dict[str, ProcessSpec]]  # group -> process name -> spec


@dataclass(frozen=True)
class Diff:
    """What a new configuration changes (or what an update did), by group name."""

    added: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, list[str]]:
        return {"added": list(self.added), "changed": list(self.changed), "removed": list(self.removed)}


def process_key(spec: ProcessSpec) -> tuple[Any, ...]:
    """What decides whether a process must be restarted to take up a new configuration."""
    program = spec.program
    settings = tuple((f.name, getattr(program, f.name))
                     for f in dataclasses.fields(program) if f.name not in _SEEN_EXPANDED)
    return (spec.name, spec.group, spec.process_num, spec.argv, spec.directory,
            tuple(sorted(spec.environment.items())), spec.stdout_logfile, spec.stderr_logfile,
            settings)


# ---- reread, update, add, remove -----------------------------------------------------------


def diff(procs: ProcessSet, programs: Sequence[ProgramConfig],
         groups: Mapping[str, Sequence[str]]) -> Diff:
    """Groups added, changed and removed by the new configuration, each sorted by name.

    Raises:
        ConfigError: the new configuration does not hold together (`config.check_programs`).
    """
    return _diff(_specs(_active(procs)), _plan(programs, groups))


def apply(procs: ProcessSet, log: logging.Logger, programs: Sequence[ProgramConfig],
          groups: Mapping[str, Sequence[str]], names: Sequence[str] | None = None) -> Diff:
    """Apply the new configuration to every group, or only to the groups `names` (None or
    empty: every group, as `supervisorctl update` without names).

    Added groups are made and their autostart processes queued to start; removed groups marked
    to stop and be forgotten once stopped; changed groups changed process by process (see the
    module). This only records intents: the manager carries them out (`intent.next_step`).
    Nothing is changed when it raises.

    Returns:
        What it did: the part of `diff` it applied. A group named but unchanged is not in it.

    Raises:
        ConfigError: the new configuration does not hold together.
        BadName: a name that is a group of neither the running nor the new configuration.
        Failed: applying only `names` would leave a depends_on unmet or circular.
    """
    active, plan = _active(procs), _plan(programs, groups)
    result = _specs(active)
    found = _diff(result, plan)
    if names:
        unknown = [name for name in names if name not in active and name not in plan]
        if unknown:
            raise errors.BadName(f"{unknown[0]}: no such group in the running or the new configuration")
        found = Diff(*(tuple(g for g in part if g in names) for part in (found.added, found.changed, found.removed)))
    for group in found.removed:
        del result[group]
    result.update({group: plan[group] for group in found.added + found.changed})
    _check_dependencies(result)
    for group in found.removed:
        log.info("removing process group %s: stopping it", group)
        for proc in active[group].values():
            _retire(proc)
    for group in found.changed:
        log.info("updating process group %s", group)
        _apply_group(procs, log, active[group], plan[group])
    for group in found.added:
        log.info("adding process group %s", group)
        _apply_group(procs, log, {}, plan[group])
    procs.reindex()
    return found


def add_group(procs: ProcessSet, log: logging.Logger, name: str, programs: Sequence[ProgramConfig],
              groups: Mapping[str, Sequence[str]]) -> None:
    """supervisorctl `add`: make group `name` of the new configuration active, and queue the
    start of its autostart processes.

    Raises:
        ConfigError; AlreadyAdded: `name` is active (even if changed: that is `update`);
        BadName: `name` is no group of the new configuration; Failed: a depends_on on a
        program that is not active.
    """
    active, plan = _active(procs), _plan(programs, groups)
    if name in active:
        raise errors.AlreadyAdded(f"{name}: process group already active")
    if name not in plan:
        raise errors.BadName(f"{name}: no such group in the new configuration")
    _check_dependencies({**_specs(active), name: plan[name]})
    log.info("adding process group %s", name)
    _apply_group(procs, log, {}, plan[name])
    procs.reindex()


def remove_group(procs: ProcessSet, name: str) -> None:
    """supervisorctl `remove`: mark group `name` to be forgotten; every process of it must be
    stopped (STOPPED, EXITED, FATAL or UNKNOWN, as for Supervisor). A start still waiting for
    depends_on is dropped.

    Raises:
        BadName: no such active group. StillRunning: a process of it is not stopped.
        Failed: an active program outside it depends on a program in it.
    """
    active = _active(procs)
    if name not in active:
        raise errors.BadName(f"{name}: no such process group")
    running = [p.spec.fullname for p in active[name].values() if p.state not in st.STOPPED_STATES]
    if running:
        raise errors.StillRunning(f"{name}: {', '.join(running)} not stopped yet; stop the group first")
    _check_dependencies({g: members for g, members in _specs(active).items() if g != name})
    for proc in active[name].values():
        _retire(proc)
    procs.reindex()


def _apply_group(procs: ProcessSet, log: logging.Logger, old: Mapping[str, Process],
                 new: Mapping[str, ProcessSpec]) -> None:
    """Turn the processes `old` of one group into `new`, restarting only what changed."""
    for name, gone in old.items():
        if name not in new:
            _retire(gone)
    for name, spec in new.items():
        proc = old.get(name)
        if proc is None:
            _add_process(procs, log, spec)
        elif process_key(proc.spec) == process_key(spec):
            proc.spec = spec  # the same settings: it goes on running
        else:
            log.info("changed: %s", spec.fullname)
            _replace(proc, spec, start=was_started(proc.intent, proc.record) or spec.program.autostart)


def _add_process(procs: ProcessSet, log: logging.Logger, spec: ProcessSpec) -> None:
    # One still stopping after its removal is taken over, so a full name is never run twice.
    for proc in procs:
        if proc.intent.want is Want.REMOVE and (proc.spec.group, proc.spec.name) == (spec.group, spec.name):
            log.info("added: %s (it takes over the one still stopping)", spec.fullname)
            _replace(proc, spec, start=spec.program.autostart)
            return
    proc = procs.add(spec)
    if spec.program.autostart:
        proc.intent = queue_start(proc.intent, admin=False)
    log.info("added: %s", spec.fullname)


def _replace(proc: Process, spec: ProcessSpec, *, start: bool) -> None:
    """`proc` answers to `spec` from now on; once stopped it takes up its rules and output, and
    starts then if `start` (`intent.Want.REPLACE`)."""
    proc.spec = spec
    proc.intent = Intent(Want.REPLACE, start=start)


def _retire(proc: Process) -> None:
    proc.intent = Intent(Want.REMOVE)


def _active(procs: ProcessSet) -> dict[str, dict[str, Process]]:
    active: dict[str, dict[str, Process]] = {}
    for proc in procs.active():
        active.setdefault(proc.spec.group, {})[proc.spec.name] = proc
    return active


def _plan(programs: Sequence[ProgramConfig], groups: Mapping[str, Sequence[str]]) -> Plan:
    plan: Plan = {}
    for spec in check_programs(programs, groups, "programs"):
        plan.setdefault(spec.group, {})[spec.name] = spec
    return plan


def _specs(active: Mapping[str, Mapping[str, Process]]) -> Plan:
    return {group: {name: proc.spec for name, proc in members.items()} for group, members in active.items()}


def _diff(old: Plan, new: Plan) -> Diff:
    def keys(members: Mapping[str, ProcessSpec]) -> dict[str, tuple[Any, ...]]:
        return {name: process_key(spec) for name, spec in members.items()}

    return Diff(
        added=tuple(sorted(set(new) - set(old))),
        changed=tuple(sorted(g for g in set(new) & set(old) if keys(old[g]) != keys(new[g]))),
        removed=tuple(sorted(set(old) - set(new))),
    )


def _check_dependencies(result: Mapping[str, Mapping[str, ProcessSpec]]) -> None:
    """Applying only part of a configuration must still leave every depends_on met, once."""
    by_name: dict[str, ProgramConfig] = {}
    for members in result.values():
        for spec in members.values():
            program = by_name.get(spec.program.name, spec.program)
            merged = tuple(dict.fromkeys(program.depends_on + spec.program.depends_on))
            by_name[spec.program.name] = dataclasses.replace(program, depends_on=merged)
    for program in by_name.values():
        for dep in program.depends_on:
            if dep not in by_name:
                raise errors.Failed(f"{program.name} depends_on {dep}, which would not be active; "
                                    f"apply the group of {dep} too, or update every group")
    try:
        check_cycles(by_name, "the configuration applied")
    except ConfigError as exc:
        raise errors.Failed(str(exc)) from None
