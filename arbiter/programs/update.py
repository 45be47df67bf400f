"""Changing what runs without restarting the master: supervisorctl's reread (`diff`), update,
add and remove, and the per-process helpers the control API uses alongside them (log files,
waiting for a goal). `ProgramManager` keeps thin methods that call these.

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

Nothing here waits: stops are asked for, the master reaps the children (`child_exited`), and
`settle`, run from the manager's `_pump` (so on every `tick`), finishes what was asked.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from arbiter.errors import ConfigError
from arbiter.programs import errors
from arbiter.programs import states as st
from arbiter.programs.config import ProcessSpec, ProgramConfig, _check_cycles, check_programs
from arbiter.programs.output import CHANNELS

if TYPE_CHECKING:
    from arbiter.programs.manager import ProgramManager, _Process

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


def diff(manager: ProgramManager, programs: Sequence[ProgramConfig],
         groups: Mapping[str, Sequence[str]]) -> Diff:
    """Groups added, changed and removed by the new configuration, each sorted by name.

    Raises:
        ConfigError: the new configuration does not hold together (`config.check_programs`).
    """
    return _diff(_specs(_active(manager)), _plan(programs, groups))


def apply(manager: ProgramManager, programs: Sequence[ProgramConfig],
          groups: Mapping[str, Sequence[str]], names: Sequence[str] | None = None) -> Diff:
    """Apply the new configuration to every group, or only to the groups `names` (None or
    empty: every group, as `supervisorctl update` without names).

    Added groups are made and their autostart processes started; removed groups stopped and
    forgotten once stopped; changed groups changed process by process (see the module).
    Nothing is changed when it raises.

    Returns:
        What it did: the part of `diff` it applied. A group named but unchanged is not in it.

    Raises:
        ConfigError: the new configuration does not hold together.
        BadName: a name that is a group of neither the running nor the new configuration.
        Failed: applying only `names` would leave a depends_on unmet or circular.
        ShutdownState: the master is shutting down.
    """
    manager._refuse_if_shutting_down()
    active, plan = _active(manager), _plan(programs, groups)
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
    log = manager._log
    for group in found.removed:
        log.info("removing process group %s: stopping it", group)
        for proc in active[group].values():
            _retire(manager, proc)
    for group in found.changed:
        log.info("updating process group %s", group)
        _apply_group(manager, active[group], plan[group])
    for group in found.added:
        log.info("adding process group %s", group)
        _apply_group(manager, {}, plan[group])
    manager._reindex()
    manager._pump()
    return found


def add_group(manager: ProgramManager, name: str, programs: Sequence[ProgramConfig],
              groups: Mapping[str, Sequence[str]]) -> None:
    """supervisorctl `add`: make group `name` of the new configuration active, and start its
    autostart processes.

    Raises:
        ConfigError, ShutdownState; AlreadyAdded: `name` is active (even if changed: that is
        `update`); BadName: `name` is no group of the new configuration; Failed: a depends_on
        on a program that is not active.
    """
    manager._refuse_if_shutting_down()
    active, plan = _active(manager), _plan(programs, groups)
    if name in active:
        raise errors.AlreadyAdded(f"{name}: process group already active")
    if name not in plan:
        raise errors.BadName(f"{name}: no such group in the new configuration")
    _check_dependencies({**_specs(active), name: plan[name]})
    manager._log.info("adding process group %s", name)
    _apply_group(manager, {}, plan[name])
    manager._reindex()
    manager._pump()


def remove_group(manager: ProgramManager, name: str) -> None:
    """supervisorctl `remove`: forget group `name` now; every process of it must be stopped
    (STOPPED, EXITED, FATAL or UNKNOWN, as for Supervisor). A start still waiting for
    depends_on is dropped.

    Raises:
        BadName: no such active group. StillRunning: a process of it is not stopped.
        Failed: an active program outside it depends on a program in it.
    """
    active = _active(manager)
    if name not in active:
        raise errors.BadName(f"{name}: no such process group")
    running = [p.spec.fullname for p in active[name].values() if p.state not in st.STOPPED_STATES]
    if running:
        raise errors.StillRunning(f"{name}: {', '.join(running)} not stopped yet; stop the group first")
    _check_dependencies({g: members for g, members in _specs(active).items() if g != name})
    for proc in active[name].values():
        _retire(manager, proc)
    manager._reindex()
    manager._pump()


def settle(manager: ProgramManager) -> None:
    """Finish what an update asked of processes that are stopped now: forget the removed ones,
    and give the changed ones their new rules and output, then queue their start."""
    for proc in list(manager._procs):
        if proc.state not in st.STOPPED_STATES or not (proc.removing or proc.swap_pending):
            continue
        proc.timers.clear()  # of the last stop, now over
        proc.output.close()
        if proc.removing:
            manager._procs.remove(proc)
            manager._want_start.pop(proc, None)
            if manager._by_pid.get(proc.record.pid) is proc:
                del manager._by_pid[proc.record.pid]  # UNKNOWN: forgotten, as Supervisor does
            manager._log.info("removed: %s", proc.spec.fullname)
            continue
        proc.swap_pending = False
        proc.rules = proc.spec.rules
        proc.output = manager._make_output(proc.spec)
        proc.warned_blocked = False
        if proc.start_after and not manager._shutting_down:
            manager._want_start[proc] = True  # a new configuration starts with a fresh retry count
        proc.start_after = False


def _apply_group(manager: ProgramManager, old: Mapping[str, _Process], new: Mapping[str, ProcessSpec]) -> None:
    """Turn the processes `old` of one group into `new`, restarting only what changed."""
    for name, gone in old.items():
        if name not in new:
            _retire(manager, gone)
    for name, spec in new.items():
        proc = old.get(name)
        if proc is None:
            _add_process(manager, spec)
        elif process_key(proc.spec) == process_key(spec):
            proc.spec = spec  # the same settings: it goes on running
        else:
            manager._log.info("changed: %s", spec.fullname)
            _replace(manager, proc, spec, start=_was_started(manager, proc) or spec.program.autostart)


def _add_process(manager: ProgramManager, spec: ProcessSpec) -> None:
    # One still stopping after its removal is taken over, so a full name is never run twice.
    for proc in manager._procs:
        if proc.removing and (proc.spec.group, proc.spec.name) == (spec.group, spec.name):
            manager._log.info("added: %s (it takes over the one still stopping)", spec.fullname)
            proc.removing = False
            _replace(manager, proc, spec, start=spec.program.autostart)
            return
    proc = manager._make_process(spec)
    manager._procs.append(proc)
    if spec.program.autostart:
        manager._want_start[proc] = False
    manager._log.info("added: %s", spec.fullname)


def _replace(manager: ProgramManager, proc: _Process, spec: ProcessSpec, *, start: bool) -> None:
    """Stop `proc` (if it runs); `settle` gives it `spec` once it is stopped, and starts it
    then if `start`."""
    manager._want_start.pop(proc, None)
    proc.spec = spec
    proc.swap_pending, proc.start_after = True, start
    _stop(manager, proc)


def _retire(manager: ProgramManager, proc: _Process) -> None:
    manager._want_start.pop(proc, None)
    proc.removing, proc.swap_pending, proc.start_after = True, False, False
    _stop(manager, proc)


def _stop(manager: ProgramManager, proc: _Process) -> None:
    # A restart in progress must not spawn again with the old settings: StopRequested drops it.
    if proc.state in st.STARTED_STATES or (proc.state is st.ProcessStates.STOPPING and proc.record.restart_pending):
        manager._feed(proc, st.StopRequested())


def _was_started(manager: ProgramManager, proc: _Process) -> bool:
    return (proc.state in st.STARTED_STATES or proc in manager._want_start or proc.start_after
            or (proc.state is st.ProcessStates.STOPPING and proc.record.restart_pending))


def _active(manager: ProgramManager) -> dict[str, dict[str, _Process]]:
    active: dict[str, dict[str, _Process]] = {}
    for proc in manager._procs:
        if not proc.removing:
            active.setdefault(proc.spec.group, {})[proc.spec.name] = proc
    return active


def _plan(programs: Sequence[ProgramConfig], groups: Mapping[str, Sequence[str]]) -> Plan:
    plan: Plan = {}
    for spec in check_programs(programs, groups, "programs"):
        plan.setdefault(spec.group, {})[spec.name] = spec
    return plan


def _specs(active: Mapping[str, Mapping[str, _Process]]) -> Plan:
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
        _check_cycles(by_name, "the configuration applied")
    except ConfigError as exc:
        raise errors.Failed(str(exc)) from None


# ---- per-process helpers for the control API -----------------------------------------------


def log_path(manager: ProgramManager, name: str, stream: str) -> str | None:
    """The file the `stream` ("stdout"/"stderr") of the one process `name` goes to; None when
    it is discarded, goes to the master's own stream, or is redirected to stdout.

    Raises:
        BadName: no process, or several, by that name. ValueError: another stream.
    """
    procs, single = manager._select(name)
    if not single and len(procs) != 1:
        raise errors.BadName(f"{name} names {len(procs)} processes; name one of them")
    return procs[0].output.path(_channel(stream))


def clear_log(manager: ProgramManager, name: str, stream: str | None = None) -> None:
    """Empty the current log file of `stream` (or of both) of every process `name` names,
    as supervisorctl `clear` does; backups are kept, and the children notice nothing.

    Raises:
        BadName; Failed: a file that cannot be opened; ValueError: another stream.
    """
    channels = CHANNELS if stream is None else (_channel(stream),)
    for proc in manager._select(name)[0]:
        for channel in channels:
            try:
                proc.output.clear(channel)
            except OSError as exc:
                raise errors.Failed(f"{proc.spec.fullname}: cannot clear its {channel} log "
                                    f"{exc.filename}: {exc.strerror}") from None


def settled(manager: ProgramManager, names: Sequence[str], goal: str) -> bool | None:
    """For `wait`: True once every process named reached `goal` ("running" or "stopped"), False
    as soon as one will not get there by itself (`states.goal_reached`), None until then.

    A process of a removed group still counts while it stops; once forgotten its name is gone.

    Raises:
        BadName: a name that selects nothing. ValueError: another goal.
    """
    verdicts = set()
    for name in names:
        for proc in manager._select(name, include_removing=True)[0]:
            starting = ((proc in manager._want_start and not manager._blocked(proc))
                        or proc.record.restart_pending or proc.start_after)
            verdicts.add(st.goal_reached(proc.state, goal, starting=starting))
    return False if False in verdicts else None if None in verdicts else True


def _channel(stream: str) -> str:
    if stream not in CHANNELS:
        raise ValueError(f"stream {stream!r}: expected 'stdout' or 'stderr'")
    return stream
