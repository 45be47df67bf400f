"""The master's loop turn with a fake clock: what it does when it was itself stopped (SIGSTOP, a
paused VM). Workers are faked through the pool's spawner, as in test_pool.py; the selector is
replaced by one that lets the fake time pass instead of waiting."""

from __future__ import annotations

import logging
import signal

import pytest

from arbiter.config.settings import Config
from arbiter.master.loop import SUSPEND_GAP, Master
from arbiter.master.pool import WorkerPool, WorkerProcess
from arbiter.web.scoreboard import SlotState

MS = 0.001


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


class PassingSelector:
    """select(timeout) lets `timeout` pass on the fake clock, plus `pause` once (the master was
    stopped while it waited)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.pause = 0.0

    def select(self, timeout: float | None = None) -> list[object]:
        self.clock.now += (timeout or 0.0) + self.pause
        self.pause = 0.0
        return []

    def get_map(self) -> dict[object, object]:
        return {}

    def close(self) -> None:
        pass


@pytest.fixture
def loop():
    clock = Clock()
    cfg = Config(workers=2, timeout=2.0)
    master = Master(cfg, clock=clock)
    master.selector = PassingSelector(clock)  # type: ignore[assignment]
    killed: list[tuple[int, int]] = []
    pids = iter(range(100, 200))

    def spawn(worker: WorkerProcess) -> int:
        return next(pids)

    master.pool = WorkerPool(cfg=cfg, server=master, listeners=[], scoreboard=master.scoreboard,
                             close_in_child=lambda: None, preloaded=None, log=master.log, clock=clock,
                             spawner=spawn, kill=lambda pid, sig: killed.append((pid, sig)))
    master.turn()
    for worker in master.pool.workers.values():
        worker.slot.set_state(SlotState.READY, at_ns=int(clock() * 1e9))
    master.turn()
    assert master.pool.ready_count() == 2
    yield master, clock, killed
    master.pool.close()
    master.scoreboard.close()
    master.signals.close_in_child()


def test_a_suspended_master_restarts_worker_timeouts_from_when_it_woke(loop, caplog):
    master, clock, killed = loop
    master.selector.pause = 60.0  # stopped for a minute inside select: nobody could beat
    with caplog.at_level(logging.WARNING, logger="arbiter.error"):
        master.turn()
    assert "Master was suspended for 60.0 s" in caplog.text
    assert killed == [] and master.pool.stats["timeouts"] == 0
    woke = master._awake_since
    while clock() < woke + 2.0 - MS:  # the workers still say nothing: timed out from the wake-up
        master.turn()
        assert killed == []
    while clock() < woke + 2.0 + 20 * MS:
        master.turn()
    assert sorted(sig for _, sig in killed) == [signal.SIGABRT, signal.SIGABRT]


def test_a_slow_turn_short_of_the_gap_is_not_a_suspension(loop, caplog):
    master, clock, killed = loop
    master.selector.pause = SUSPEND_GAP - 0.1  # slow, not stopped: longer than the 2 s timeout
    with caplog.at_level(logging.WARNING, logger="arbiter.error"):
        master.turn()
    assert "suspended" not in caplog.text
    assert sorted(sig for _, sig in killed) == [signal.SIGABRT, signal.SIGABRT]


@pytest.fixture
def restored_loggers():
    """Master.reload() configures the process's loggers (logs.setup): put them back after."""
    saved = []
    for name in ("arbiter.error", "arbiter.access"):
        logger = logging.getLogger(name)
        saved.append((logger, list(logger.handlers), logger.level, logger.propagate, logger.disabled))
    yield
    for logger, handlers, level, propagate, disabled in saved:
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.handlers[:] = handlers
        logger.level, logger.propagate, logger.disabled = level, propagate, disabled


def test_hup_after_winch_without_a_config_to_reread_brings_the_workers_back(loop, restored_loggers):
    # Before: `logs.setup(cfg)` sat under `if target == 0` and named `cfg`, bound only when a
    # config was reread: UnboundLocalError here.
    master, clock, killed = loop
    assert master.reload_config is None
    master.scale(0, minimum=0)
    assert master.reload() is None
    assert master.pool.target == 2 and master.pool.generation == 2
    assert logging.getLogger("arbiter.error").level == logging.INFO  # the log settings applied again
