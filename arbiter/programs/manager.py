"""`ProgramManager`: the one object the master talks to about programs.

It owns every program process, feeds the pure state machine (`states.transition`) with what
happens and carries out the actions it returns. It never blocks and never starts a thread: the
master's loop calls it when a child is reaped, when a pipe is readable (through the selector
handlers it registers), and on every turn (`tick`), with `next_deadline` bounding the wait.
"""

from __future__ import annotations

import datetime
import logging
import selectors
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from arbiter.programs import errors, process, update
from arbiter.programs import states as st
from arbiter.programs import values
from arbiter.programs.capture import read_pacer
from arbiter.programs.config import ProcessSpec, ProgramConfig, check_programs
from arbiter.programs.output import MasterStreams, ProcessOutput
from arbiter.programs.update import Diff

S = st.ProcessStates


class _Process:
    """One process's runtime: its record in the state machine, its child, its output."""

    def __init__(self, spec: ProcessSpec, order: int, output: ProcessOutput) -> None:
        self.spec = spec
        self.rules = spec.rules
        self.order = order
        self.record = st.ProcessRecord()
        self.popen: subprocess.Popen[bytes] | None = None
        self.timers: dict[type, tuple[float, st.TimerEvent]] = {}
        self.output = output
        self.started_wall = 0.0
        self.stopped_wall = 0.0
        self.dependents: list[_Process] = []
        self.warned_blocked = False
        # A configuration update (see `update`): forget it once stopped, or, once stopped,
        # take up `spec` (already the new one) with its rules and output, and start if asked.
        self.removing = False
        self.swap_pending = False
        self.start_after = False

    @property
    def priority(self) -> int:
        return self.spec.program.priority

    @property
    def state(self) -> S:
        return self.record.state


class ProgramManager:
    """Supervises every program process.

    Args:
        programs: the program sections, from either loader.
        groups: group name -> program names (`[group:x] programs=`); other programs are a
            group of their own, named after them.
        selector: the master's selector; pipes are registered with a `handler(key, mask)` as
            their data, for the loop's `key.data(key, mask)`.
        log: where Supervisor's lines go (`spawned: 'x' with pid 42`, ...).
        clock: monotonic seconds; tests pass a fake.
        childlogdir: where AUTO log files are made (default: the temporary directory).
        stdout_fd, stderr_fd: the master's own streams, for `*_logfile=-`.

    Raises:
        ConfigError: names that do not fit together (see `config.check_programs`).
    """

    def __init__(
        self, programs: Sequence[ProgramConfig], groups: Mapping[str, Sequence[str]],
        selector: selectors.BaseSelector, log: logging.Logger,
        clock: Callable[[], float] = time.monotonic, childlogdir: str | None = None,
        *, stdout_fd: int = 1, stderr_fd: int = 2,
    ) -> None:
        self._log = log
        self._clock = clock
        self._selector = selector
        self._childlogdir = childlogdir
        self._master_streams = MasterStreams(selector, log, {"stdout": stdout_fd, "stderr": stderr_fd})
        self._pacer = read_pacer(selector)  # batches reads of busy pipes; see capture.PipeReader
        self._made = 0
        self._procs = [self._make_process(spec) for spec in check_programs(programs, groups, "programs")]
        self._by_program: dict[str, list[_Process]] = {}
        self._reindex()
        self._by_pid: dict[int, _Process] = {}
        self._want_start: dict[_Process, bool] = {}  # waiting for depends_on; value: admin
        self._shutting_down = False

    # ---- what the master loop calls ---------------------------------------------------

    def start_autostart(self) -> None:
        """Start every autostart program, by priority; one with depends_on waits for those."""
        for proc in self._procs:
            if proc.spec.program.autostart and proc.state is S.STOPPED and proc.record.laststart is None:
                self._want_start.setdefault(proc, False)
                for dep in proc.spec.program.depends_on:
                    if not self._by_program[dep][0].spec.program.autostart:
                        self._log.warning("%s waits for %s, which has autostart=false; it starts "
                                          "once %s is RUNNING", proc.spec.name, dep, dep)
        self._pump()

    def owns(self, pid: int) -> bool:
        return pid in self._by_pid

    def child_exited(self, pid: int, status: int) -> None:
        """The master reaped `pid` with raw wait `status`."""
        proc = self._by_pid.pop(pid, None)
        if proc is None:
            return
        if proc.popen is not None:
            process.set_returncode(proc.popen, status)
            proc.popen = None
        proc.output.drain()  # its last lines belong before the "exited:" line
        proc.stopped_wall = time.time()
        self._feed(proc, st.Exited(status))
        self._pump()

    def next_deadline(self) -> float | None:
        """The earliest monotonic time a timer is due, or None when none is pending."""
        due = [at for proc in self._procs for at, _ in proc.timers.values()]
        return min(due) if due else None

    def tick(self) -> None:
        """Run the timers that are due."""
        now = self._clock()
        for proc in self._procs:
            for kind, (at, event) in sorted(proc.timers.items(), key=lambda item: item[1][0]):
                if at <= now and proc.timers.get(kind) == (at, event):
                    del proc.timers[kind]
                    self._feed(proc, event)
        self._pump()

    # ---- control requests -------------------------------------------------------------

    def start(self, name: str) -> None:
        """Start `prog`, `group:prog` or `group:*`; processes already started are left alone
        when several are named.

        Raises:
            BadName, AlreadyStarted, SpawnError, Failed, ShutdownState
        """
        self._refuse_if_shutting_down()
        procs, single = self._select(name)
        requested = []
        for proc in procs:
            if proc.state in st.STARTED_STATES:
                if single:
                    raise errors.AlreadyStarted(proc.spec.fullname)
                continue
            if proc.state is S.UNKNOWN:
                raise errors.Failed(f"{proc.spec.fullname} is in UNKNOWN state; it may still run")
            if proc.swap_pending:
                proc.start_after = True  # with its new configuration, once the old one stopped
                continue
            if proc.state is S.STOPPING:
                self._feed(proc, st.StartRequested())  # starts again once stopped
                continue
            self._request_start(proc)
            requested.append(proc)
        self._pump()
        self._raise_spawn_errors(requested)

    def stop(self, name: str) -> None:
        """Stop `prog`, `group:prog` or `group:*` (the state machine sends the signals).

        Raises:
            BadName, NotRunning
        """
        procs, single = self._select(name)
        for proc in procs:
            was_queued = self._want_start.pop(proc, None) is not None or proc.start_after
            proc.start_after = False
            if (was_queued or not single) and proc.state not in st.STARTED_STATES:
                continue  # a start still waiting for depends_on is simply dropped
            self._raise_refusals(self._feed(proc, st.StopRequested()), proc)
        self._pump()

    def restart(self, name: str) -> None:
        """Stop (if running) then start again, without waiting here for either.

        Raises:
            BadName, SpawnError, Failed, ShutdownState
        """
        self._refuse_if_shutting_down()
        procs, _ = self._select(name)
        requested = []
        for proc in procs:
            self._want_start.pop(proc, None)
            if proc.swap_pending:
                proc.start_after = True
                continue
            if proc.state in (S.STARTING, S.RUNNING, S.STOPPING) or self._deps_running(proc):
                self._raise_refusals(self._feed(proc, st.RestartRequested()), proc)
            else:
                if proc.state is S.BACKOFF:
                    self._feed(proc, st.StopRequested())
                self._request_start(proc)
            requested.append(proc)
        self._pump()
        self._raise_spawn_errors(requested)

    def signal(self, name: str, sig: int | str) -> None:
        """Send `sig` (a number or a name such as HUP) to the processes named.

        Raises:
            BadName, BadSignal, NotRunning
        """
        try:
            number = values.to_signal(sig)
        except ValueError as exc:
            raise errors.BadSignal(f"{sig!r}: expected {exc}") from None
        procs, single = self._select(name)
        for proc in procs:
            if not single and proc.state not in st.SIGNALLABLE_STATES:
                continue
            self._raise_refusals(self._feed(proc, st.SignalRequested(number)), proc)

    def stop_all(self) -> None:
        """Begin stopping everything: highest priority number first, a program's dependents
        before it, one wave at a time (as Supervisor stops one group at a time)."""
        self._shutting_down = True
        self._want_start.clear()
        self._pump()

    def all_stopped(self) -> bool:
        return all(proc.state in st.STOPPED_STATES for proc in self._procs)

    def status(self) -> list[dict[str, Any]]:
        """Per process, Supervisor's getProcessInfo fields (times in epoch seconds, 0 if never)
        plus `fullname`, `program`, `uptime` (seconds) and `log_dropped_bytes`."""
        now_wall, now = time.time(), self._clock()
        rows = []
        for proc in self._procs:
            rec = proc.record
            alive = rec.pid != 0 and rec.laststart is not None
            uptime = max(0.0, now - rec.laststart) if alive and rec.laststart is not None else 0.0
            rows.append({
                "name": proc.spec.name, "group": proc.spec.group, "fullname": proc.spec.fullname,
                "program": proc.spec.program.name, "state": int(rec.state),
                "statename": rec.state.name, "pid": rec.pid, "start": int(proc.started_wall),
                "stop": int(proc.stopped_wall), "now": int(now_wall), "uptime": uptime,
                "exitstatus": rec.exitstatus or 0, "spawnerr": rec.spawnerr,
                "description": _describe(proc, uptime),
                "logfile": proc.output.logpaths.get("stdout", ""),
                "stdout_logfile": proc.output.logpaths.get("stdout", ""),
                "stderr_logfile": proc.output.logpaths.get("stderr", ""),
                "log_dropped_bytes": proc.output.dropped_bytes,
            })
        return rows

    def reopen_logs(self) -> None:
        """Reopen every log file (after logrotate moved them away; the master's USR1)."""
        for proc in self._procs:
            proc.output.reopen()

    def close(self) -> None:
        """Read what pipes still hold, then close pipes and log files (the master is exiting)."""
        for proc in self._procs:
            proc.output.close()
        self._master_streams.close()
        if self._pacer is not None:
            self._pacer.close()

    # ---- a changed configuration (supervisorctl reread/update/add/remove; see update.py) ----

    def diff(self, programs: Sequence[ProgramConfig], groups: Mapping[str, Sequence[str]]) -> Diff:
        """What `programs`/`groups` would change, by group name; changes nothing."""
        return update.diff(self, programs, groups)

    def update(self, programs: Sequence[ProgramConfig], groups: Mapping[str, Sequence[str]],
               names: Sequence[str] | None = None) -> Diff:
        """Apply the new configuration to every group, or to the groups `names`; see update.py."""
        return update.apply(self, programs, groups, names)

    def add_group(self, name: str, programs: Sequence[ProgramConfig],
                  groups: Mapping[str, Sequence[str]]) -> None:
        """supervisorctl `add`: make group `name` of the new configuration active."""
        update.add_group(self, name, programs, groups)

    def remove_group(self, name: str) -> None:
        """supervisorctl `remove`: forget group `name`, whose processes must all be stopped."""
        update.remove_group(self, name)

    # ---- per-process helpers for the control API (see update.py) ------------------------

    def log_path(self, name: str, stream: str) -> str | None:
        """The file `stream` of the one process `name` goes to; None when not kept in a file."""
        return update.log_path(self, name, stream)

    def clear_log(self, name: str, stream: str | None = None) -> None:
        """Empty the log file of `stream` (or both) of the processes named; they go on running."""
        update.clear_log(self, name, stream)

    def settled(self, names: Sequence[str], goal: str) -> bool | None:
        """For `wait`: True when all named reached `goal`, False when one will not, else None."""
        return update.settled(self, names, goal)

    # ---- the state machine ------------------------------------------------------------

    def _feed(self, proc: _Process, event: st.Event) -> list[st.Refused]:
        proc.record, actions = st.transition(
            proc.record, event, self._clock(), proc.rules, shutting_down=self._shutting_down
        )
        refused = []
        for action in actions:
            if isinstance(action, st.Log):
                self._log.log(action.level, action.message)
            elif isinstance(action, st.ScheduleTimer):
                proc.timers[type(action.event)] = (action.at, action.event)
            elif isinstance(action, st.SendSignal):
                problem = process.send_signal(proc.record.pid, action.sig, action.to_group)
                if problem is not None:
                    self._feed(proc, st.SignalFailed(problem))
            elif isinstance(action, st.Spawn):
                self._spawn(proc)
            elif isinstance(action, st.Refused):
                refused.append(action)
        return refused

    def _spawn(self, proc: _Process) -> None:
        spec = proc.spec
        try:
            pipes = proc.output.open_pipes()
        except OSError as exc:
            self._feed(proc, st.SpawnFailed(f"unknown error making pipes for '{spec.name}': {exc.strerror}"))
            return
        try:
            popen = process.spawn(spec, pipes.stdout, pipes.stderr, process.environment(spec))
        except process.CannotSpawn as exc:
            pipes.close_all()
            self._feed(proc, st.SpawnFailed(str(exc)))
            return
        proc.output.attach(pipes)
        proc.popen = popen
        proc.started_wall = time.time()
        self._by_pid[popen.pid] = proc
        self._feed(proc, st.Spawned(popen.pid))

    # ---- ordering: depends_on, priority, shutdown waves --------------------------------

    def _deps_running(self, proc: _Process) -> bool:
        return all(
            needed.state is S.RUNNING
            for dep in proc.spec.program.depends_on for needed in self._by_program[dep]
        )

    def _request_start(self, proc: _Process) -> None:
        """Queue `proc`, and the programs it depends on that are not started yet."""
        for dep in proc.spec.program.depends_on:
            for needed in self._by_program[dep]:
                if needed.state not in st.STARTED_STATES and needed not in self._want_start:
                    self._request_start(needed)
        self._want_start[proc] = True

    def _pump(self) -> None:
        """Settle configuration updates, then start what may start now, or move the shutdown on."""
        update.settle(self)
        if self._shutting_down:
            self._advance_shutdown()
            return
        for proc in sorted(self._want_start, key=lambda p: (p.priority, p.order)):
            if proc.state in st.STARTED_STATES or proc.state is S.STOPPING:
                del self._want_start[proc]
            elif self._deps_running(proc):
                admin = self._want_start.pop(proc)
                self._feed(proc, st.StartRequested(admin=admin))
            elif not proc.warned_blocked and self._blocked(proc):
                proc.warned_blocked = True
                self._log.warning("not starting %s yet: a program it depends on is FATAL",
                                  proc.spec.name)

    def _blocked(self, proc: _Process) -> bool:
        """A program `proc` depends on is FATAL: it will not start until someone starts that."""
        return any(needed.state is S.FATAL
                   for dep in proc.spec.program.depends_on for needed in self._by_program[dep])

    def _advance_shutdown(self) -> None:
        while not any(proc.state is S.STOPPING for proc in self._procs):
            live = [proc for proc in self._procs if proc.state in st.STARTED_STATES]
            if not live:
                return
            free = [p for p in live if not any(d in live for d in p.dependents)] or live
            top = max(p.priority for p in free)
            for proc in free:
                if proc.priority == top:
                    self._feed(proc, st.StopRequested())

    # ---- the set of processes -----------------------------------------------------------

    def _make_process(self, spec: ProcessSpec) -> _Process:
        self._made += 1
        return _Process(spec, self._made, self._make_output(spec))

    def _make_output(self, spec: ProcessSpec) -> ProcessOutput:
        return ProcessOutput(spec, self._selector, self._log, self._clock, self._childlogdir,
                             self._master_streams, self._pacer)

    def _reindex(self) -> None:
        """Order by priority; map program names and dependents, leaving out what is removed."""
        self._procs.sort(key=lambda p: (p.priority, p.order))
        self._by_program = {}
        for proc in self._procs:
            proc.dependents = []
            if not proc.removing:
                self._by_program.setdefault(proc.spec.program.name, []).append(proc)
        for proc in self._procs:
            for dep in proc.spec.program.depends_on if not proc.removing else ():
                for needed in self._by_program[dep]:
                    needed.dependents.append(proc)

    # ---- names and faults ---------------------------------------------------------------

    def _select(self, name: str, include_removing: bool = False) -> tuple[list[_Process], bool]:
        """The processes `name` means, and whether it named exactly one process. Processes of
        a removed group, still stopping, are left out unless `include_removing`."""
        procs = [p for p in self._procs if include_removing or not p.removing]
        if ":" in name:
            group, _, rest = name.partition(":")
            members = [p for p in procs if p.spec.group == group]
            if members and rest in ("", "*"):
                return members, False
            chosen = [p for p in members if p.spec.name == rest]
            if chosen:
                return chosen, True
            chosen = [p for p in members if p.spec.program.name == rest]
        else:
            chosen = [p for p in procs if p.spec.name == name]
            if len(chosen) == 1:
                return chosen, True
            chosen = chosen or [p for p in procs if p.spec.program.name == name] or [
                p for p in procs if p.spec.group == name]
        if not chosen:
            raise errors.BadName(name)
        return chosen, False

    def _refuse_if_shutting_down(self) -> None:
        if self._shutting_down:
            raise errors.ShutdownState("Arbiter is shutting down")

    @staticmethod
    def _raise_refusals(refused: list[st.Refused], proc: _Process) -> None:
        if refused:
            raise errors.BY_FAULT[refused[0].fault](f"{proc.spec.fullname}: {refused[0].message}")

    def _raise_spawn_errors(self, requested: list[_Process]) -> None:
        failed = [p for p in requested
                  if p not in self._want_start and p.state in (S.BACKOFF, S.FATAL) and p.record.spawnerr]
        if failed:
            raise errors.SpawnError("; ".join(f"{p.spec.fullname}: {p.record.spawnerr}" for p in failed))


def _describe(proc: _Process, uptime: float) -> str:
    """The description column of `supervisorctl status`."""
    rec = proc.record
    if rec.state is S.RUNNING:
        return f"pid {rec.pid}, uptime {datetime.timedelta(seconds=int(uptime))}"
    if rec.state in (S.BACKOFF, S.FATAL):
        return rec.spawnerr or 'unknown error (try "tail" for more info)'
    if rec.state in (S.STOPPED, S.EXITED):
        if rec.laststart is None:
            return "Not started"
        when = proc.stopped_wall or proc.started_wall
        return datetime.datetime.fromtimestamp(when).strftime("%b %d %I:%M %p")
    return ""
