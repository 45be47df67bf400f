"""One supervised process's life: its one record (configuration, state, intent, timers, child,
output), fed to the pure state machine, whose actions it carries out: spawn, signal, timers.

`Process` knows nothing of the other processes; `processes.ProcessSet` orders them and
`manager.ProgramManager` decides when to feed each one (`intent.next_step`).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import subprocess
import time
from collections.abc import Callable
from typing import Any

from arbiter.programs import process
from arbiter.programs import states as st
from arbiter.programs.config import ProcessSpec
from arbiter.programs.intent import NOTHING, Intent
from arbiter.programs.output import ProcessOutput
from arbiter.programs.state_events import Change, changes

S = st.ProcessStates


class Process:
    """One process: what it is (`spec`, and the `rules` it runs under), where it is (`record`,
    the state machine's), what is wanted of it (`intent`), and its child and output.

    `spec` is always the newest configuration; `rules` and `output` are those of the child that
    runs, and catch up with `spec` when a replaced process is stopped (`take_up`).

    Args:
        order: a tie-breaker after priority: the order processes were made in.
        on_spawn: called with each new child's pid (the set maps pids to processes).
        on_change: called with the states each event took it through (for PROCESS_STATE_*),
            before the actions that follow are carried out, so events keep their order.
    """

    def __init__(self, spec: ProcessSpec, order: int, output: ProcessOutput,
                 clock: Callable[[], float], log: logging.Logger,
                 on_spawn: Callable[[Process, int], None] = lambda proc, pid: None,
                 on_change: Callable[[Process, list[Change]], None] = lambda proc, changes: None) -> None:
        self.spec = spec
        self.rules = spec.rules
        self.order = order
        self.record = st.ProcessRecord()
        self.intent: Intent = NOTHING
        self.output = output
        self.popen: subprocess.Popen[bytes] | None = None
        self.timers: dict[type, tuple[float, st.TimerEvent]] = {}
        self.started_wall = 0.0
        self.stopped_wall = 0.0
        self.spawns = 0
        self.starttime = 0  # of its child, from /proc (see registry): names it for good
        self.warned_blocked = False  # "not starting x yet" is said once per wait
        self.extra_env: dict[str, str] = {}  # SUPERVISOR_SERVER_URL and such, from the master
        self._clock = clock
        self._log = log
        self._on_spawn = on_spawn
        self._on_change = on_change

    @property
    def priority(self) -> int:
        return self.spec.program.priority

    @property
    def state(self) -> S:
        return self.record.state

    @property
    def fullname(self) -> str:
        return self.spec.fullname

    # ---- events -----------------------------------------------------------------------------

    def feed(self, event: st.Event, *, shutting_down: bool = False) -> list[st.Refused]:
        """Give `event` to the state machine and carry out its actions; the refusals it made."""
        before = self.record
        self.record, actions = st.transition(before, event, self._clock(), self.rules,
                                             shutting_down=shutting_down)
        if self.record.state is not before.state or isinstance(event, st.Exited):
            entered = changes(before, self.record, event, self.rules)
            if entered:
                self._on_change(self, entered)
        refused = []
        for action in actions:
            if isinstance(action, st.Log):
                self._log.log(action.level, action.message)
            elif isinstance(action, st.ScheduleTimer):
                self.timers[type(action.event)] = (action.at, action.event)
            elif isinstance(action, st.SendSignal):
                problem = process.send_signal(self.record.pid, action.sig, action.to_group)
                if problem is not None:
                    self.feed(st.SignalFailed(problem), shutting_down=shutting_down)
            elif isinstance(action, st.Spawn):
                self._spawn(shutting_down)
            elif isinstance(action, st.Refused):
                refused.append(action)
        return refused

    def exited(self, status: int, *, shutting_down: bool = False) -> None:
        """Its child was reaped with raw wait `status`."""
        if self.popen is not None:
            process.set_returncode(self.popen, status)
            self.popen = None
        self.output.drain()  # its last lines belong before the "exited:" line
        self.stopped_wall = time.time()
        self.feed(st.Exited(status), shutting_down=shutting_down)

    def next_deadline(self) -> float | None:
        return min((at for at, _ in self.timers.values()), default=None)

    def run_timers(self, now: float, *, shutting_down: bool = False) -> None:
        """Feed every timer due by `now`, earliest first; one a later event replaced is skipped."""
        for kind, (at, event) in sorted(self.timers.items(), key=lambda item: item[1][0]):
            if at <= now and self.timers.get(kind) == (at, event):
                del self.timers[kind]
                self.feed(event, shutting_down=shutting_down)

    def _spawn(self, shutting_down: bool) -> None:
        spec = self.spec
        try:
            pipes = self.output.open_pipes()
        except OSError as exc:
            self.feed(st.SpawnFailed(f"unknown error making pipes for '{spec.name}': {exc.strerror}"),
                      shutting_down=shutting_down)
            return
        try:
            popen = process.spawn(spec, pipes.stdout, pipes.stderr, process.environment(spec, extra=self.extra_env),
                                  stdin=pipes.stdin)
        except process.CannotSpawn as exc:
            pipes.close_all()
            self.feed(st.SpawnFailed(str(exc)), shutting_down=shutting_down)
            return
        self.output.attach(pipes, popen.pid)
        self.popen = popen
        self.started_wall = time.time()
        self.spawns += 1
        self._on_spawn(self, popen.pid)
        self.feed(st.Spawned(popen.pid), shutting_down=shutting_down)

    def adopt(self, pid: int, state: str, started_wall: float, starttime: int, fds: dict[str, int],
              stdin_fd: int, logpaths: dict[str, str]) -> None:
        """Take over child `pid` that the previous image of this master ran (an in-place
        upgrade): its state, its uptime (from the wall-clock start; the monotonic clock goes on
        across exec) and its pipes. No state is entered: no event is sent."""
        age = max(0.0, time.time() - started_wall)
        laststart = self._clock() - age
        entered = st.ProcessStates.STARTING if state == "STARTING" else st.ProcessStates.RUNNING
        self.record = st.ProcessRecord(state=entered, pid=pid, laststart=laststart)
        if entered is st.ProcessStates.STARTING:
            # STARTING -> RUNNING once startsecs have passed since the spawn, as before.
            at = laststart + self.rules.startsecs
            self.record = dataclasses.replace(self.record, delay=at)
            self.timers[st.StartsecsElapsed] = (at, st.StartsecsElapsed())
        self.started_wall, self.starttime, self.spawns = started_wall, starttime, 1
        self.output.adopt(fds, stdin_fd, pid, logpaths)

    # ---- a changed configuration -----------------------------------------------------------

    def end_output(self) -> None:
        """Its stop is over and it is being forgotten or replaced: drop the last stop's timers,
        close its pipes and log files."""
        self.timers.clear()
        self.output.close()

    def take_up(self, output: ProcessOutput) -> None:
        """Run from now on under `spec`'s rules, with `output` made for it."""
        self.end_output()
        self.rules = self.spec.rules
        self.output = output
        self.warned_blocked = False

    # ---- status -----------------------------------------------------------------------------

    def row(self, now: float, now_wall: float) -> dict[str, Any]:
        """Supervisor's getProcessInfo fields (times in epoch seconds, 0 if never) plus
        `fullname`, `program`, `uptime` (seconds), `restarts` and `log_dropped_bytes`."""
        rec = self.record
        alive = rec.pid != 0 and rec.laststart is not None
        uptime = max(0.0, now - rec.laststart) if alive and rec.laststart is not None else 0.0
        spec, paths = self.spec, self.output.logpaths
        return {
            "name": spec.name, "group": spec.group, "fullname": spec.fullname,
            "program": spec.program.name, "state": int(rec.state),
            "statename": rec.state.name, "pid": rec.pid, "start": int(self.started_wall),
            "stop": int(self.stopped_wall), "now": int(now_wall), "uptime": uptime,
            "exitstatus": rec.exitstatus or 0, "spawnerr": rec.spawnerr,
            "description": self._describe(uptime),
            "logfile": paths.get("stdout", ""),
            "stdout_logfile": paths.get("stdout", ""),
            "stderr_logfile": paths.get("stderr", ""),
            "log_dropped_bytes": self.output.dropped_bytes,
            "restarts": max(0, self.spawns - 1),
        }

    def _describe(self, uptime: float) -> str:
        """The description column of `supervisorctl status`."""
        rec = self.record
        if rec.state is S.RUNNING:
            return f"pid {rec.pid}, uptime {datetime.timedelta(seconds=int(uptime))}"
        if rec.state in (S.BACKOFF, S.FATAL):
            return rec.spawnerr or 'unknown error (try "tail" for more info)'
        if rec.state in (S.STOPPED, S.EXITED):
            if rec.laststart is None:
                return "Not started"
            when = self.stopped_wall or self.started_wall
            return datetime.datetime.fromtimestamp(when).strftime("%b %d %I:%M %p")
        return ""
