"""Every transition of the pure program state machine, on plain numbers for time."""

from __future__ import annotations

import logging
import signal
from dataclasses import replace

import pytest

from arbiter.programs import states as st
from arbiter.programs.states import Autorestart, ProcessRecord, Rules
from arbiter.programs.states import ProcessStates as S

RULES = Rules(name="web", startsecs=1, startretries=3)


def exit_status(code: int) -> int:
    return code << 8  # what waitpid reports for exit(code)


def killed_by(sig: int, core: bool = False) -> int:
    return sig | (0x80 if core else 0)


def logs(actions: list[st.Action]) -> list[str]:
    return [a.message for a in actions if isinstance(a, st.Log) and a.level >= logging.INFO]


def step(record: ProcessRecord, event: st.Event, now: float, rules: Rules = RULES, **kw: bool):
    return st.transition(record, event, now, rules, **kw)


def running(pid: int = 42, at: float = 0.0, rules: Rules = RULES) -> ProcessRecord:
    record, _ = step(ProcessRecord(), st.StartRequested(), at, rules)
    record, _ = step(record, st.Spawned(pid), at, rules)
    record, _ = step(record, st.StartsecsElapsed(), at + rules.startsecs, rules)
    assert record.state is S.RUNNING
    return record


def stopping(rules: Rules = RULES, at: float = 10.0) -> ProcessRecord:
    record, _ = step(running(rules=rules), st.StopRequested(), at, rules)
    assert record.state is S.STOPPING
    return record


def test_state_codes_are_supervisors() -> None:
    assert [(s.name, int(s)) for s in S] == [
        ("STOPPED", 0), ("STARTING", 10), ("RUNNING", 20), ("BACKOFF", 30), ("STOPPING", 40),
        ("EXITED", 100), ("FATAL", 200), ("UNKNOWN", 1000),
    ]


# ---- starting ---------------------------------------------------------------------------


def test_stopped_start_requested_spawns() -> None:
    record, actions = step(ProcessRecord(), st.StartRequested(), 5.0)
    assert record.state is S.STARTING and record.laststart == 5.0
    assert actions == [st.Spawn()]


def test_spawned_logs_pid_and_schedules_startsecs() -> None:
    record, _ = step(ProcessRecord(), st.StartRequested(), 5.0)
    record, actions = step(record, st.Spawned(1234), 5.0)
    assert record.state is S.STARTING and record.pid == 1234
    assert logs(actions) == ["spawned: 'web' with pid 1234"]
    assert st.ScheduleTimer(6.0, st.StartsecsElapsed()) in actions


def test_starting_becomes_running_after_startsecs_not_before() -> None:
    record, _ = step(ProcessRecord(), st.StartRequested(), 0.0)
    record, _ = step(record, st.Spawned(7), 0.0)
    early, actions = step(record, st.StartsecsElapsed(), 0.5)
    assert early.state is S.STARTING and not logs(actions)
    record, actions = step(record, st.StartsecsElapsed(), 1.0)
    assert record.state is S.RUNNING
    assert logs(actions) == [
        "success: web entered RUNNING state, process has stayed up for > than 1 seconds (startsecs)"
    ]


def test_startsecs_zero_is_running_at_once() -> None:
    rules = replace(RULES, startsecs=0)
    record, _ = step(ProcessRecord(), st.StartRequested(), 3.0, rules)
    record, actions = step(record, st.Spawned(7), 3.0, rules)
    assert st.ScheduleTimer(3.0, st.StartsecsElapsed()) in actions
    record, _ = step(record, st.StartsecsElapsed(), 3.0, rules)
    assert record.state is S.RUNNING


def test_spawn_failure_goes_to_backoff_with_reason() -> None:
    record, _ = step(ProcessRecord(), st.StartRequested(), 0.0)
    record, actions = step(record, st.SpawnFailed("can't find command 'nope'"), 0.0)
    assert record.state is S.BACKOFF and record.backoff == 1 and record.delay == 1.0
    assert record.spawnerr == "can't find command 'nope'"
    assert logs(actions) == ["spawnerr: can't find command 'nope'"]
    assert st.ScheduleTimer(1.0, st.BackoffElapsed()) in actions


@pytest.mark.parametrize("code", [0, 1])
def test_exit_during_startsecs_is_backoff_even_when_expected(code: int) -> None:
    record, _ = step(ProcessRecord(), st.StartRequested(), 0.0)
    record, _ = step(record, st.Spawned(7), 0.0)
    record, actions = step(record, st.Exited(exit_status(code)), 0.3)
    assert record.state is S.BACKOFF and record.pid == 0
    assert logs(actions) == [f"exited: web (exit status {code}; not expected)"]
    assert record.spawnerr == "Exited too quickly (process log may have details)"


def test_backoff_retries_after_its_delay_not_before() -> None:
    record, _ = step(ProcessRecord(), st.StartRequested(), 0.0)
    record, _ = step(record, st.SpawnFailed("x"), 0.0)
    early, actions = step(record, st.BackoffElapsed(), 0.9)
    assert early.state is S.BACKOFF and st.Spawn() not in actions
    record, actions = step(record, st.BackoffElapsed(), 1.0)
    assert record.state is S.STARTING and actions == [st.Spawn()]


def test_crash_loop_delays_grow_then_fatal() -> None:
    """Supervisor: wait 1, 2, 3 s; FATAL after startretries retries (startretries + 1 tries)."""
    record, now, delays, tries = ProcessRecord(), 0.0, [], 0
    record, _ = step(record, st.StartRequested(), now)
    while True:
        tries += 1
        record, _ = step(record, st.Spawned(100 + tries), now)
        record, actions = step(record, st.Exited(exit_status(1)), now + 0.1)
        if record.state is S.FATAL:
            break
        delays.append(record.delay - (now + 0.1))
        now = record.delay
        record, _ = step(record, st.BackoffElapsed(), now)
    assert delays == pytest.approx([1, 2, 3]) and tries == 4
    assert logs(actions) == [
        "exited: web (exit status 1; not expected)",
        "gave up: web entered FATAL state, too many start retries too quickly",
    ]
    assert record.backoff == 0 and record.pid == 0


def test_startretries_zero_gives_up_at_first_failure() -> None:
    rules = replace(RULES, startretries=0)
    record, _ = step(ProcessRecord(), st.StartRequested(), 0.0, rules)
    record, actions = step(record, st.SpawnFailed("can't find command 'x'"), 0.0, rules)
    assert record.state is S.FATAL
    assert "gave up: web entered FATAL state, too many start retries too quickly" in logs(actions)


def test_running_resets_backoff_count() -> None:
    record, _ = step(ProcessRecord(), st.StartRequested(), 0.0)
    record, _ = step(record, st.SpawnFailed("x"), 0.0)
    record, _ = step(record, st.BackoffElapsed(), 1.0)
    record, _ = step(record, st.Spawned(9), 1.0)
    record, _ = step(record, st.StartsecsElapsed(), 2.0)
    assert record.state is S.RUNNING and record.backoff == 0


def test_exit_after_startsecs_before_timer_counts_as_running() -> None:
    record, _ = step(ProcessRecord(), st.StartRequested(), 0.0)
    record, _ = step(record, st.Spawned(7), 0.0)
    record, actions = step(record, st.Exited(exit_status(0)), 1.5)
    assert record.state is S.EXITED and record.exitstatus == 0
    assert logs(actions) == ["exited: web (exit status 0; expected)"]


# ---- exits and autorestart ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("autorestart", "exitcodes", "code", "expected", "restarts"),
    [
        (Autorestart.UNEXPECTED, {0}, 0, True, False),
        (Autorestart.UNEXPECTED, {0}, 1, False, True),
        (Autorestart.UNEXPECTED, {0, 2}, 2, True, False),
        (Autorestart.ALWAYS, {0}, 0, True, True),
        (Autorestart.ALWAYS, {0}, 3, False, True),
        (Autorestart.NEVER, {0}, 1, False, False),
        (Autorestart.NEVER, {0}, 0, True, False),
    ],
)
def test_running_exit_then_autorestart(
    autorestart: Autorestart, exitcodes: set[int], code: int, expected: bool, restarts: bool
) -> None:
    rules = replace(RULES, autorestart=autorestart, exitcodes=frozenset(exitcodes))
    record, actions = step(running(rules=rules), st.Exited(exit_status(code)), 50.0, rules)
    word = "expected" if expected else "not expected"
    assert logs(actions) == [f"exited: web (exit status {code}; {word})"]
    if restarts:  # RUNNING -> EXITED -> STARTING
        assert record.state is S.STARTING and actions[-1] == st.Spawn()
    else:
        assert record.state is S.EXITED and record.exitstatus == code and st.Spawn() not in actions
        assert record.spawnerr == ("" if expected else f"Bad exit code {code}")


def test_killed_by_signal_is_never_expected() -> None:
    rules = replace(RULES, autorestart=Autorestart.NEVER)
    record, actions = step(running(rules=rules), st.Exited(killed_by(signal.SIGSEGV, core=True)), 9.0, rules)
    assert record.state is S.EXITED and record.exitstatus == -1
    assert logs(actions) == ["exited: web (terminated by SIGSEGV (core dumped); not expected)"]


def test_describe_wait_status() -> None:
    assert st.describe_wait_status(exit_status(3)) == (3, "exit status 3")
    assert st.describe_wait_status(killed_by(signal.SIGTERM)) == (-1, "terminated by SIGTERM")


def test_no_autorestart_while_shutting_down() -> None:
    record, actions = step(running(), st.Exited(exit_status(1)), 9.0, shutting_down=True)
    assert record.state is S.EXITED and st.Spawn() not in actions


# ---- stopping -----------------------------------------------------------------------------


def test_running_stop_sends_stopsignal_and_schedules_kill() -> None:
    rules = replace(RULES, stopsignal=signal.SIGQUIT, stopwaitsecs=5, stopasgroup=True, killasgroup=True)
    record, actions = step(running(rules=rules), st.StopRequested(), 10.0, rules)
    assert record.state is S.STOPPING and record.delay == 15.0
    assert st.SendSignal(signal.SIGQUIT, True) in actions
    assert st.ScheduleTimer(15.0, st.StopwaitElapsed()) in actions
    assert st.ScheduleTimer(12.0, st.StopReportDue()) in actions
    assert logs(actions) == ["waiting for web to stop"]


def test_starting_stop_goes_to_stopping() -> None:
    record, _ = step(ProcessRecord(), st.StartRequested(), 0.0)
    record, _ = step(record, st.Spawned(7), 0.0)
    record, actions = step(record, st.StopRequested(), 0.2)
    assert record.state is S.STOPPING and st.SendSignal(signal.SIGTERM, False) in actions


# A requested stop is INFO however the process ended (Supervisor logs it so; issue 8 item 16).
@pytest.mark.parametrize(("status", "level"), [(killed_by(signal.SIGTERM), logging.INFO),
                                               (killed_by(signal.SIGKILL), logging.INFO),
                                               (exit_status(3), logging.INFO),
                                               (exit_status(0), logging.INFO)])
def test_stopping_exit_is_stopped(status: int, level: int) -> None:
    record, actions = step(stopping(), st.Exited(status), 11.0)
    assert record.state is S.STOPPED and record.pid == 0
    _, text = st.describe_wait_status(status)
    assert actions == [st.Log(level, f"stopped: web ({text})")]


def test_stopwaitsecs_elapsed_sends_sigkill_to_group_if_killasgroup() -> None:
    rules = replace(RULES, stopwaitsecs=3, killasgroup=True)
    record = stopping(rules)
    early, actions = step(record, st.StopwaitElapsed(), 12.9, rules)
    assert early == record and not any(isinstance(a, st.SendSignal) for a in actions)
    record, actions = step(record, st.StopwaitElapsed(), 13.0, rules)
    assert record.state is S.STOPPING
    assert st.SendSignal(signal.SIGKILL, True) in actions
    assert logs(actions) == ["killing 'web' (42) with SIGKILL"]
    assert st.ScheduleTimer(16.0, st.StopwaitElapsed()) in actions  # and again, if it survives


def test_sigkill_repeats_at_most_once_a_second() -> None:
    rules = replace(RULES, stopwaitsecs=0)
    record = stopping(rules)
    record, actions = step(record, st.StopwaitElapsed(), 10.0, rules)
    assert st.ScheduleTimer(11.0, st.StopwaitElapsed()) in actions


def test_stop_report_repeats_while_stopping_only() -> None:
    record, actions = step(stopping(), st.StopReportDue(), 12.0)
    assert logs(actions) == ["waiting for web to stop"]
    assert st.ScheduleTimer(14.0, st.StopReportDue()) in actions
    stopped, _ = step(record, st.Exited(exit_status(0)), 12.5)
    _, actions = step(stopped, st.StopReportDue(), 14.0)
    assert not logs(actions)


def test_backoff_stop_is_stopped_at_once() -> None:
    record, _ = step(ProcessRecord(), st.StartRequested(), 0.0)
    record, _ = step(record, st.SpawnFailed("x"), 0.0)
    record, actions = step(record, st.StopRequested(), 0.5)
    assert record.state is S.STOPPED and actions == []
    record, actions = step(record, st.BackoffElapsed(), 1.0)  # its stale timer
    assert record.state is S.STOPPED and st.Spawn() not in actions


@pytest.mark.parametrize("state", [S.STOPPED, S.EXITED, S.FATAL, S.STOPPING, S.UNKNOWN])
def test_stop_when_not_running_is_refused(state: S) -> None:
    record = ProcessRecord(state=state)
    same, actions = step(record, st.StopRequested(), 1.0)
    assert same == record and actions == [st.Refused("NOT_RUNNING", "web is not running")]


# ---- requests in other states -----------------------------------------------------------


@pytest.mark.parametrize("state", [S.STARTING, S.RUNNING, S.BACKOFF])
def test_start_when_started_is_refused(state: S) -> None:
    record = ProcessRecord(state=state, pid=5)
    _, actions = step(record, st.StartRequested(), 1.0)
    assert actions == [st.Refused("ALREADY_STARTED", "web is already started")]


@pytest.mark.parametrize("state", [S.EXITED, S.FATAL])
def test_start_from_exited_or_fatal(state: S) -> None:
    record, actions = step(ProcessRecord(state=state, backoff=2, spawnerr="old"), st.StartRequested(), 1.0)
    assert record.state is S.STARTING and actions == [st.Spawn()]
    assert record.backoff == 0 and record.spawnerr == ""  # a person's start gets fresh retries


def test_start_while_stopping_starts_after_the_stop() -> None:
    record, actions = step(stopping(), st.StartRequested(), 10.5)
    assert record.state is S.STOPPING and record.restart_pending and actions == []
    record, actions = step(record, st.Exited(killed_by(signal.SIGTERM)), 11.0)
    assert record.state is S.STARTING and actions[-1] == st.Spawn()  # STOPPED -> STARTING


def test_restart_running_stops_then_starts() -> None:
    record, actions = step(running(), st.RestartRequested(), 10.0)
    assert record.state is S.STOPPING and record.restart_pending
    assert st.SendSignal(signal.SIGTERM, False) in actions
    record, actions = step(record, st.Exited(killed_by(signal.SIGTERM)), 10.2)
    assert record.state is S.STARTING and logs(actions) == ["stopped: web (terminated by SIGTERM)"]
    assert actions[-1] == st.Spawn()


def test_restart_is_not_completed_during_shutdown() -> None:
    record, _ = step(running(), st.RestartRequested(), 10.0)
    record, actions = step(record, st.Exited(killed_by(signal.SIGTERM)), 10.2, shutting_down=True)
    assert record.state is S.STOPPED and st.Spawn() not in actions


def test_stop_during_restart_cancels_the_start() -> None:
    record, _ = step(running(), st.RestartRequested(), 10.0)
    record, actions = step(record, st.StopRequested(), 10.1)
    assert record.state is S.STOPPING and not record.restart_pending and actions == []
    record, _ = step(record, st.Exited(killed_by(signal.SIGTERM)), 10.2)
    assert record.state is S.STOPPED


@pytest.mark.parametrize("state", [S.BACKOFF, S.STOPPED, S.EXITED, S.FATAL])
def test_restart_when_not_running_starts(state: S) -> None:
    record, actions = step(ProcessRecord(state=state, backoff=2), st.RestartRequested(), 4.0)
    assert record.state is S.STARTING and actions == [st.Spawn()] and record.backoff == 0


def test_backoff_retry_is_not_made_during_shutdown() -> None:
    record, _ = step(ProcessRecord(), st.StartRequested(), 0.0)
    record, _ = step(record, st.SpawnFailed("x"), 0.0)
    record, actions = step(record, st.BackoffElapsed(), 1.0, shutting_down=True)
    assert record.state is S.BACKOFF and st.Spawn() not in actions


def test_signal_goes_to_the_process_only() -> None:
    _, actions = step(running(), st.SignalRequested(signal.SIGHUP), 3.0)
    assert st.SendSignal(signal.SIGHUP, False) in actions
    _, actions = step(ProcessRecord(), st.SignalRequested(signal.SIGHUP), 3.0)
    assert actions == [st.Refused("NOT_RUNNING", "web is not running")]


def test_signal_failure_is_unknown_and_unknown_refuses_start() -> None:
    record, actions = step(stopping(), st.SignalFailed("EPERM"), 10.0)
    assert record.state is S.UNKNOWN and logs(actions) == ["unknown problem killing web (42): EPERM"]
    _, actions = step(record, st.StartRequested(), 10.5)
    assert isinstance(actions[0], st.Refused) and actions[0].fault == "FAILED"
    record, actions = step(record, st.Exited(exit_status(0)), 11.0)
    assert record.state is S.EXITED and st.Spawn() not in actions  # UNKNOWN -> EXITED


@pytest.mark.parametrize("event", [st.Spawned(9), st.SpawnFailed("x"), st.StartsecsElapsed(),
                                   st.StopwaitElapsed(), st.Exited(0), st.SignalFailed("x")])
def test_stale_events_change_nothing(event: st.Event) -> None:
    record = ProcessRecord(state=S.STOPPED, laststart=1.0)
    same, actions = step(record, event, 50.0)
    assert same == record and not any(isinstance(a, (st.Spawn, st.SendSignal)) for a in actions)
