"""`ProgramManager`: the one object the master talks to about programs.

It owns every program process, feeds the pure state machine (`states.transition`) with what
happens and carries out the actions it returns. It never blocks and never starts a thread: the
master's loop calls it when a child is reaped, when a pipe is readable (through the selector
handlers it registers), and on every turn (`tick`), with `next_deadline` bounding the wait.
"""

from __future__ import annotations

import functools
import logging
import os
import selectors
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from arbiter import procfs
from arbiter.events.types import Event, due_ticks, group_change
from arbiter.programs import adoption, errors, goals, registry, update, values
from arbiter.programs import states as st
from arbiter.programs.capture import read_pacer
from arbiter.programs.child import Process
from arbiter.programs.config import ProcessSpec, ProgramConfig, check_programs
from arbiter.programs.goals import Progress
from arbiter.programs.intent import (
    NOTHING,
    Step,
    Want,
    after_swap,
    drop_start,
    next_step,
    queue_start,
)
from arbiter.programs.listeners import EventHub
from arbiter.programs.memlog import MemoryLog
from arbiter.programs.output import CHANNELS, MasterStreams, ProcessOutput
from arbiter.programs.processes import ProcessSet
from arbiter.programs.state_events import Change
from arbiter.programs.update import Diff

S = st.ProcessStates
LISTENER_DRAIN = 2.0  # at shutdown, how long listeners may take to handle what is buffered


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
        record_path: where the record of running children is kept (`registry`); a previous
            master's children found there still running are stopped before anything starts.
            None: no record.
        master_pid: the pid the record is kept for (the master's; default: this process).
        child_env: given to every child: where the control API is (SUPERVISOR_SERVER_URL) and
            its credentials, for listeners that call back over XML-RPC.
        upgraded: this master was just exec'd in place: the children the record names are
            taken over (`adoption`) instead of stopped.

    Raises:
        ConfigError: names that do not fit together (see `config.check_programs`).
    """

    def __init__(
        self, programs: Sequence[ProgramConfig], groups: Mapping[str, Sequence[str]],
        selector: selectors.BaseSelector, log: logging.Logger,
        clock: Callable[[], float] = time.monotonic, childlogdir: str | None = None,
        *, stdout_fd: int = 1, stderr_fd: int = 2, record_path: str | None = None,
        master_pid: int | None = None, child_env: Mapping[str, str] | None = None,
        upgraded: bool = False,
    ) -> None:
        self._log = log
        self._clock = clock
        self._selector = selector
        self._childlogdir = childlogdir
        self._master_streams = MasterStreams(selector, log, {"stdout": stdout_fd, "stderr": stderr_fd})
        self._pacer = read_pacer(selector)  # batches reads of busy pipes; see capture.PipeReader
        self._child_env = dict(child_env or {})
        self.events = EventHub(selector, log)
        self._ticks: dict[str, int] = {}
        self._procs = ProcessSet(self._make_process)
        for spec in check_programs(programs, groups, "programs"):
            self._procs.add(spec)
        self._procs.reindex()
        self._sync_pools()
        self._shutting_down = False
        self._drain_until: float | None = None  # see _listeners_busy
        master_pid = os.getpid() if master_pid is None else master_pid
        self._record = registry.Recorder(record_path, master_pid, log)
        self.upgraded = upgraded
        if upgraded:
            entries, saved_events = registry.adoptable(record_path, master_pid, log)
            self._orphans = registry.Orphans(adoption.adopt(self._procs, entries, self.events, log), log)
            if saved_events:
                self.events.restore(saved_events)
            self._record.changed = True
        else:
            self._orphans = registry.Orphans.left_by_predecessor(record_path, master_pid, log)
        self._orphans.begin(clock())

    # ---- what the master loop calls ---------------------------------------------------

    def publish(self, event: Event) -> None:
        """Send `event` to the event listeners subscribed to its type."""
        self.events.publish(event)

    def tick_events(self, now_wall: float) -> None:
        """TICK_5/60/3600 for each wall-clock period boundary crossed since the last call."""
        for event in due_ticks(self._ticks, now_wall):
            self.events.publish(event)

    def start_autostart(self) -> None:
        """Start every autostart program, by priority; one with depends_on waits for those."""
        for group in dict.fromkeys(proc.spec.group for proc in self._procs):
            if not self.upgraded:  # after an upgrade, the listeners knew them already
                self.events.publish(group_change(True, group))
        for proc in self._procs:
            if proc.spec.program.autostart and proc.state is S.STOPPED and proc.record.laststart is None:
                proc.intent = queue_start(proc.intent, admin=False)
                for dep in proc.spec.program.depends_on:
                    if not self._procs.program(dep)[0].spec.program.autostart:
                        self._log.warning("%s waits for %s, which has autostart=false; it starts "
                                          "once %s is RUNNING", proc.spec.name, dep, dep)
        self._pump()

    def owns(self, pid: int) -> bool:
        return self._procs.owns(pid)

    def child_exited(self, pid: int, status: int) -> None:
        """The master reaped `pid` with raw wait `status`."""
        proc = self._procs.reaped(pid)
        if proc is None:
            return
        if proc.output.listener:
            # Its last answers first; then the event it held goes back to its pool, before an
            # autorestart makes it a new child.
            proc.output.drain()
            self.events.exited(proc.fullname)
            proc.output.close_stdin()
        proc.exited(status, shutting_down=self._shutting_down)
        self._record.changed = True
        self._pump()

    def next_deadline(self) -> float | None:
        """The earliest monotonic time a timer is due, or None when none is pending."""
        due = [at for proc in self._procs if (at := proc.next_deadline()) is not None]
        orphans = self._orphans.next_deadline(self._clock())
        if orphans is not None:
            due.append(orphans)
        if self._drain_until is not None and self._procs.next_to_stop():
            due.append(min(self._drain_until, self._clock() + 0.05))
        return min(due) if due else None

    def tick(self) -> None:
        """Run the timers that are due."""
        now = self._clock()
        self._orphans.poll(now)
        for proc in self._procs:
            proc.run_timers(now, shutting_down=self._shutting_down)
        self._pump()

    # ---- control requests -------------------------------------------------------------

    def start(self, name: str) -> None:
        """Start `prog`, `group:prog` or `group:*`; processes already started are left alone
        when several are named.

        Raises:
            BadName, AlreadyStarted, Failed, ShutdownState; SpawnError (one process named:
            several answer through `progress`)
        """
        self._refuse_if_shutting_down()
        procs, single = self._procs.select(name)
        requested = []
        for proc in procs:
            if proc.state in st.STARTED_STATES:
                if single:
                    raise errors.AlreadyStarted(proc.fullname)
                continue
            if proc.state is S.UNKNOWN:
                raise errors.Failed(f"{proc.fullname} is in UNKNOWN state; it may still run")
            if proc.intent.want is Want.REPLACE:
                proc.intent = queue_start(proc.intent, admin=True)  # once the old one stopped
                continue
            if proc.state is S.STOPPING:
                self._feed(proc, st.StartRequested())  # starts again once stopped
                continue
            self._request_start(proc)
            requested.append(proc)
        self._pump()
        if single:  # of several, each answers for itself through `progress`
            self._raise_spawn_errors(requested)

    def stop(self, name: str) -> None:
        """Stop `prog`, `group:prog` or `group:*` (the state machine sends the signals).

        Raises:
            BadName, NotRunning
        """
        procs, single = self._procs.select(name)
        for proc in procs:
            proc.intent, was_queued = drop_start(proc.intent)
            if (was_queued or not single) and proc.state not in st.STARTED_STATES:
                continue  # a start still waiting for depends_on is simply dropped
            self._raise_refusals(self._feed(proc, st.StopRequested()), proc)
        self._pump()

    def restart(self, name: str) -> None:
        """Stop (if running) then start again, without waiting here for either.

        Raises:
            BadName, Failed, ShutdownState; SpawnError (one process named)
        """
        self._refuse_if_shutting_down()
        procs, single = self._procs.select(name)
        requested = []
        for proc in procs:
            if proc.intent.want is Want.REPLACE:
                proc.intent = queue_start(proc.intent, admin=True)
                continue
            proc.intent, _ = drop_start(proc.intent)
            if proc.state in (S.STARTING, S.RUNNING, S.STOPPING) or self._procs.deps_running(proc):
                self._raise_refusals(self._feed(proc, st.RestartRequested()), proc)
            else:
                if proc.state is S.BACKOFF:
                    self._feed(proc, st.StopRequested())
                self._request_start(proc)
            requested.append(proc)
        self._pump()
        if single:
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
        procs, single = self._procs.select(name)
        for proc in procs:
            if not single and proc.state not in st.SIGNALLABLE_STATES:
                continue
            self._raise_refusals(self._feed(proc, st.SignalRequested(number)), proc)

    def stop_all(self) -> None:
        """Begin stopping everything: highest priority number first, a program's dependents
        before it, one wave at a time (as Supervisor stops one group at a time)."""
        self._shutting_down = True
        self._drain_until = None
        for proc in self._procs:
            proc.intent, _ = drop_start(proc.intent)
        self._pump()

    def all_stopped(self) -> bool:
        return self._procs.all_stopped() and not self._orphans.pending

    def status(self) -> list[dict[str, Any]]:
        """Per process, Supervisor's getProcessInfo fields (times in epoch seconds, 0 if never)
        plus `fullname`, `program`, `uptime` (seconds), `restarts` and `log_dropped_bytes`."""
        now_wall, now = time.time(), self._clock()
        return [proc.row(now, now_wall) for proc in self._procs]

    def memory_limits(self) -> list[tuple[str, int, int]]:
        """(name, pid, memory_limit in bytes) of each RUNNING process that has a limit: what the
        master's memory guard samples (over the whole process tree)."""
        return [(proc.fullname, proc.record.pid, proc.spec.program.memory_limit) for proc in self._procs
                if proc.spec.program.memory_limit > 0 and proc.state is S.RUNNING and proc.record.pid]

    def reopen_logs(self) -> None:
        """Reopen every log file (after logrotate moved them away; the master's USR1)."""
        for proc in self._procs:
            proc.output.reopen()

    def hand_over(self) -> list[int]:
        """Before an in-place exec: record every running child with its pipes and the event
        listeners' state (`adoption`), and return the descriptors the next image must inherit.
        Changes nothing else: if the exec fails, this master goes on as before.

        Raises:
            OSError: the record cannot be written (then the upgrade must not go on).
        """
        saved = self.events.export()
        entries = self._record.write(self._procs, events=saved)
        in_flight = sum(len(pool["in_flight"]) for pool in saved["pools"].values())
        buffered = sum(len(pool["buffer"]) for pool in saved["pools"].values())
        self._log.info("Upgrade: handing over %d programs, %d events in flight to listeners and "
                       "%d buffered", len(entries), in_flight, buffered)
        return [fd for entry in entries for fd in entry.fds]

    def close(self) -> None:
        """Read what pipes still hold, then close pipes and log files (the master is exiting)."""
        for proc in self._procs:
            proc.output.close()
        self._record.write(self._procs, closing=True)
        self._master_streams.close()
        if self._pacer is not None:
            self._pacer.close()

    # ---- a changed configuration (supervisorctl reread/update/add/remove; see update.py) ----

    def diff(self, programs: Sequence[ProgramConfig], groups: Mapping[str, Sequence[str]]) -> Diff:
        """What `programs`/`groups` would change, by group name; changes nothing."""
        return update.diff(self._procs, programs, groups)

    def update(self, programs: Sequence[ProgramConfig], groups: Mapping[str, Sequence[str]],
               names: Sequence[str] | None = None) -> Diff:
        """Apply the new configuration to every group, or to the groups `names`; see update.py.

        Raises:
            ShutdownState, and what `update.apply` raises.
        """
        self._refuse_if_shutting_down()
        done = update.apply(self._procs, self._log, programs, groups, names)
        self._sync_pools()
        for group in done.removed:
            self.events.publish(group_change(False, group))
        for group in done.added:
            self.events.publish(group_change(True, group))
        self._pump()
        return done

    def add_group(self, name: str, programs: Sequence[ProgramConfig],
                  groups: Mapping[str, Sequence[str]]) -> None:
        """supervisorctl `add`: make group `name` of the new configuration active."""
        self._refuse_if_shutting_down()
        update.add_group(self._procs, self._log, name, programs, groups)
        self._sync_pools()
        self.events.publish(group_change(True, name))
        self._pump()

    def remove_group(self, name: str) -> None:
        """supervisorctl `remove`: forget group `name`, whose processes must all be stopped."""
        update.remove_group(self._procs, name)
        self._sync_pools()
        self.events.publish(group_change(False, name))
        self._pump()

    # ---- logs, and waiting for a goal -----------------------------------------------------

    def log_path(self, name: str, stream: str) -> str | None:
        """The file the `stream` ("stdout"/"stderr") of the one process `name` goes to; None
        when it is discarded, goes to the master's own stream, or is redirected to stdout.

        Raises:
            BadName: no process, or several, by that name. ValueError: another stream.
        """
        return self._procs.one(name).output.path(_channel(stream))

    def log_memory(self, name: str, stream: str) -> MemoryLog | None:
        """The last output of `stream` of the one process `name` when it goes to no file of its
        own but through the master's stream (`-`): kept in memory for tail; else None.

        Raises:
            BadName: no process, or several, by that name. ValueError: another stream.
        """
        return self._procs.one(name).output.memory.get(_channel(stream))

    def clear_log(self, name: str, stream: str | None = None) -> None:
        """Empty the current log file of `stream` (or of both) of every process `name` names,
        as supervisorctl `clear` does; backups are kept, and the children notice nothing.

        Raises:
            BadName; Failed: a file that cannot be opened; ValueError: another stream.
        """
        channels = CHANNELS if stream is None else (_channel(stream),)
        for proc in self._procs.select(name)[0]:
            for channel in channels:
                try:
                    proc.output.clear(channel)
                except OSError as exc:
                    raise errors.Failed(f"{proc.fullname}: cannot clear its {channel} log "
                                        f"{exc.filename}: {exc.strerror}") from None

    def progress(self, names: Sequence[str], goal: str) -> list[Progress]:
        """For `wait`: where each process named stands against `goal` (see `goals.progress`)."""
        return goals.progress(self._procs, names, goal)

    def settled(self, names: Sequence[str], goal: str) -> bool | None:
        """For `wait`: True when all named reached `goal`, False when one will not, else None."""
        return goals.settled(self.progress(names, goal))

    # ---- carrying out intents -------------------------------------------------------------

    def _feed(self, proc: Process, event: st.Event) -> list[st.Refused]:
        return proc.feed(event, shutting_down=self._shutting_down)

    def _request_start(self, proc: Process) -> None:
        """Queue `proc`, and the programs it depends on that are not started yet."""
        for needed in self._procs.needed(proc):
            if needed.state not in st.STARTED_STATES and needed.intent.want is not Want.START:
                self._request_start(needed)
        proc.intent = queue_start(NOTHING, admin=True)

    def _pump(self) -> None:
        """Carry out every process's intent that may be now (`intent.next_step`), in start
        order; or move the shutdown on."""
        for proc in self._procs:
            self._carry_out(proc, starts=False)
        if self._shutting_down:
            while wave := self._procs.next_to_stop():
                if self._listeners_busy(wave):
                    return
                for proc in wave:
                    self._feed(proc, st.StopRequested())
            return
        for proc in self._procs:
            self._carry_out(proc, starts=True)
        if self._record.changed:
            self._record.write(self._procs)

    def _listeners_busy(self, wave: list[Process]) -> bool:
        """A wave of listeners still has events to handle (the last programs' STOPPED, the
        master's STOPPING): they are stopped once their pools are empty, or after
        LISTENER_DRAIN seconds, so a listener hears about the shutdown it is part of."""
        pools = {proc.spec.program.name for proc in wave if proc.output.listener}
        if len(pools) != len({proc.spec.program.name for proc in wave}):
            return False  # programs in the wave too: nothing to wait for
        if self._drain_until is None:
            self._drain_until = self._clock() + LISTENER_DRAIN
        return self._clock() < self._drain_until and self.events.pending(pools)

    def _carry_out(self, proc: Process, *, starts: bool) -> None:
        while True:
            # A copy a previous master left running is stopped before this one starts.
            may_start = self._procs.deps_running(proc) and not self._orphans.holds(proc.fullname)
            step = next_step(proc.intent, proc.record, deps_running=may_start,
                             shutting_down=self._shutting_down)
            if step is Step.STOP:
                self._feed(proc, st.StopRequested())
            elif step is Step.FORGET:
                proc.end_output()
                self.events.forget(proc.fullname)
                self._procs.forget(proc)
                self._log.info("removed: %s", proc.fullname)
                return
            elif step is Step.SWAP:
                proc.take_up(self._make_output(proc.spec))
                proc.intent = after_swap(proc.intent, shutting_down=self._shutting_down)
            elif step is Step.DROP and starts:
                proc.intent = NOTHING
            elif step is Step.START and starts:
                admin, proc.intent = proc.intent.admin, NOTHING
                self._feed(proc, st.StartRequested(admin=admin))
            else:
                if (starts and step is Step.WAIT and proc.intent.want is Want.START
                        and not proc.warned_blocked and self._procs.blocked(proc)):
                    proc.warned_blocked = True
                    self._log.warning("not starting %s yet: a program it depends on is FATAL",
                                      proc.spec.name)
                return

    # ---- making processes ---------------------------------------------------------------

    def _make_process(self, spec: ProcessSpec, order: int) -> Process:
        proc = Process(spec, order, self._make_output(spec), self._clock, self._log,
                       on_spawn=self._spawned, on_change=self._changed)
        proc.extra_env = self._child_env
        return proc

    def _changed(self, proc: Process, entered: list[Change]) -> None:
        """PROCESS_STATE_* for each state `proc` entered."""
        self.events.state_changed(proc.spec.name, proc.spec.group, entered,
                                  listener=proc.fullname if proc.output.listener else None)

    def _sync_pools(self) -> None:
        """One event pool per listener program configured (its newest configuration)."""
        try:
            self.events.sync_pools(proc.spec.program for proc in self._procs)
        except ValueError as exc:
            raise errors.Failed(str(exc)) from None

    def _spawned(self, proc: Process, pid: int) -> None:
        self._procs.spawned(proc, pid)
        if proc.output.listener:
            self.events.spawned(proc.fullname, proc.spec.program.name, proc.output.stdin_fd)
        found = procfs.stat(pid)
        proc.starttime = found.starttime if found is not None else 0
        self._record.changed = True

    def _make_output(self, spec: ProcessSpec) -> ProcessOutput:
        output = ProcessOutput(spec, self._selector, self._log, self._clock, self._childlogdir,
                               self._master_streams, self._pacer)
        output.publish = self.events.publish
        if output.listener:
            output.protocol = functools.partial(self.events.output, spec.fullname)
        return output

    # ---- faults -------------------------------------------------------------------------

    def _refuse_if_shutting_down(self) -> None:
        if self._shutting_down:
            raise errors.ShutdownState("Arbiter is shutting down")

    @staticmethod
    def _raise_refusals(refused: list[st.Refused], proc: Process) -> None:
        if refused:
            raise errors.BY_FAULT[refused[0].fault](f"{proc.fullname}: {refused[0].message}")

    @staticmethod
    def _raise_spawn_errors(requested: list[Process]) -> None:
        failed = [p for p in requested if p.intent.want is not Want.START
                  and p.state in (S.BACKOFF, S.FATAL) and p.record.spawnerr]
        if failed:
            raise errors.SpawnError("; ".join(f"{p.fullname}: {p.record.spawnerr}" for p in failed))


def _channel(stream: str) -> str:
    if stream not in CHANNELS:
        raise ValueError(f"stream {stream!r}: expected 'stdout' or 'stderr'")
    return stream
