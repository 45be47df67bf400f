"""The pool's decisions, driven without a process: a fake clock, a fake spawner and kill, and a
real (in-memory) scoreboard whose slots the test writes as a worker would, stamped with the fake
clock. Every timer here is exercised in milliseconds; tests/test_reload.py and test_master.py
keep what only real processes show."""

from __future__ import annotations

import logging
import signal

import pytest

from arbiter.config.settings import Config
from arbiter.errors import WORKER_BOOT_ERROR
from arbiter.master.pool import ABORT_GRACE, WorkerPool, WorkerProcess
from arbiter.master.reload_state import ReloadPhase
from arbiter.web.scoreboard import Scoreboard, SlotState

MS = 0.001


def exit_status(code: int) -> int:
    return code << 8  # what waitpid reports for exit(code)


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0  # an uptime: a stamp of 0 would read as 5000 s of silence

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


class Harness:
    """One pool with fake processes. `turn()` is what the master does each loop turn."""

    def __init__(self, **settings: object) -> None:
        self.clock = Clock()
        self.cfg = Config(**{"workers": 2, "timeout": 5.0, "graceful_timeout": 3.0, **settings})  # type: ignore[arg-type]
        self.board = Scoreboard(slots=32)
        self.signals: list[tuple[int, int]] = []
        self.next_pid = 100
        self.pool = WorkerPool(
            cfg=self.cfg, server=object(), listeners=[], scoreboard=self.board, close_in_child=lambda: None,
            preloaded=None, log=logging.getLogger("test.pool"), clock=self.clock, spawner=self._spawn,
            kill=self._kill,
        )
        self.awake_since = 0.0

    def _spawn(self, worker: WorkerProcess) -> int:
        self.next_pid += 1
        return self.next_pid

    def _kill(self, pid: int, sig: int) -> None:
        self.signals.append((pid, sig))

    def turn(self) -> None:
        now = self.clock()
        self.pool.check(now, self.awake_since)
        self.pool.manage(now)

    # -- what workers do -----------------------------------------------------------------------

    def say(self, pid: int, state: SlotState) -> None:
        self.pool.workers[pid].slot.set_state(state, at_ns=int(self.clock() * 1e9))

    def beat(self, pid: int) -> None:
        self.pool.workers[pid].slot.heartbeat(at_ns=int(self.clock() * 1e9))

    def ready_all(self) -> None:
        for pid, worker in self.pool.workers.items():
            if not worker.ready and not worker.stop_sent:
                self.say(pid, SlotState.READY)

    def exit(self, pid: int, code: int = 0) -> int | None:
        return self.pool.exited(pid, exit_status(code))

    def signalled(self, sig: int) -> list[int]:
        return [pid for pid, s in self.signals if s == sig]

    def serving(self) -> int:
        """Workers able to take a request: READY (or asking for a replacement), not told to stop."""
        return sum(1 for pid, w in self.pool.workers.items()
                   if not w.stop_sent and self.board.read(w.slot.index).state in (SlotState.READY, SlotState.RETIRING))


@pytest.fixture
def h() -> Harness:
    return Harness()


def started(h: Harness, count: int) -> list[int]:
    h.turn()
    assert len(h.pool.workers) == count
    h.ready_all()
    h.turn()
    assert h.pool.ready_count() == count
    return sorted(h.pool.workers)


# -- rolling reload -------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 2, 4])
def test_rolling_reload_boots_a_batch_at_a_time_and_never_drops_below_the_target(batch):
    h = Harness(workers=4, reload_batch=batch)
    old = started(h, 4)
    h.pool.begin_reload()
    assert h.pool.last_reload.phase is ReloadPhase.IN_PROGRESS
    for _ in range(20):
        h.turn()
        booting = [w for w in h.pool.workers.values() if w.generation == 2 and not w.ready]
        assert len(booting) <= batch
        assert h.serving() >= 4
        for pid in h.signalled(signal.SIGTERM):  # a retired worker drains, then exits
            if pid in h.pool.workers:
                h.exit(pid)
        h.clock.advance(10 * MS)
        h.ready_all()
        if h.pool.last_reload.phase is ReloadPhase.DONE:
            break
    assert h.pool.last_reload.phase is ReloadPhase.DONE
    assert sorted(h.signalled(signal.SIGTERM)) == old
    assert len(h.pool.workers) == 4 and all(w.generation == 2 for w in h.pool.workers.values())
    assert h.pool.stats["reloads"] == 1


def test_a_new_generation_that_cannot_boot_is_abandoned_and_the_old_one_keeps_serving(h):
    old = started(h, 2)
    h.pool.begin_reload()
    h.turn()
    new = sorted(pid for pid in h.pool.workers if pid not in old)
    assert len(new) == 2
    assert h.exit(new[0], WORKER_BOOT_ERROR) is None  # not fatal: something serves
    assert h.signalled(signal.SIGTERM) == new[1:]  # the rest of the failed generation goes
    h.exit(new[1])
    assert h.pool.last_reload.phase is ReloadPhase.FAILED
    assert "Worker failed to boot." in h.pool.last_reload.error
    assert str(h.pool.last_reload).startswith("failed: ")
    assert h.pool.generation == 1 and h.pool.reload_failures == 1
    h.turn()
    assert sorted(h.pool.workers) == old and h.signalled(signal.SIGTERM) == new[1:]


def test_a_boot_error_before_anything_served_stops_the_master(h):
    h.turn()
    pid = sorted(h.pool.workers)[0]
    assert h.exit(pid, WORKER_BOOT_ERROR) == WORKER_BOOT_ERROR


# -- timeouts -------------------------------------------------------------------------------------


def test_a_booting_worker_gets_timeout_to_become_ready_then_sigabrt_then_sigkill(h):
    h.turn()
    pid = sorted(h.pool.workers)[0]
    h.clock.advance(5.0 - MS)
    h.turn()
    assert h.signals == []
    h.clock.advance(2 * MS)
    h.turn()
    assert h.signalled(signal.SIGABRT) == sorted(h.pool.workers)  # both booted together
    assert h.pool.stats["timeouts"] == 2
    h.clock.advance(ABORT_GRACE - MS)
    h.turn()
    assert h.signalled(signal.SIGKILL) == []
    h.clock.advance(2 * MS)
    h.turn()
    assert pid in h.signalled(signal.SIGKILL)
    assert h.exit(pid, 1) is None  # a boot timeout is retried later, never fatal


def test_a_ready_worker_times_out_only_after_timeout_without_a_heartbeat(h):
    first, second = started(h, 2)
    h.clock.advance(4.0)
    h.beat(second)
    h.clock.advance(1.0 - MS)  # first: silent for 5 s less 1 ms
    h.turn()
    assert h.signals == []
    h.clock.advance(2 * MS)
    h.turn()
    assert h.signals == [(first, signal.SIGABRT)]


def test_a_ready_slot_whose_heartbeat_reads_zero_right_after_boot_is_not_timed_out(h):
    # The interleaving of issue 8 item 8: the master reads a just-booted worker's slot while
    # its heartbeat store is half done (struct.pack_into zeroed it first). Silence is counted
    # from no earlier than the fork, so even a 0 stamp cannot make a worker look hung.
    first, _ = started(h, 2)
    h.clock.advance(50 * MS)
    h.pool.workers[first].slot.heartbeat(at_ns=0)
    h.turn()
    assert h.signals == [] and h.pool.stats["timeouts"] == 0


def test_a_suspended_master_counts_silence_only_from_when_it_woke(h):
    first, _ = started(h, 2)
    h.clock.advance(60.0)  # the master was stopped a minute; nobody beat
    h.awake_since = h.clock()
    h.clock.advance(4.0)
    h.turn()
    assert h.signals == []
    h.clock.advance(1.0 + MS)
    h.turn()
    assert len(h.signalled(signal.SIGABRT)) == 2


def test_a_draining_worker_is_killed_after_graceful_timeout(h):
    first, _ = started(h, 2)
    h.pool.stop_all(h.clock())
    assert sorted(h.signalled(signal.SIGTERM)) == sorted(h.pool.workers)
    h.clock.advance(3.0 - MS)
    h.pool.check(h.clock(), 0.0)
    assert h.signalled(signal.SIGKILL) == []
    h.clock.advance(2 * MS)
    h.pool.check(h.clock(), 0.0)
    assert len(h.signalled(signal.SIGKILL)) == 2


# -- max requests -------------------------------------------------------------------------------


def test_max_requests_replacement_keeps_the_old_worker_until_the_new_one_is_ready(h):
    first, second = started(h, 2)
    h.say(first, SlotState.RETIRING)  # it reached max_requests; it keeps serving meanwhile
    h.turn()
    new = [pid for pid in h.pool.workers if pid not in (first, second)]
    assert len(new) == 1 and h.signals == []
    assert h.serving() == 2
    h.clock.advance(30 * MS)
    h.turn()
    assert h.signals == []  # the replacement still boots
    h.say(new[0], SlotState.READY)
    h.turn()
    assert h.signals == [(first, signal.SIGTERM)]
    h.exit(first)
    h.turn()
    assert sorted(h.pool.workers) == sorted([second, new[0]])
    assert h.pool.stats["restarts"] == 0  # asked-for replacements are not crashes


def test_a_crashed_replacement_is_retried_with_doubling_backoff(h):
    started(h, 2)
    crashed = sorted(h.pool.workers)[0]
    h.exit(crashed, 1)  # a serving worker died: replaced at once
    h.turn()
    replacement = max(h.pool.workers)
    assert len(h.pool.workers) == 2
    h.exit(replacement, 1)  # the replacement dies while booting: back off 1 s
    h.turn()
    assert len(h.pool.workers) == 1
    h.clock.advance(1.0 - MS)
    h.turn()
    assert len(h.pool.workers) == 1
    h.clock.advance(2 * MS)
    h.turn()
    assert len(h.pool.workers) == 2
    h.exit(max(h.pool.workers), 1)  # again: 2 s
    h.clock.advance(2.0 - MS)
    h.turn()
    assert len(h.pool.workers) == 1
    h.clock.advance(2 * MS)
    h.turn()
    assert len(h.pool.workers) == 2


def test_a_refused_fork_backs_off_instead_of_escaping(h):
    def refuse(worker: WorkerProcess) -> int:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    h.pool.spawner = refuse
    h.turn()
    assert h.pool.workers == {}
    h.pool.spawner = h._spawn
    h.clock.advance(1.0 - MS)
    h.turn()
    assert h.pool.workers == {}
    h.clock.advance(2 * MS)
    h.turn()
    assert len(h.pool.workers) == 2


def test_ttou_retires_the_newest_and_ttin_adds(h):
    first, second = started(h, 2)
    h.pool.target = 1
    h.turn()
    assert h.signals == [(second, signal.SIGTERM)]
    h.pool.target = 3
    h.turn()
    assert len(h.pool.current()) == 3


def test_replacing_one_worker_boots_its_successor_first(h):
    first, second = started(h, 2)
    assert h.pool.replace_worker(first) is True
    assert h.pool.replace_worker(first) is False  # already on its way
    assert h.pool.replace_worker(999) is False
    h.turn()
    successor = max(h.pool.workers)
    assert h.signals == [] and h.serving() == 2
    h.say(successor, SlotState.READY)
    h.turn()
    assert h.signals == [(first, signal.SIGTERM)]


# -- request deadlines (the workers enforce them; the pool counts and replaces) -------------------


def test_a_thread_worker_with_a_stuck_request_is_replaced_first_then_drained(h, caplog):
    first, second = started(h, 2)
    h.pool.workers[first].slot.add_request_timeout()  # what gthread does after its 504
    h.say(first, SlotState.RETIRING)
    with caplog.at_level(logging.WARNING, logger="test.pool"):
        h.turn()
    assert h.pool.stats["request_timeouts"] == 1
    assert h.pool.workers[first].replace_reason == "request_timeout"  # counted once it is drained
    assert f"Worker (pid:{first}) has a request it could not stop" in caplog.text
    [new] = [pid for pid in h.pool.workers if pid not in (first, second)]
    assert h.signals == []  # the old one serves on until its successor is ready
    h.say(new, SlotState.READY)
    h.turn()
    assert h.signals == [(first, signal.SIGTERM)]
    assert h.pool.restarts["request_timeout"] == 1
    h.exit(first)
    h.turn()
    assert h.pool.stats["request_timeouts"] == 1 and h.pool.restarts["request_timeout"] == 1


def test_a_sync_worker_that_stopped_a_request_and_exited_is_counted_not_reported_as_a_crash(h, caplog):
    first, second = started(h, 2)
    h.pool.workers[first].slot.add_request_timeout()  # then it exits at once (before the pool looks)
    with caplog.at_level(logging.INFO, logger="test.pool"):
        h.exit(first, code=1)
    h.turn()
    assert len(h.pool.workers) == 2 and first not in h.pool.workers  # replaced in the same turn
    assert h.pool.stats["request_timeouts"] == 1 and h.pool.restarts["request_timeout"] == 1
    assert h.pool.stats["restarts"] == 1
    assert "stopped a request at --request-timeout" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
