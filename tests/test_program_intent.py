"""The pure rule for when a process's intent is acted on (`intent.next_step`), with plain values."""

from __future__ import annotations

import pytest

from arbiter.programs.intent import (
    NOTHING,
    Intent,
    Step,
    Want,
    after_swap,
    drop_start,
    next_step,
    queue_start,
    was_started,
    will_start,
)
from arbiter.programs.names import Named, select
from arbiter.programs.states import ProcessRecord
from arbiter.programs.states import ProcessStates as S


def at(state: S, restart_pending: bool = False) -> ProcessRecord:
    return ProcessRecord(state=state, pid=42 if state not in (S.STOPPED, S.EXITED, S.FATAL) else 0,
                         restart_pending=restart_pending)


START = Intent(Want.START, admin=True)


@pytest.mark.parametrize("state", [S.STOPPED, S.EXITED, S.FATAL])
def test_a_queued_start_waits_for_what_it_depends_on(state: S) -> None:
    assert next_step(START, at(state), deps_running=False, shutting_down=False) is Step.WAIT
    assert next_step(START, at(state), deps_running=True, shutting_down=False) is Step.START
    assert next_step(START, at(state), deps_running=True, shutting_down=True) is Step.WAIT


@pytest.mark.parametrize("state", [S.STARTING, S.RUNNING, S.BACKOFF, S.STOPPING])
def test_a_queued_start_of_a_started_or_stopping_process_is_dropped(state: S) -> None:
    assert next_step(START, at(state), deps_running=True, shutting_down=False) is Step.DROP


@pytest.mark.parametrize("want, done", [(Want.REMOVE, Step.FORGET), (Want.REPLACE, Step.SWAP)])
def test_remove_and_replace_stop_first_then_act_once_stopped(want: Want, done: Step) -> None:
    intent = Intent(want)
    for state in (S.STARTING, S.RUNNING, S.BACKOFF):
        assert next_step(intent, at(state), deps_running=True, shutting_down=False) is Step.STOP
    # A restart in progress would spawn the old configuration again: it is stopped too.
    assert next_step(intent, at(S.STOPPING, restart_pending=True), deps_running=True,
                     shutting_down=False) is Step.STOP
    assert next_step(intent, at(S.STOPPING), deps_running=True, shutting_down=False) is Step.WAIT
    for state in (S.STOPPED, S.EXITED, S.FATAL, S.UNKNOWN):
        assert next_step(intent, at(state), deps_running=False, shutting_down=True) is done


def test_a_replaced_process_starts_afterwards_only_if_asked_and_not_shutting_down() -> None:
    assert after_swap(Intent(Want.REPLACE, start=True), shutting_down=False) == START
    assert after_swap(Intent(Want.REPLACE, start=True), shutting_down=True) == NOTHING
    assert after_swap(Intent(Want.REPLACE), shutting_down=False) == NOTHING


def test_queue_and_drop_start() -> None:
    assert queue_start(NOTHING, admin=False) == Intent(Want.START)
    assert queue_start(Intent(Want.START), admin=True) == START
    assert queue_start(START, admin=False) == START  # autostart does not demote a person's start
    assert queue_start(Intent(Want.REPLACE), admin=True) == Intent(Want.REPLACE, start=True)
    assert queue_start(Intent(Want.REMOVE), admin=True) == Intent(Want.REMOVE)
    assert drop_start(START) == (NOTHING, True)
    assert drop_start(Intent(Want.REPLACE, start=True)) == (Intent(Want.REPLACE), True)
    assert drop_start(Intent(Want.REMOVE)) == (Intent(Want.REMOVE), False)
    assert drop_start(NOTHING) == (NOTHING, False)


def test_will_start_reads_the_one_record() -> None:
    assert will_start(START, at(S.STOPPED))
    assert not will_start(START, at(S.STOPPED), blocked=True)
    assert will_start(NOTHING, at(S.STOPPING, restart_pending=True))
    assert will_start(Intent(Want.REPLACE, start=True), at(S.STOPPING))
    assert not will_start(Intent(Want.REPLACE), at(S.STOPPING))
    assert not will_start(NOTHING, at(S.STOPPED))
    assert was_started(NOTHING, at(S.BACKOFF)) and was_started(START, at(S.FATAL))
    assert not was_started(NOTHING, at(S.EXITED))


ROWS = [Named("web", "web", "web"), Named("pool", "pool_0", "pool"), Named("pool", "pool_1", "pool"),
        Named("backend", "api", "api"), Named("backend", "db", "db")]


@pytest.mark.parametrize("name, chosen, single", [
    ("web", ["web"], True),
    ("pool", ["pool_0", "pool_1"], False),  # a program's pool, by its program name
    ("pool_1", ["pool_1"], True),
    ("backend", ["api", "db"], False),  # a group by its name
    ("backend:*", ["api", "db"], False),
    ("backend:", ["api", "db"], False),
    ("backend:db", ["db"], True),
    ("pool:pool", ["pool_0", "pool_1"], False),
    ("all", ["web", "pool_0", "pool_1", "api", "db"], False),
    ("nope", [], False),
    ("backend:nope", [], False),
])
def test_one_name_rule(name: str, chosen: list[str], single: bool) -> None:
    found, one = select(ROWS, name, lambda row: row)
    assert ([row.name for row in found], one) == (chosen, single)
