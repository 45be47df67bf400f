"""The guards at work: sample what the decisions in `guards.py` need, and carry out theirs.

Once per housekeeping pass, never blocking and with no thread: each worker's memory every
`worker_memory_interval`, from /proc/PID/statm (RSS, a kernel counter) and, only for a worker
whose RSS is over the limit, from /proc/PID/smaps_rollup (the measure asked for, which walks
the worker's page tables: RSS bounds USS and PSS from above, so the walk is needed only then); and
each worker's busy ratio from its scoreboard slot with the listeners' accept queues from
TCP_INFO (one getsockopt each) every SAMPLE_EVERY. A worker over `max_worker_memory` is replaced
through the pool's replace-before-drain path (`replace_worker`, as `--max-requests` and the
dashboard's button); an autoscaling decision moves the pool's target through the master, which
owns the count.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Callable, Sequence
from typing import Protocol

from arbiter import procfs
from arbiter.config.settings import Config
from arbiter.master.guards import Autoscaler, MemoryGuard
from arbiter.master.pool import WorkerProcess
from arbiter.programs.errors import ProgramError
from arbiter.web.scoreboard import Scoreboard
from arbiter.web.sockets import Listener

SAMPLE_EVERY = 0.25  # seconds between busy-ratio samples: four to each second of the mean. Each one
# is a master loop turn (~0.25 ms of CPU with its housekeeping); ten a second cost 2.5 ms/s.
# struct tcp_info (linux/tcp.h): eight one-byte fields, then u32 rto, ato, snd_mss, rcv_mss,
# unacked, sacked. On a listening socket the kernel reports its accept queue in tcpi_unacked
# (and the queue's limit in tcpi_sacked).
_TCP_INFO_UNACKED = 24
_TCP_INFO_SIZE = 104


def accept_queue(sock: socket.socket) -> int:
    """Connections the kernel has accepted for `sock` that no worker has taken yet (0 for a
    socket that is not TCP or cannot say)."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return 0
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except OSError:
        return 0
    if len(info) < _TCP_INFO_UNACKED + 4:
        return 0
    queued: int = struct.unpack_from("=I", info, _TCP_INFO_UNACKED)[0]
    return queued


class Programs(Protocol):
    """What the guardian needs of `arbiter.programs.ProgramManager`."""

    def memory_limits(self) -> list[tuple[str, int, int]]: ...
    def restart(self, name: str) -> None: ...


class Pool(Protocol):
    """What the guardian needs of `arbiter.master.pool.WorkerPool`."""

    workers: dict[int, WorkerProcess]
    scoreboard: Scoreboard
    target: int

    def replace_worker(self, pid: int, reason: str = ...) -> bool: ...


MemoryReader = Callable[[int, str], "int | None"]
ProgramsGetter = Callable[[], "Programs | None"]


class Guardian:
    """Runs the memory guard and the autoscaler for the master's web workers.

    `pool()` gives the master's pool (made after the guardian); `resize(count)` is the master's
    way to set the pool's target (it logs nothing: the decision's own message is logged here);
    `read_memory` is how memory is sampled (tests pass their own).
    """

    def __init__(
        self,
        cfg: Config,
        pool: Callable[[], Pool],
        listeners: Callable[[], Sequence[Listener]],
        resize: Callable[[int], None],
        log: logging.Logger,
        read_memory: MemoryReader = procfs.memory,
        programs: ProgramsGetter = lambda: None,
        read_tree_memory: MemoryReader = procfs.tree_memory,
        read_resident: Callable[[int], int | None] = procfs.resident,
    ) -> None:
        self._pool = pool
        self.listeners = listeners
        self.resize = resize
        self.log = log
        self.read_memory = read_memory
        self.programs = programs
        self.read_tree_memory = read_tree_memory
        self.read_resident = read_resident
        self._program_guards: dict[str, MemoryGuard] = {}  # per process name: limits differ
        self.memory: MemoryGuard | None = None
        self.scaler: Autoscaler | None = None
        self._next_memory = 0.0
        self._next_sample = 0.0
        self.busy_ratio = 0.0  # the mean over the last second, for /metrics
        self._samples = Autoscaler(floor=0, ceiling=0)  # only its one-second mean when not scaling
        self.configure(cfg, floor=cfg.workers)

    @property
    def pool(self) -> Pool:
        return self._pool()

    def configure(self, cfg: Config, floor: int | None = None) -> None:
        """(Re)apply the settings: at start, and when a reload brings a new config (the floor
        stays where TTIN, TTOU or the config's `workers` last put it)."""
        reloading, was_scaling = floor is None, self.scaler is not None
        if floor is None:
            floor = self.scaler.floor if self.scaler is not None else self.pool.target
        self.measure = cfg.worker_memory_measure
        self.memory_interval = cfg.worker_memory_interval
        if cfg.max_worker_memory > 0:
            if self.memory is None:
                self.memory = MemoryGuard(cfg.max_worker_memory)
            self.memory.limit = cfg.max_worker_memory
        else:
            self.memory = None
        if cfg.max_workers > 0:
            if self.scaler is None:
                self.scaler = Autoscaler(floor=floor, ceiling=cfg.max_workers)
            self.scaler.ceiling = max(cfg.max_workers, floor)
            self.scaler.floor = floor
            self.scaler.idle_after = cfg.scale_down_idle
            self._samples = self.scaler
        else:
            self.scaler = None
            self._samples = Autoscaler(floor=0, ceiling=0)
        # Workers the autoscaler added beyond what the new config allows go at once.
        top = self.scaler.ceiling if self.scaler is not None else floor
        if reloading and was_scaling and self.pool.target > top:
            self.log.info("Autoscale: the new config allows %d workers; %d -> %d workers", top, self.pool.target, top)
            self.resize(top)

    def floor_moved(self, count: int) -> None:
        """TTIN, TTOU or `arbiter ctl scale` set the count: that is the new floor."""
        if self.scaler is not None:
            self.scaler.floor = count
            self.scaler.ceiling = max(self.scaler.ceiling, count)

    def next_deadline(self, now: float) -> float | None:
        deadlines = []
        if self.memory is not None or self._program_guards:
            deadlines.append(self._next_memory)
        if self.scaler is not None:
            deadlines.append(self._next_sample)
        return min(deadlines) if deadlines else None

    def tick(self, now: float) -> None:
        """One housekeeping pass: sample what is due, act on the decisions."""
        if now >= self._next_memory:
            self._next_memory = now + self.memory_interval
            if self.memory is not None:
                self._check_memory()
            self._check_programs()
        if now >= self._next_sample:
            self._next_sample = now + SAMPLE_EVERY
            self._sample_busy(now)

    # -- memory ----------------------------------------------------------------------------

    def _check_memory(self) -> None:
        assert self.memory is not None
        samples = {}
        for worker in list(self.pool.workers.values()):
            # One already on its way out is not measured: its replacement is coming.
            if not worker.ready or worker.stop_sent or worker.wants_retirement:
                continue
            # RSS bounds USS and PSS from above: a worker under the limit by it is under by any
            # measure, and its cheap counter spares reading smaps_rollup (see procfs.resident).
            resident = self.read_resident(worker.pid)
            if resident is not None and resident <= self.memory.limit:
                samples[worker.pid] = resident
                continue
            size = self.read_memory(worker.pid, self.measure)
            if size is not None:
                samples[worker.pid] = size
        for action in self.memory.observe(samples, self.measure):
            if self.pool.replace_worker(action.pid, action.reason):
                self.log.warning("%s", action.message)

    def _check_programs(self) -> None:
        """A program over its memory_limit (its whole tree: its own workers are its children, as
        superlance's `memmon -c` counts) for three samples in a row is restarted through its
        normal stop: stopsignal, then SIGKILL after stopwaitsecs."""
        manager = self.programs()
        if manager is None:
            return
        guards = {}
        for name, pid, limit in manager.memory_limits():
            guard = self._program_guards.get(name) or MemoryGuard(
                limit, subject=f"Program {name} (pid:{{pid}}) with its children", remedy="restarting it")
            guard.limit = limit
            guards[name] = guard
            size = self.read_tree_memory(pid, self.measure)
            for action in guard.observe({pid: size} if size is not None else {}, self.measure):
                self.log.warning("%s", action.message)
                try:
                    manager.restart(name)
                except ProgramError as exc:  # it stopped meanwhile, or the master is stopping
                    self.log.error("Cannot restart program %s: %s", name, exc)
        self._program_guards = guards  # a stopped or removed program is forgotten

    # -- busy ratio and autoscaling --------------------------------------------------------

    def _sample_busy(self, now: float) -> None:
        if self.pool.target == 0:
            return  # no workers wanted (SIGWINCH, or programs only): nothing to measure or grow
        ratios = []
        for worker in list(self.pool.workers.values()):
            if worker.ready and not worker.stop_sent:
                ratios.append(self.pool.scoreboard.read(worker.slot.index).busy_ratio)
        ratio = sum(ratios) / len(ratios) if ratios else 0.0
        if self.scaler is None:
            self._samples.observe(now, ratio, 0, 0)  # keeps the window; decides nothing (ceiling 0)
            self.busy_ratio = self._samples.mean()
            return
        backlog = sum(accept_queue(listener.sock) for listener in self.listeners())
        decision = self.scaler.observe(now, ratio, backlog, self.pool.target)
        self.busy_ratio = self.scaler.mean()
        if decision is not None:
            self.log.info("%s", decision.message)
            self.resize(self.pool.target + decision.delta)
