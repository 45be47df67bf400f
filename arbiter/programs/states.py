"""Supervisor's process states, and the pure state machine that moves one process between them.

`transition(record, event, now, rules)` returns the next `ProcessRecord` and the `Action`s the
caller must carry out (spawn, signal, schedule a timer, log a line). It touches no OS and reads
no clock, so every rule is tested with plain numbers for time. The rules and log lines are
Supervisor's (supervisor/process.py), so its users read the same story in our logs:

- STARTING becomes RUNNING once the process has stayed up `startsecs`.
- A process that exits while STARTING goes to BACKOFF and is retried after 1, 2, 3... seconds;
  after `startretries` retries it is FATAL.
- A RUNNING process that exits is EXITED, then restarted as `autorestart` and `exitcodes` say.
- A stop sends `stopsignal`, and SIGKILL every `stopwaitsecs` until the process is gone.

This module imports only the standard library: it is the leaf the rest of `programs` stands on.
"""

from __future__ import annotations

import enum
import logging
import os
import signal
from dataclasses import dataclass, replace


class ProcessStates(enum.IntEnum):
    """Supervisor's state codes; the numbers are part of its XML-RPC API."""

    STOPPED = 0
    STARTING = 10
    RUNNING = 20
    BACKOFF = 30
    STOPPING = 40
    EXITED = 100
    FATAL = 200
    UNKNOWN = 1000


S = ProcessStates
# Supervisor's groupings: "stopped" ends a shutdown; "started" refuses a second start.
STOPPED_STATES = frozenset({S.STOPPED, S.EXITED, S.FATAL, S.UNKNOWN})
STARTED_STATES = frozenset({S.STARTING, S.RUNNING, S.BACKOFF})
SIGNALLABLE_STATES = frozenset({S.STARTING, S.RUNNING, S.STOPPING})

# Supervisor's words for a process that exited within startsecs.
EXITED_TOO_QUICKLY = "Exited too quickly (process log may have details)"
# Supervisor logs "waiting for x to stop" this often while a stop is in progress.
STOP_REPORT_INTERVAL = 2.0
# A SIGKILL that did not end the process is sent again, but not more often than this.
KILL_REPEAT_MIN = 1.0


class Autorestart(enum.Enum):
    NEVER = "false"
    ALWAYS = "true"
    UNEXPECTED = "unexpected"


@dataclass(frozen=True)
class Rules:
    """What the state machine needs to know about one process's configuration."""

    name: str
    startsecs: float = 1
    startretries: int = 3
    autorestart: Autorestart = Autorestart.UNEXPECTED
    exitcodes: frozenset[int] = frozenset({0})
    stopsignal: int = signal.SIGTERM
    stopwaitsecs: float = 10
    stopasgroup: bool = False
    killasgroup: bool = False


@dataclass(frozen=True)
class ProcessRecord:
    """Everything the machine remembers about one process between events.

    `delay` is the time the pending timer of the current state is due (Supervisor's `delay`);
    a timer event that arrives before it belongs to an earlier episode and is ignored.
    """

    state: ProcessStates = S.STOPPED
    pid: int = 0
    backoff: int = 0
    laststart: float | None = None
    laststop: float | None = None
    delay: float = 0.0
    exitstatus: int | None = None
    spawnerr: str = ""
    restart_pending: bool = False


# ---- events -------------------------------------------------------------------------------


@dataclass(frozen=True)
class StartRequested:
    admin: bool = True  # a person asked (resets the retry count), not autostart


@dataclass(frozen=True)
class RestartRequested:
    pass


@dataclass(frozen=True)
class Spawned:
    pid: int


@dataclass(frozen=True)
class SpawnFailed:
    reason: str


@dataclass(frozen=True)
class Exited:
    status: int  # raw wait status, as os.waitpid returns it


@dataclass(frozen=True)
class StopRequested:
    pass


@dataclass(frozen=True)
class SignalRequested:
    sig: int


@dataclass(frozen=True)
class SignalFailed:
    reason: str


@dataclass(frozen=True)
class StartsecsElapsed:
    pass


@dataclass(frozen=True)
class BackoffElapsed:
    pass


@dataclass(frozen=True)
class StopwaitElapsed:
    pass


@dataclass(frozen=True)
class StopReportDue:
    pass


Event = (
    StartRequested | RestartRequested | Spawned | SpawnFailed | Exited | StopRequested
    | SignalRequested | SignalFailed | StartsecsElapsed | BackoffElapsed | StopwaitElapsed
    | StopReportDue
)
TimerEvent = StartsecsElapsed | BackoffElapsed | StopwaitElapsed | StopReportDue

# ---- actions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spawn:
    pass


@dataclass(frozen=True)
class SendSignal:
    sig: int
    to_group: bool


@dataclass(frozen=True)
class ScheduleTimer:
    """Feed `event` back at monotonic time `at`; replaces a pending timer of the same kind."""

    at: float
    event: TimerEvent


@dataclass(frozen=True)
class Log:
    level: int
    message: str


@dataclass(frozen=True)
class Refused:
    """The request does not apply in this state; `fault` names an `errors` code."""

    fault: str
    message: str


Action = Spawn | SendSignal | ScheduleTimer | Log | Refused
Result = tuple[ProcessRecord, list[Action]]


# ---- helpers ------------------------------------------------------------------------------


def signame(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def describe_wait_status(status: int) -> tuple[int, str]:
    """(exit status, or -1 if killed by a signal; the phrase Supervisor logs for it)."""
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        return code, f"exit status {code}"
    if os.WIFSIGNALED(status):
        text = f"terminated by {signame(os.WTERMSIG(status))}"
        return -1, text + (" (core dumped)" if os.WCOREDUMP(status) else "")
    return -1, f"unknown termination cause 0x{status:04x}"


def _secs(value: float) -> str:
    return f"{value:g}"


def _begin_start(record: ProcessRecord, now: float, *, reset_backoff: bool) -> Result:
    new = replace(
        record, state=S.STARTING, laststart=now, spawnerr="", exitstatus=None, delay=0.0,
        restart_pending=False, backoff=0 if reset_backoff else record.backoff,
    )
    return new, [Spawn()]


def _begin_backoff(record: ProcessRecord, now: float, rules: Rules, actions: list[Action]) -> Result:
    backoff = record.backoff + 1
    if backoff > rules.startretries:
        # STARTING -> BACKOFF -> FATAL: the retries are spent (Supervisor passes through
        # BACKOFF on its next turn; we arrive in one step).
        actions.append(Log(logging.INFO, f"gave up: {rules.name} entered FATAL state, "
                                         "too many start retries too quickly"))
        return replace(record, state=S.FATAL, pid=0, backoff=0, delay=0.0), actions
    # STARTING -> BACKOFF: wait 1, 2, 3... seconds, one more each failed attempt.
    delay = now + backoff
    actions.append(ScheduleTimer(delay, BackoffElapsed()))
    return replace(record, state=S.BACKOFF, pid=0, backoff=backoff, delay=delay), actions


def _begin_stop(record: ProcessRecord, now: float, rules: Rules, *, restart: bool) -> Result:
    delay = now + rules.stopwaitsecs
    new = replace(record, state=S.STOPPING, delay=delay, restart_pending=restart)
    group = "process group " if rules.stopasgroup else ""
    return new, [
        Log(logging.DEBUG, f"killing {rules.name} (pid {record.pid}) {group}"
                           f"with signal {signame(rules.stopsignal)}"),
        SendSignal(rules.stopsignal, rules.stopasgroup),
        Log(logging.INFO, f"waiting for {rules.name} to stop"),
        ScheduleTimer(delay, StopwaitElapsed()),
        ScheduleTimer(now + STOP_REPORT_INTERVAL, StopReportDue()),
    ]


def _unchanged(record: ProcessRecord, event: Event, rules: Rules) -> Result:
    # Stale timers and late notices land here: they belong to an earlier episode.
    note = f"{rules.name}: ignored {type(event).__name__} in state {record.state.name}"
    return record, [Log(logging.DEBUG, note)]


# ---- the machine --------------------------------------------------------------------------


def transition(
    record: ProcessRecord, event: Event, now: float, rules: Rules, *, shutting_down: bool = False
) -> Result:
    """The next record and the actions to carry out, in order.

    Args:
        record: the process's current bookkeeping.
        event: what happened.
        now: monotonic time of the event, in seconds.
        rules: the process's configuration.
        shutting_down: no automatic spawns (autorestart, backoff retries, queued restarts),
            as Supervisor starts nothing once it is shutting down.
    """
    state = record.state
    name = rules.name

    if isinstance(event, StartRequested):
        if state in STARTED_STATES:
            return record, [Refused("ALREADY_STARTED", f"{name} is already started")]
        if state is S.STOPPING:
            # STOPPING -> (STOPPED ->) STARTING once the process has exited.
            return replace(record, restart_pending=True), []
        if state is S.UNKNOWN:
            return record, [Refused("FAILED", f"{name} is in UNKNOWN state; it may still run")]
        # STOPPED -> STARTING, EXITED -> STARTING, FATAL -> STARTING
        return _begin_start(record, now, reset_backoff=event.admin)

    if isinstance(event, RestartRequested):
        if state in (S.STARTING, S.RUNNING):
            # RUNNING -> STOPPING, STARTING -> STOPPING; then STOPPED -> STARTING on exit.
            return _begin_stop(record, now, rules, restart=True)
        if state is S.STOPPING:
            return replace(record, restart_pending=True), []
        if state is S.UNKNOWN:
            return record, [Refused("FAILED", f"{name} is in UNKNOWN state; it may still run")]
        # BACKOFF -> STARTING, STOPPED -> STARTING, EXITED -> STARTING, FATAL -> STARTING
        return _begin_start(record, now, reset_backoff=True)

    if isinstance(event, Spawned):
        if state is not S.STARTING:
            return _unchanged(record, event, rules)
        delay = now + rules.startsecs
        return replace(record, pid=event.pid, delay=delay), [
            Log(logging.INFO, f"spawned: '{name}' with pid {event.pid}"),
            ScheduleTimer(delay, StartsecsElapsed()),
        ]

    if isinstance(event, SpawnFailed):
        if state is not S.STARTING:
            return _unchanged(record, event, rules)
        failed = replace(record, spawnerr=event.reason)
        return _begin_backoff(failed, now, rules, [Log(logging.INFO, f"spawnerr: {event.reason}")])

    if isinstance(event, StartsecsElapsed):
        if state is not S.STARTING or not record.pid or record.laststart is None:
            return _unchanged(record, event, rules)
        if now - record.laststart < rules.startsecs:
            return _unchanged(record, event, rules)
        # STARTING -> RUNNING: it stayed up long enough to count as started.
        return replace(record, state=S.RUNNING, backoff=0, delay=0.0), [
            Log(logging.INFO, f"success: {name} entered RUNNING state, process has stayed up "
                              f"for > than {_secs(rules.startsecs)} seconds (startsecs)"),
        ]

    if isinstance(event, BackoffElapsed):
        if state is not S.BACKOFF or now < record.delay or shutting_down:
            return _unchanged(record, event, rules)
        # BACKOFF -> STARTING: the next attempt.
        return _begin_start(record, now, reset_backoff=False)

    if isinstance(event, Exited):
        return _exited(record, event, now, rules, shutting_down)

    if isinstance(event, StopRequested):
        if state in (S.STARTING, S.RUNNING):
            # RUNNING -> STOPPING, STARTING -> STOPPING
            return _begin_stop(record, now, rules, restart=False)
        if state is S.BACKOFF:
            # BACKOFF -> STOPPED: do not make a stop wait for the remaining retries.
            return replace(record, state=S.STOPPED, delay=0.0, restart_pending=False), []
        if state is S.STOPPING and record.restart_pending:
            # A stop after a restart: just do not start it again.
            return replace(record, restart_pending=False), []
        return record, [Refused("NOT_RUNNING", f"{name} is not running")]

    if isinstance(event, StopwaitElapsed):
        if state is not S.STOPPING or now < record.delay:
            return _unchanged(record, event, rules)
        # STOPPING -> STOPPING: SIGKILL, and again every stopwaitsecs until it is reaped (at
        # most once a second, so stopwaitsecs=0 cannot make the master spin).
        delay = now + max(rules.stopwaitsecs, KILL_REPEAT_MIN)
        return replace(record, delay=delay), [
            Log(logging.WARNING, f"killing '{name}' ({record.pid}) with SIGKILL"),
            SendSignal(signal.SIGKILL, rules.killasgroup),
            ScheduleTimer(delay, StopwaitElapsed()),
        ]

    if isinstance(event, StopReportDue):
        if state is not S.STOPPING:
            return _unchanged(record, event, rules)
        return record, [
            Log(logging.INFO, f"waiting for {name} to stop"),
            ScheduleTimer(now + STOP_REPORT_INTERVAL, StopReportDue()),
        ]

    if isinstance(event, SignalRequested):
        if state not in SIGNALLABLE_STATES or not record.pid:
            return record, [Refused("NOT_RUNNING", f"{name} is not running")]
        return record, [
            Log(logging.DEBUG, f"sending {name} (pid {record.pid}) sig {signame(event.sig)}"),
            SendSignal(event.sig, False),
        ]

    if isinstance(event, SignalFailed):
        if not record.pid:
            return _unchanged(record, event, rules)
        # STARTING / RUNNING / STOPPING -> UNKNOWN: we cannot tell whether it still runs.
        return replace(record, state=S.UNKNOWN, delay=0.0, restart_pending=False), [
            Log(logging.CRITICAL, f"unknown problem killing {name} ({record.pid}): {event.reason}"),
        ]

    raise TypeError(f"not a process event: {event!r}")


def _exited(
    record: ProcessRecord, event: Exited, now: float, rules: Rules, shutting_down: bool
) -> Result:
    state = record.state
    name = rules.name
    if not record.pid:
        return _unchanged(record, event, rules)
    code, text = describe_wait_status(event.status)
    expected = code in rules.exitcodes

    if state is S.STOPPING:
        # STOPPING -> STOPPED: the exit we asked for, so INFO whatever its status (as
        # Supervisor logs it): a requested stop is no warning.
        stopped = replace(record, state=S.STOPPED, pid=0, exitstatus=code, laststop=now,
                          delay=0.0, restart_pending=False)
        actions: list[Action] = [Log(logging.INFO, f"stopped: {name} ({text})")]
        if record.restart_pending and not shutting_down:
            # STOPPED -> STARTING: the second half of a restart.
            new, more = _begin_start(stopped, now, reset_backoff=True)
            return new, actions + more
        return stopped, actions

    started = record.laststart if record.laststart is not None else now
    if state is S.STARTING and now - started < rules.startsecs:
        # STARTING -> BACKOFF: it died before startsecs, whatever its exit code.
        failed = replace(record, pid=0, exitstatus=None, laststop=now,
                         spawnerr=EXITED_TOO_QUICKLY)
        log = Log(logging.WARNING, f"exited: {name} ({text}; not expected)")
        return _begin_backoff(failed, now, rules, [log])

    # STARTING -> RUNNING (it outlived startsecs before we noticed), RUNNING -> EXITED,
    # UNKNOWN -> EXITED (it ended after all).
    exited = replace(record, state=S.EXITED, pid=0, exitstatus=code, laststop=now, delay=0.0,
                     backoff=0, spawnerr="" if expected else f"Bad exit code {code}")
    if expected:
        actions = [Log(logging.INFO, f"exited: {name} ({text}; expected)")]
    else:
        actions = [Log(logging.WARNING, f"exited: {name} ({text}; not expected)")]
    restart = rules.autorestart is Autorestart.ALWAYS or (
        rules.autorestart is Autorestart.UNEXPECTED and not expected
    )
    if restart and not shutting_down and state is not S.UNKNOWN:
        # EXITED -> STARTING: autorestart.
        new, more = _begin_start(exited, now, reset_backoff=False)
        return new, actions + more
    return exited, actions


# ---- waiting for a goal -------------------------------------------------------------------


def goal_reached(state: ProcessStates, goal: str, *, starting: bool = False) -> bool | None:
    """Where one process stands against a `wait` goal: True when it is there, False when it
    will not get there by itself (a start failed, or it was stopped), None while it moves.

    Args:
        state: the process's state.
        goal: "running" or "stopped".
        starting: a start is still on its way (queued behind depends_on, or due once a stop
            ends), so a stopped state is not final yet.

    Raises:
        ValueError: another goal.
    """
    if goal == "running":
        if state is S.RUNNING:
            return True
        if state in (S.STARTING, S.BACKOFF) or starting:
            return None  # BACKOFF retries; spent retries end in FATAL
        return False  # FATAL, EXITED, STOPPED, STOPPING, UNKNOWN: no start is coming
    if goal == "stopped":
        if state in (S.STOPPED, S.EXITED, S.FATAL):
            return True
        # UNKNOWN: a signal could not be sent, so no stop is coming either.
        return False if state is S.UNKNOWN else None
    raise ValueError(f"goal {goal!r}: expected 'running' or 'stopped'")
