"""The master's view of its web workers: spawning, readiness, timeouts, the count, generations.

Every decision here is made from the worker records and the scoreboard, once per loop turn, so
that a storm of signals (HUP, TTIN, TTOU) only changes targets, and the pool converges on them.

Generations: a rolling reload makes `generation` one higher. Workers of older generations are
retired one for each worker of the current generation that reports READY, so the number of
workers able to serve never drops below the target. A current-generation worker that fails to
boot while older ones still serve abandons the reload instead of stopping the master.
"""

from __future__ import annotations

import collections
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from arbiter.config.settings import Config
from arbiter.errors import APP_LOAD_ERROR, WORKER_BOOT_ERROR
from arbiter.master import signals as sigs
from arbiter.master.mold import MoldKeeper
from arbiter.master.reload_state import NO_RELOAD, RELOAD_DONE, RELOADING, ReloadState
from arbiter.master.upgrade import AdoptedWorker, HandOver
from arbiter.web import boot as worker_boot
from arbiter.web import mold as worker_mold
from arbiter.web.scoreboard import Scoreboard, Slot, SlotState
from arbiter.web.sockets import Listener
from arbiter.web.workers.base import Worker

ABORT_GRACE = 1.0  # seconds between SIGABRT and SIGKILL for a hung worker
MAX_SPAWN_BACKOFF = 30.0
BOOT_POLL = 0.02  # seconds between scoreboard reads while a worker boots
# Why a worker stopped serving, the label of arbiter_worker_restarts_total: it died by itself
# (exit), missed its heartbeat (timeout), overran --request-timeout, reached max_requests, its
# generation was rolled over (reload), the count dropped (scale: TTOU or autoscaling), it grew
# past --max-worker-memory (memory), it was replaced by a fork of the mold (refork), or someone
# asked for it over the control API (manual).
RESTART_REASONS = ("exit", "timeout", "request_timeout", "max_requests", "reload", "scale", "memory",
                   "refork", "manual")


@dataclass(eq=False)
class WorkerProcess:
    """A web worker, as the master tracks it. Hooks (`pre_fork`, `child_exit`...) receive this."""

    age: int
    generation: int
    slot: Slot
    spawned_at: float
    pid: int = 0
    ready: bool = False
    wants_retirement: bool = False  # reached max_requests; replace it, then drain it
    replace_reason: str = "max_requests"  # the restart reason counted when it is drained
    request_timeouts: int = 0  # requests it stopped at --request-timeout, as last read from its slot
    stop_sent_at: float | None = None  # SIGTERM sent
    aborted_at: float | None = None
    killed: bool = False
    role: str = "worker"  # reforking: "promoting" (becoming the mold) or "mold"; see master/mold.py
    forked_from: int = 0  # the mold's pid, 0 when forked by the master

    @property
    def stop_sent(self) -> bool:
        return self.stop_sent_at is not None


Spawner = Callable[["WorkerProcess"], int]  # starts a worker's process, returns its pid
Kill = Callable[[int, int], None]  # os.kill's shape


class WorkerPool:
    """The web workers. `spawner` and `kill` are the pool's only ways to touch processes: the
    master passes none and gets fork and os.kill; unit tests pass fakes and a fake clock, and
    drive the same logic without a process."""

    def __init__(
        self,
        *,
        cfg: Config,
        server: object,
        listeners: Sequence[Listener],
        scoreboard: Scoreboard,
        close_in_child: Callable[[], None],
        preloaded: Callable[..., Any] | None,
        log: logging.Logger,
        clock: Callable[[], float] = time.monotonic,
        spawner: Spawner | None = None,
        kill: Kill = os.kill,
    ) -> None:
        self.server = server  # what hooks receive as `server`: the master
        self.spawner: Spawner = spawner or self._fork
        self.kill = kill
        self.cfg = cfg
        self.listeners = list(listeners)
        self.scoreboard = scoreboard
        self.close_in_child = close_in_child
        self.preloaded = preloaded
        self.log = log
        self.clock = clock
        self.target = cfg.workers
        self.generation = 1
        self.workers: dict[int, WorkerProcess] = {}
        self.age = 0
        self._spawn_backoff = 0.0
        self._spawn_not_before = 0.0
        self.served_ok = False  # some worker of some generation has been READY
        self.reload_failures = 0
        self.last_reload = NO_RELOAD
        self.stats: collections.Counter[str] = collections.Counter()  # reloads, restarts, timeouts
        self.restarts: collections.Counter[str] = collections.Counter({reason: 0 for reason in RESTART_REASONS})
        self.emit: Callable[..., None] = lambda name, **fields: None  # ARBITER_WORKER_* events
        # One byte per generation: the first worker that fails to load the app prints why.
        self._traceback_turn_r, self._traceback_turn_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        os.write(self._traceback_turn_w, b"t")
        # One byte per generation under `auto`: the first worker to import the app logs the class.
        self._announce_r, self._announce_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.molds = MoldKeeper(self)

    # -- queries ---------------------------------------------------------------------------

    def current(self) -> list[WorkerProcess]:
        """Current-generation workers that are meant to stay (not stopping, not to be replaced)."""
        return [w for w in self.workers.values()
                if w.generation == self.generation and not w.stop_sent and not w.wants_retirement
                and w.role == "worker"]

    def ready_count(self) -> int:
        return sum(1 for w in self.current() if w.ready)

    def next_deadline(self) -> float | None:
        """When the pool next needs a look. While a worker boots, soon: READY is a store in shared
        memory that wakes nobody, and a rolling reload waits on it to retire an old worker."""
        now = self.clock()
        if self._spawn_not_before > now:
            return self._spawn_not_before
        if self.molds.busy():
            return now + BOOT_POLL
        if any(not w.ready and not w.stop_sent for w in self.workers.values()) or len(self.current()) < self.target:
            return now + BOOT_POLL
        return None

    def count_restart(self, reason: str) -> None:
        """Count one worker stopped for `reason` (one of RESTART_REASONS), for /metrics."""
        self.restarts[reason] += 1

    # -- spawning (master side) ------------------------------------------------------------

    def spawn(self) -> WorkerProcess | None:
        """Start one worker of the current generation; None if the system refused a process."""
        self.age += 1
        slot = self.scoreboard.claim(self.generation)
        worker = WorkerProcess(age=self.age, generation=self.generation, slot=slot, spawned_at=self.clock())
        hook = self.cfg.hook("pre_fork")
        if hook:
            hook(self.server, worker)
        try:
            pid = self.molds.request(worker) or self.spawner(worker)
        except OSError as exc:  # EAGAIN, ENOMEM: out of processes or memory; try again later
            self.scoreboard.release(slot.index)
            self._back_off(f"Cannot fork a worker: {exc.strerror}.")
            return None
        worker.pid = pid
        self.workers[pid] = worker
        if pid > 0:  # else asked of the mold; the worker's pid comes through its slot
            self.scoreboard.bind_pid(slot, pid)
            self.log.info("Booting worker with pid: %s", pid)
        return worker

    def _fork(self, worker: WorkerProcess) -> int:
        ppid = os.getpid()
        with sigs.blocked(sigs.MASTER_SIGNALS):
            pid = os.fork()
            if pid == 0:
                self.close_in_child()
        if pid == 0:
            self._child(worker, ppid)  # never returns
        return pid

    def _child(self, worker: WorkerProcess, ppid: int) -> None:
        worker.pid = os.getpid()

        def post_fork() -> None:
            from setproctitle import setproctitle

            setproctitle(f"arbiter: worker [{self.cfg.title_name}]")
            hook = self.cfg.hook("post_fork")
            if hook:
                hook(self.server, worker)

        def on_exit(instance: Worker) -> None:
            hook = self.cfg.hook("worker_exit")
            if hook:
                hook(self.server, instance)

        worker_boot.run_worker(
            cfg=self.cfg, age=worker.age, ppid=ppid, generation=worker.generation, slot=worker.slot,
            sockets=[listener.sock for listener in self.listeners], preloaded=self.preloaded,
            traceback_turn_fd=self._traceback_turn_r, announce_fd=self._announce_r,
            post_fork=post_fork, on_exit=on_exit,
            as_mold=self._as_mold,
        )

    def _as_mold(self, instance: Worker) -> int:
        """In a promoted worker: serve as the mold; each worker it forks starts here again, with
        the mold's warm app as if it had been preloaded."""
        mold_pid = os.getpid()

        def start_child(request: worker_mold.ForkRequest, master_pid: int) -> None:
            self.preloaded = instance.app
            child = WorkerProcess(age=request.age, generation=request.generation,
                                  slot=self.scoreboard.slot(request.slot), spawned_at=self.clock(),
                                  forked_from=mold_pid)
            self._child(child, master_pid)

        return worker_mold.serve(instance, self.molds.requests_r, start_child)

    # -- events ----------------------------------------------------------------------------

    def exited(self, pid: int, status: int) -> int | None:
        """A worker was reaped. Returns an exit code if the master must stop (boot failure)."""
        worker = self.workers.pop(pid, None)
        if worker is None:
            self.molds.orphan(pid, status)
            return None
        # The slot outlives the process: a worker that served and died before this turn saw it
        # READY still says so there, and must not be taken for a boot failure.
        view = self.scoreboard.read(worker.slot.index)
        if view.state in (SlotState.READY, SlotState.RETIRING, SlotState.DRAINING):
            worker.ready = True
            self.served_ok = True
        self._note_request_timeouts(worker, view.request_timeouts)
        self.scoreboard.release(worker.slot.index)
        code = os.waitstatus_to_exitcode(status)
        self.emit("ARBITER_WORKER_EXITED", pid=pid, generation=worker.generation, status=code,
                  expected=int(worker.stop_sent or worker.killed))
        hook = self.cfg.hook("child_exit")
        if hook:
            hook(self.server, worker)
        if self.molds.exited(worker, status):
            return None
        if worker.ready or worker.stop_sent:
            self._spawn_backoff = 0.0
            if worker.stop_sent or worker.killed:
                self.log.debug("Worker (pid:%s) stopped: %s", pid, sigs.exit_description(status))
            elif worker.request_timeouts and not worker.wants_retirement:
                # A sync worker stopped its stuck request and left; its slot says so.
                self.stats["restarts"] += 1
                self.count_restart("request_timeout")
                self.log.warning("Worker (pid:%s) stopped a request at --request-timeout and exited; replacing it",
                                 pid)
            else:
                self.stats["restarts"] += 1
                self.count_restart("exit")
                if code != 0:
                    self.log.error("Worker (pid:%s) %s", pid, sigs.exit_description(status))
                else:
                    self.log.info("Worker (pid:%s) exited", pid)
            return None
        if worker.aborted_at is not None:
            reason = "Worker not ready within the timeout."
        else:
            reason = {APP_LOAD_ERROR: "App failed to load.", WORKER_BOOT_ERROR: "Worker failed to boot."}.get(
                code, f"Worker died while booting ({sigs.exit_description(status)}).")
        return self._boot_failed(worker, code, reason)

    def _boot_failed(self, worker: WorkerProcess, code: int, reason: str) -> int | None:
        if not self.served_ok and code in (WORKER_BOOT_ERROR, APP_LOAD_ERROR):
            # First boot: nothing serves yet, so a retry would only fork-loop. Stop, as Gunicorn.
            self.log.critical("%s Stopping (exit %d).", reason, code)
            return code
        if worker.generation == self.generation and any(
            w.generation != self.generation and not w.stop_sent for w in self.workers.values()
        ):
            self.abandon_generation(reason)
            return None
        # A replacement failed while others serve, or a crash at first boot: retry, but never
        # in a tight loop.
        self._back_off(reason)
        self._refill_traceback_turn()
        return None

    def _back_off(self, reason: str) -> None:
        self._spawn_backoff = min(MAX_SPAWN_BACKOFF, max(1.0, self._spawn_backoff * 2))
        self._spawn_not_before = self.clock() + self._spawn_backoff
        self.log.error("%s Retrying in %.0f s.", reason, self._spawn_backoff)

    def abandon_generation(self, reason: str) -> None:
        """The new generation cannot boot: keep the old one serving, and say so."""
        failed = self.generation
        self.generation = max(w.generation for w in self.workers.values() if w.generation != failed)
        self.reload_failures += 1
        self.last_reload = ReloadState.failed(reason)
        self.log.error("Reload failed: %s Generation %d abandoned; generation %d keeps serving.",
                       reason, failed, self.generation)
        for worker in list(self.workers.values()):
            if worker.generation == failed:
                self._send_stop(worker, self.clock(), reason="reload")
        self._refill_traceback_turn()

    def _refill_traceback_turn(self) -> None:
        try:
            os.read(self._traceback_turn_r, 1)
        except BlockingIOError:
            pass
        os.write(self._traceback_turn_w, b"t")

    def announce_choice(self) -> None:
        """Let the next worker that resolves `auto` log which class it chose (at most one byte
        waits in the pipe). Nothing to do when the master knows the class itself."""
        if self.cfg.worker_class != "auto" or self.preloaded is not None:
            return
        try:
            os.read(self._announce_r, 1)
        except BlockingIOError:
            pass
        os.write(self._announce_w, b"a")

    def adopt(self, handover: HandOver, configured: int) -> None:
        """Take over the workers a previous master image ran (after an in-place upgrade)."""
        now = self.clock()
        self.age = handover.age
        self.generation = handover.generation
        self.target = configured if configured != handover.configured else handover.target
        for item in handover.workers:
            worker = WorkerProcess(age=item.age, generation=item.generation, slot=self.scoreboard.slot(item.slot),
                                   spawned_at=now, pid=item.pid, ready=item.ready)
            self.workers[item.pid] = worker
            self.served_ok = self.served_ok or item.ready

    def handover_workers(self) -> list[AdoptedWorker]:
        # The new image starts from the master again, as a reload does: the mold is stopped, not
        # handed over (it exits within a heartbeat; the new image reaps it as an unknown child).
        self.molds.reset()
        return [AdoptedWorker(pid=w.pid, age=w.age, generation=w.generation, slot=w.slot.index, ready=w.ready)
                for w in self.workers.values() if w.pid > 0 and w.role == "worker"]

    def begin_reload(self) -> None:
        self.stats["reloads"] += 1
        self.generation += 1
        self.molds.reset()
        self.last_reload = RELOADING
        self._refill_traceback_turn()
        self.announce_choice()
        self.log.info("Reloading: starting generation %d", self.generation)

    # -- each loop turn --------------------------------------------------------------------

    def check(self, now: float, awake_since: float) -> None:
        """Read the scoreboard: readiness, retirement requests, hung workers."""
        timeout = self.cfg.timeout
        self.molds.resolve(now)
        for worker in list(self.workers.values()):
            view = self.scoreboard.read(worker.slot.index)
            if not worker.ready and view.state in (SlotState.READY, SlotState.RETIRING):
                worker.ready = True
                self.served_ok = True
                self.log.debug("Worker (pid:%s) ready", worker.pid)
                self.emit("ARBITER_WORKER_BOOTED", pid=worker.pid, generation=worker.generation)
            self._note_request_timeouts(worker, view.request_timeouts)
            if view.state == SlotState.RETIRING and not worker.wants_retirement:
                worker.wants_retirement = True
                if worker.request_timeouts:
                    worker.replace_reason = "request_timeout"  # counted when it is drained
                    self.log.warning("Worker (pid:%s) has a request it could not stop (--request-timeout); "
                                     "replacing it, then draining it", worker.pid)
            if worker.aborted_at is not None:
                if not worker.killed and now - worker.aborted_at > ABORT_GRACE:
                    self._kill(worker, signal.SIGKILL)
                continue
            if worker.stop_sent_at is not None and now - worker.stop_sent_at > self.cfg.graceful_timeout:
                if not worker.killed:
                    self.log.warning("Worker (pid:%s) did not stop within graceful_timeout; killing", worker.pid)
                    self._kill(worker, signal.SIGKILL)
                continue
            # A booting worker has `timeout` to become ready; a ready one, between heartbeats.
            # A master that was itself stopped (SIGSTOP, a paused VM) cannot tell how long its
            # workers were silent, so silence counts only from when it was last awake; and no
            # worker has been silent since before it was forked.
            heard = view.heartbeat_ns / 1e9 if worker.ready else 0.0
            last = max(heard, worker.spawned_at, awake_since)
            if timeout and now - last > timeout:
                self.stats["timeouts"] += 1
                self.count_restart("timeout")
                self.emit("ARBITER_WORKER_TIMEOUT", pid=worker.pid, generation=worker.generation,
                          booting=int(not worker.ready))
                self.log.critical("WORKER TIMEOUT (pid:%s)%s", worker.pid, "" if worker.ready else " while booting")
                worker.aborted_at = now
                self._signal(worker, signal.SIGABRT)

    def _note_request_timeouts(self, worker: WorkerProcess, seen: int) -> None:
        """Count requests a worker stopped at --request-timeout since its slot was last read."""
        if seen > worker.request_timeouts:
            self.stats["request_timeouts"] += seen - worker.request_timeouts
            worker.request_timeouts = seen

    def manage(self, now: float) -> None:
        """Spawn and retire workers until the pool matches its target and generation."""
        self.molds.manage(now)
        current = self.current()
        old = [w for w in self.workers.values()
               if (w.generation != self.generation or w.wants_retirement) and not w.stop_sent and w.role == "worker"]
        ready_current = sum(1 for w in current if w.ready)
        missing = self.target - len(current)
        if old and missing > 0:
            # Rolling: only a batch of new workers boots at a time beside the old ones.
            booting = len(current) - ready_current
            missing = min(missing, self.cfg.reload_batch - booting)
        if missing > 0 and now >= self._spawn_not_before and not self.molds.holding():
            for _ in range(missing):
                if self.spawn() is None:
                    break
        # Keep as many old workers as it takes, with the ready new ones, to serve at full count.
        keep = max(0, self.target - ready_current)
        for worker in sorted(old, key=lambda w: w.age)[: max(0, len(old) - keep)]:
            reason = "reload" if worker.generation != self.generation else worker.replace_reason
            self._send_stop(worker, now, reason=reason)
        if len(current) > self.target:  # TTOU: retire the newest
            for worker in sorted(current, key=lambda w: w.age, reverse=True)[: len(current) - self.target]:
                self._send_stop(worker, now, reason="scale")
        if self.last_reload.in_progress and not old and ready_current >= self.target:
            self.last_reload = RELOAD_DONE
            self.log.info("Reload done: generation %d serving with %d workers", self.generation, ready_current)

    def replace_worker(self, pid: int, reason: str = "manual") -> bool:
        """Replace worker `pid` the way `max_requests` does: its successor boots first, then it
        drains (`manage` does both); counted under `reason` once drained. False when there is no
        such worker or it is already going."""
        worker = self.workers.get(pid)
        if worker is None or worker.stop_sent or worker.wants_retirement or worker.role != "worker":
            return False
        worker.wants_retirement = True
        worker.replace_reason = reason
        if reason == "manual":
            self.log.info("Worker (pid:%s) to be replaced, as asked over the control API", pid)
        return True

    def _send_stop(self, worker: WorkerProcess, now: float, sig: int = signal.SIGTERM,
                   reason: str | None = None) -> None:
        if worker.stop_sent and sig == signal.SIGTERM:
            return
        if reason is not None and not worker.stop_sent:
            self.count_restart(reason)
        worker.stop_sent_at = worker.stop_sent_at or now
        self._signal(worker, sig)

    def _signal(self, worker: WorkerProcess, sig: int) -> None:
        if worker.pid <= 0:  # asked of the mold, not registered yet: a placeholder, never a pid
            return
        try:
            self.kill(worker.pid, sig)
        except ProcessLookupError:
            pass

    def _kill(self, worker: WorkerProcess, sig: int) -> None:
        worker.killed = True
        self._signal(worker, sig)

    def signal_all(self, sig: int) -> None:
        for worker in self.workers.values():
            self._signal(worker, sig)

    def stop_all(self, now: float, sig: int = signal.SIGTERM) -> None:
        """Stop every worker: SIGTERM drains, SIGQUIT leaves at once."""
        for worker in self.workers.values():
            self._send_stop(worker, now, sig)

    def kill_all(self) -> None:
        for worker in self.workers.values():
            self._kill(worker, signal.SIGKILL)

    def close(self) -> None:
        self.molds.close()
        for fd in (self._traceback_turn_r, self._traceback_turn_w, self._announce_r, self._announce_w):
            os.close(fd)
