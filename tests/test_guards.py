"""Guard decisions with plain numbers for time and memory (no processes, no sleeping), the
guardian carrying them out on a pool of fake processes, and the samples read from real ones."""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys

import psutil
import pytest
from conftest import wait_until
from test_pool import Harness

from arbiter import procfs
from arbiter.config.convert import to_size
from arbiter.config.settings import Config
from arbiter.master.guardian import Guardian, accept_queue
from arbiter.master.guards import Autoscaler, MemoryGuard

MiB = 1 << 20


@pytest.mark.parametrize(("raw", "size"), [(150, 150 * MiB), ("512MB", 512 * MiB), ("1GB", 1 << 30),
                                           ("200KB", 200 << 10), ("0", 0), ("1.5g", 3 << 29)])
def test_one_size_parser_with_memmons_units(raw: object, size: int) -> None:
    assert to_size(raw) == size


@pytest.mark.parametrize("raw", ["lots", "12TB", "-5", True, None])
def test_bad_sizes_say_what_was_expected(raw: object) -> None:
    with pytest.raises(ValueError, match="size"):
        to_size(raw)


def test_three_samples_in_a_row_over_the_limit_replace_a_worker_once() -> None:
    guard = MemoryGuard(limit=100 * MiB)
    assert guard.observe({1: 150 * MiB, 2: 50 * MiB}) == []
    assert guard.observe({1: 150 * MiB, 2: 50 * MiB}) == []
    [action] = guard.observe({1: 150 * MiB, 2: 50 * MiB})
    assert (action.pid, action.reason) == (1, "memory")
    assert "150.0 MiB" in action.message and "100.0 MiB" in action.message
    assert guard.observe({1: 160 * MiB, 2: 50 * MiB}) == []  # already being replaced


def test_a_dip_under_the_limit_starts_the_count_again() -> None:
    guard = MemoryGuard(limit=100 * MiB)
    for size in (150, 150, 90, 150, 150):
        assert guard.observe({1: size * MiB}) == []
    assert guard.observe({1: 150 * MiB})


def test_a_zero_limit_is_off() -> None:
    guard = MemoryGuard(limit=0)
    assert all(guard.observe({1: 10 << 30}) == [] for _ in range(5))


def test_a_saturated_pool_grows_one_worker_a_second_up_to_the_ceiling() -> None:
    scaler = Autoscaler(floor=1, ceiling=3)
    workers, decisions = 1, []
    for tick in range(50):  # 5 s of samples every 100 ms, every worker busy
        decision = scaler.observe(tick / 10, 1.0, 0, workers)
        if decision:
            workers += decision.delta
            decisions.append((tick / 10, decision.delta))
    assert decisions == [(0.0, 1), (1.0, 1)]
    assert workers == 3


def test_a_listen_backlog_alone_means_saturated() -> None:
    scaler = Autoscaler(floor=1, ceiling=4)
    decision = scaler.observe(0.0, 0.2, 5, 1)
    assert decision and decision.delta == 1 and "5 connections waiting" in decision.message


def test_a_quiet_pool_shrinks_after_idle_after_seconds_never_below_the_floor() -> None:
    scaler = Autoscaler(floor=2, ceiling=8, idle_after=3)
    workers, removed_at = 5, []
    for tick in range(100):
        decision = scaler.observe(tick / 10, 0.1, 0, workers)
        if decision:
            workers += decision.delta
            removed_at.append(tick / 10)
    assert removed_at == [3.0, 4.0, 5.0]
    assert workers == 2


def test_a_spike_during_idle_resets_the_idle_clock() -> None:
    scaler = Autoscaler(floor=1, ceiling=2, idle_after=3)
    for tick in range(25):
        assert scaler.observe(tick / 10, 0.1, 0, 2) is None
    for tick in range(25, 31):  # a burst: the mean over the last second goes over `low`
        assert scaler.observe(tick / 10, 1.0, 0, 2) is None
    assert all(scaler.observe(tick / 10, 0.1, 0, 2) is None for tick in range(31, 60))
    assert scaler.observe(7.0, 0.1, 0, 2) is not None  # idle again for 3 s since the mean fell


# -- the guardian: the decisions above carried out on a pool (fake processes, fake clock) ------

class GuardedPool(Harness):
    """A pool with fake processes and a guardian whose memory reader reads `self.memory`."""

    def __init__(self, **settings: object) -> None:
        super().__init__(**settings)
        self.memory: dict[int, int] = {}
        self.resident: dict[int, int] = {}  # RSS by pid; a worker missing here is read exactly
        self.exact_reads: list[int] = []
        self.resized: list[int] = []
        self.in_progress = 0  # what every worker's slot says, each step
        self.guardian = Guardian(self.cfg, lambda: self.pool, lambda: [], self._resize, logging.getLogger("test"),
                                 read_memory=self._read_memory, read_resident=self.resident.get)

    def _read_memory(self, pid: int, measure: str) -> int | None:
        self.exact_reads.append(pid)
        return self.memory.get(pid)

    def _resize(self, count: int) -> None:
        self.resized.append(count)
        self.pool.target = count

    def turn(self) -> None:
        now = self.clock()
        self.pool.check(now, self.awake_since)
        self.guardian.tick(now)
        self.pool.manage(now)

    def run(self, seconds: float, step: float = 0.1) -> None:
        for _ in range(round(seconds / step)):
            self.clock.advance(step)
            self.ready_all()
            for pid, worker in self.pool.workers.items():
                self.beat(pid)
                worker.slot.set_capacity(1)
                worker.slot.set_in_progress(self.in_progress)
            self.turn()


def test_a_worker_over_the_memory_limit_is_replaced_before_it_drains_and_counted() -> None:
    h = GuardedPool(workers=2, max_worker_memory=to_size("100MB"))
    h.turn()
    h.ready_all()
    first, second = sorted(h.pool.workers)
    h.memory = {first: 150 * MiB, second: 20 * MiB}
    h.run(3.05)  # samples at 1, 2 and 3 s (at 0 none was ready): the third asks for a replacement
    assert h.pool.workers[first].wants_retirement and h.signals == []
    assert len(h.pool.workers) == 3  # the successor boots first; the big one still serves
    h.run(0.2)  # the successor is READY: now the big one drains
    assert (first, signal.SIGTERM) in h.signals and (second, signal.SIGTERM) not in h.signals
    assert h.pool.restarts["memory"] == 1


def test_a_worker_whose_rss_is_under_the_limit_is_not_read_exactly() -> None:
    """RSS bounds USS and PSS from above: under the limit by the cheap counter (statm) means
    under by any measure, and smaps_rollup is read only for a worker whose RSS is over it."""
    h = GuardedPool(workers=2, max_worker_memory=to_size("100MB"))
    h.turn()
    h.ready_all()
    small, big = sorted(h.pool.workers)
    h.resident.update({small: 60 * MiB, big: 180 * MiB})  # big's RSS counts pages shared with the master
    h.memory = {small: 60 * MiB, big: 40 * MiB}  # ... its USS is small
    h.run(3.05)
    assert set(h.exact_reads) == {big} and len(h.exact_reads) == 3
    assert not any(w.wants_retirement for w in h.pool.workers.values())  # judged by USS, not RSS
    h.memory[big] = 150 * MiB
    h.run(3.0)
    assert h.pool.workers[big].wants_retirement and h.pool.restarts["memory"] == 0  # counted once drained


def test_autoscaling_moves_the_target_and_ttin_moves_the_floor() -> None:
    h = GuardedPool(workers=1, max_workers=3, scale_down_idle=2)
    h.turn()
    h.in_progress = 1
    h.run(3)
    assert h.resized == [2, 3] and h.pool.target == 3  # one a second, up to the ceiling
    h.guardian.floor_moved(2)  # what TTIN / `arbiter ctl scale =2` does beside setting the target
    h.in_progress = 0
    h.run(10)
    assert h.pool.target == 2 and h.resized[-1] == 2  # down to the new floor, not to -w
    assert h.pool.restarts["scale"] == 1


def test_without_max_workers_the_busy_ratio_is_measured_but_nothing_scales() -> None:
    h = GuardedPool(workers=2)
    h.turn()
    h.in_progress = 1
    h.run(2)
    assert h.guardian.busy_ratio == 1.0 and h.resized == [] and h.pool.target == 2


# -- the samples, from real processes and sockets -----------------------------------------------


def test_memory_measures_agree_with_psutil_and_a_tree_counts_the_grandchild() -> None:
    # A shell whose child holds 64 MiB of its own: the tree is the shell plus that child.
    code = "b = bytearray(64 << 20); import sys; sys.stdout.write('ok\\n'); sys.stdout.flush(); sys.stdin.read()"
    shell = subprocess.Popen(["/bin/sh", "-c", f'"{sys.executable}" -c "{code}"; :'], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
    try:
        assert shell.stdout is not None and shell.stdout.readline() == b"ok\n"
        [child] = psutil.Process(shell.pid).children()
        info = child.memory_full_info()
        assert abs(procfs.memory(child.pid, "uss") - info.uss) < 4 * MiB
        assert abs(procfs.memory(child.pid, "pss") - info.pss) < 4 * MiB
        assert abs(procfs.memory(child.pid, "rss") - info.rss) < 4 * MiB
        assert abs(procfs.resident(child.pid) - info.rss) < 4 * MiB  # statm's counter: the same RSS
        assert procfs.resident(child.pid) >= procfs.memory(child.pid, "pss") >= procfs.memory(child.pid, "uss")
        assert procfs.tree(shell.pid) == [shell.pid, child.pid]
        own = procfs.memory(shell.pid, "uss")
        assert procfs.tree_memory(shell.pid, "uss") >= own + 64 * MiB > 64 * MiB
    finally:
        shell.kill()
        shell.communicate()
    assert procfs.memory(shell.pid) is None and procfs.tree_memory(shell.pid) is None


def test_the_accept_queue_of_a_listener_comes_from_tcp_info() -> None:
    listener = socket.create_server(("127.0.0.1", 0), backlog=16)
    clients = [socket.create_connection(listener.getsockname()) for _ in range(3)]
    try:
        wait_until(lambda: accept_queue(listener) == 3, timeout=5)
        listener.accept()[0].close()
        assert accept_queue(listener) == 2
    finally:
        for client in clients:
            client.close()
        listener.close()


def test_a_reload_that_lowers_or_removes_max_workers_takes_back_the_extra_workers_at_once() -> None:
    h = GuardedPool(workers=1, max_workers=4)
    h.turn()
    h.in_progress = 1
    h.run(4)
    assert h.pool.target == 4
    h.guardian.configure(Config(workers=1, max_workers=2))  # what a HUP with a new config does
    assert h.pool.target == 2
    h.guardian.configure(Config(workers=1))
    assert h.pool.target == 1 and h.guardian.scaler is None
