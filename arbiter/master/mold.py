"""Reforking, as the master sees it: promoting a warm worker to the mold, asking it for workers.

See docs/reforking.md. The pool calls in at a few points (spawn, check, manage, exited, reload);
everything else about the mold lives here, so the pool's own logic reads as before.

- Promotion: once a serving worker forked from the current template (the master, or the last
  mold) has served `refork_after[step]` requests, or when `arbiter ctl refork` asks, the master
  sends it SIGURG and stops spawning until it reports MOLD in its scoreboard slot (it finishes
  its connections first). A previous mold is then retired.
- Forking: `request()` writes (slot, age, generation) into a pipe the mold reads. The worker is
  tracked at once under a placeholder key (a negative number, never signalled) and re-keyed by
  its pid once it registers in its slot. A request nobody answers within `timeout` is dropped and
  its slot freed; the pool then forks from the master.
- Replacement: once a mold is ready, the workers not forked from it are replaced one at a time
  through the pool's replace-before-drain path (`wants_retirement`), so capacity never drops.
- Fallback: a mold that dies is forgotten; new workers fork from the master (or its preloaded
  image) and the last threshold applies again, so a later worker is promoted anew.
- The master is a child subreaper (set at the first promotion): the double-forked workers are
  its children. So are orphaned grandchildren of programs; those are reaped and remembered
  briefly (a mold-forked worker may exit before the master has read its pid).
"""

from __future__ import annotations

import collections
import os
import signal
from typing import TYPE_CHECKING

from arbiter.master import host
from arbiter.web.mold import ForkRequest
from arbiter.web.scoreboard import SlotState

if TYPE_CHECKING:
    from arbiter.master.pool import WorkerPool, WorkerProcess

PROMOTE_GRACE = 5.0  # beyond graceful_timeout, how long a promoted worker may take to be the mold
# A worker that took the promotion stops accepting (DRAINING) within a turn of its loop; one still
# READY this long after SIGURG ignored it: its class cannot refork (a custom class, uvicorn).
PROMOTE_ACK = 2.0
ORPHANS_KEPT = 256  # recently reaped unknown pids remembered


class MoldKeeper:
    """The master's record of the mold and of the workers it was asked to fork."""

    def __init__(self, pool: WorkerPool) -> None:
        self.pool = pool
        self.step = 0  # index into refork_after of the next promotion
        self.mold: WorkerProcess | None = None
        self.mold_ready = False
        self.promoting: WorkerProcess | None = None
        self.promoted_at = 0.0
        self.replacing: WorkerProcess | None = None
        self.forced = False  # `arbiter ctl refork`: promote at the next turn, threshold or not
        self.disabled: str | None = None  # why reforking is off until the next reload
        self.unsupported: str | None = None  # the worker class ignores promotion: off for good
        self.pending: dict[int, WorkerProcess] = {}  # slot index -> requested, not registered
        self.orphans: collections.OrderedDict[int, int] = collections.OrderedDict()  # pid -> status
        self.subreaper = False
        # Every worker inherits the read end; only the mold reads it. The master keeps it too,
        # to empty what a dead mold left unread.
        self.requests_r, self.requests_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    @property
    def thresholds(self) -> tuple[int, ...]:
        return self.pool.cfg.refork_after

    @property
    def template(self) -> int:
        """The pid new workers fork from: the ready mold's, or 0 for the master."""
        return self.mold.pid if self.mold is not None and self.mold_ready else 0

    def holding(self) -> bool:
        """True while a promotion is under way: new workers wait to fork from the new mold."""
        return self.promoting is not None

    def busy(self) -> bool:
        return self.promoting is not None or bool(self.pending)

    # -- asked of the control API --------------------------------------------------------------

    def refork_now(self) -> str | None:
        """Promote a worker at the next turn. Returns why not, or None."""
        if self.pool.cfg.worker_class.lower().find("gevent") >= 0:
            return "reforking does not work with gevent workers"
        if self.promoting is not None or self.forced:
            return "a promotion is already under way"
        if not any(w.ready for w in self.pool.current()):
            return "no serving worker to promote"
        self.disabled = self.unsupported = None
        self.forced = True
        self.pool.log.info("Refork asked over the control API")
        return None

    # -- spawning ------------------------------------------------------------------------------

    def request(self, worker: WorkerProcess) -> int:
        """Ask the mold for `worker`; returns its placeholder key, or 0 to fork from the master."""
        mold = self.mold
        if mold is None or not self.mold_ready or mold.stop_sent or mold.aborted_at is not None:
            return 0
        try:
            os.write(self.requests_w, ForkRequest(worker.slot.index, worker.age, worker.generation).encode())
        except (BlockingIOError, BrokenPipeError):  # a full pipe: the mold is not reading
            return 0
        worker.forked_from = mold.pid
        self.pending[worker.slot.index] = worker
        return -(worker.slot.index + 1)

    # -- each turn -----------------------------------------------------------------------------

    def resolve(self, now: float) -> None:
        """Re-key the workers that registered in their slot; give up on those that never will."""
        pool = self.pool
        limit = pool.cfg.timeout or 30.0
        for index, worker in list(self.pending.items()):
            pid = pool.scoreboard.read(index).pid
            if pid > 0:
                del self.pending[index]
                pool.workers.pop(worker.pid, None)
                worker.pid = pid
                pool.workers[pid] = worker
                pool.scoreboard.bind_pid(worker.slot, pid)
                pool.log.info("Booting worker with pid: %s (forked by the mold, pid %s)", pid, worker.forked_from)
                if pid in self.orphans:  # it came and went before this pass
                    pool.exited(pid, self.orphans.pop(pid))
                elif worker.stop_sent_at is not None:  # the master began stopping meanwhile
                    pool.kill(pid, signal.SIGTERM)
            elif self.mold is None:
                self._drop(index, worker, "the mold is gone")
            elif now - worker.spawned_at > limit:
                self._drop(index, worker, "the mold did not fork it in time")
                self._give_up_on_mold(f"it did not answer within {limit:.0f} s")
        promoting = self.promoting
        if promoting is not None and pool.scoreboard.read(promoting.slot.index).state == SlotState.MOLD:
            self._promoted(promoting)

    def _drop(self, index: int, worker: WorkerProcess, why: str) -> None:
        pool = self.pool
        del self.pending[index]
        pool.workers.pop(worker.pid, None)
        pool.scoreboard.release(index)
        pool.log.warning("A worker asked of the mold never registered (%s); forking from the master", why)

    def _give_up_on_mold(self, why: str) -> None:
        """A mold that heartbeats but does not fork (out of memory, out of processes): retire it,
        fork from the master, and promote again at the last threshold."""
        mold, self.mold, self.mold_ready = self.mold, None, False
        if mold is None:
            return
        self.step = max(0, self.step - 1)
        self.pool.log.error("Retiring the mold (pid:%s): %s; forking from the master", mold.pid, why)
        self.pool._send_stop(mold, self.pool.clock())
        for index, pending in list(self.pending.items()):
            self._drop(index, pending, "the mold is retired")

    def _promoted(self, worker: WorkerProcess) -> None:
        pool = self.pool
        old, self.mold, self.mold_ready, self.promoting = self.mold, worker, True, None
        worker.role = "mold"
        if self.forced:
            self.forced = False
        else:
            self.step += 1
        pool.stats["reforks"] += 1
        pool.log.info("Worker (pid:%s) is the mold now; new workers fork from it", worker.pid)
        if old is not None:
            pool.log.info("Retiring the previous mold (pid:%s)", old.pid)
            pool._send_stop(old, pool.clock())

    def manage(self, now: float) -> None:
        """Promote when a threshold is reached; replace workers not forked from the mold."""
        pool = self.pool
        if self.promoting is not None:
            limit = pool.cfg.graceful_timeout + PROMOTE_GRACE
            state = pool.scoreboard.read(self.promoting.slot.index).state
            if now - self.promoted_at > PROMOTE_ACK and state in (SlotState.READY, SlotState.RETIRING):
                worker, self.promoting = self.promoting, None
                worker.role = "worker"  # it never stopped serving: it stays as it is
                why = f"worker {worker.pid} ignored the promotion (its class cannot refork)"
                self.unsupported = self.disabled = why
                pool.log.error("Reforking off: %s", self.disabled)
            elif now - self.promoted_at > limit:
                worker, self.promoting = self.promoting, None
                self.disabled = f"worker {worker.pid} did not become the mold within {limit:.0f} s"
                pool.log.error("Reforking off until the next reload: %s; replacing it", self.disabled)
                worker.role = "worker"
                worker.wants_retirement = True
            return
        if self.disabled is not None:
            return
        if self.forced or self.step < len(self.thresholds):
            self._maybe_promote(now)
        if self.mold is not None and self.mold_ready and self.promoting is None:
            self._replace_next()

    def _maybe_promote(self, now: float) -> None:
        pool = self.pool
        # Not while the pool is in flux (a reload's old generation or a replaced worker still
        # draining): one change at a time, and the promoted worker is never the last one serving.
        if any(w.stop_sent or w.wants_retirement or w.generation != pool.generation
               for w in pool.workers.values() if w.role == "worker"):
            return
        # With a mold, only its own workers are warm enough to matter; without one (the first time,
        # or after the mold died), any serving worker will do.
        template = self.template
        candidates = [w for w in pool.current()
                      if w.ready and w.pid > 0 and (not template or w.forked_from == template)]
        if not candidates:
            return
        if self.forced:
            chosen = max(candidates, key=lambda w: pool.scoreboard.read(w.slot.index).requests)
        else:
            threshold = self.thresholds[self.step]
            ripe = [w for w in candidates if pool.scoreboard.read(w.slot.index).requests >= threshold]
            if not ripe:
                return
            chosen = ripe[0]
        if not self.subreaper:
            self.subreaper = host.set_child_subreaper()
            if not self.subreaper:
                self.disabled = "this kernel cannot make the master a child subreaper"
                pool.log.error("Reforking off: %s", self.disabled)
                return
        self._empty_requests()
        chosen.role = "promoting"
        self.promoting, self.promoted_at = chosen, now
        requests = pool.scoreboard.read(chosen.slot.index).requests
        pool.log.info("Promoting worker (pid:%s, %d requests served) to be the mold", chosen.pid, requests)
        pool._signal(chosen, signal.SIGURG)

    def _replace_next(self) -> None:
        pool = self.pool
        if self.replacing is not None and self.replacing.pid in pool.workers and not self.replacing.stop_sent:
            return  # one at a time: the next once this one's successor is ready
        current = pool.current()
        if any(not w.ready for w in current) or self.pending:
            return
        assert self.mold is not None
        stale = [w for w in current if w.forked_from != self.mold.pid]
        if not stale:
            self.replacing = None
            return
        worker = min(stale, key=lambda w: w.age)
        worker.wants_retirement = True
        worker.replace_reason = "refork"  # counted in arbiter_worker_restarts_total when drained
        self.replacing = worker
        pool.stats["refork_replacements"] += 1
        pool.log.info("Replacing worker (pid:%s) with one forked by the mold", worker.pid)

    def _empty_requests(self) -> None:
        try:
            while os.read(self.requests_r, 4096):
                pass
        except BlockingIOError:
            pass

    # -- events ----------------------------------------------------------------------------

    def exited(self, worker: WorkerProcess, status: int) -> bool:
        """A reaped worker: True if it was a mold (or becoming one) and is dealt with here."""
        pool = self.pool
        if worker is self.promoting:
            self.promoting = None
            self.disabled = f"worker {worker.pid} could not become the mold"
            pool.log.error("Reforking off until the next reload: %s (%s)",
                           self.disabled, os.waitstatus_to_exitcode(status))
            return True
        if worker.role != "mold":
            return False
        if worker is self.mold:
            self.mold, self.mold_ready = None, False
            for index, pending in list(self.pending.items()):
                if pool.scoreboard.read(index).pid <= 0:
                    self._drop(index, pending, "the mold is gone")
            if not worker.stop_sent:
                self.step = max(0, self.step - 1)  # promote again at the last threshold
                pool.log.error("The mold (pid:%s) died (exit %s); forking from the master until a worker is "
                               "promoted again", worker.pid, os.waitstatus_to_exitcode(status))
                return True
        pool.log.info("Mold (pid:%s) stopped", worker.pid)
        return True

    def orphan(self, pid: int, status: int) -> None:
        """An exited child the pool does not know: a program's orphan, or a mold-forked worker
        that exited before it was re-keyed. Remembered briefly for the second case."""
        self.orphans[pid] = status
        while len(self.orphans) > ORPHANS_KEPT:
            self.orphans.popitem(last=False)
        self.pool.log.debug("Reaped an orphaned process (pid:%s)", pid)

    def reset(self) -> None:
        """A reload: the new generation starts from the master again, then reforks."""
        if self.mold is not None:
            self.pool._send_stop(self.mold, self.pool.clock())
        self.mold, self.mold_ready, self.replacing, self.forced = None, False, None, False
        if self.promoting is not None:
            self.promoting.role = "worker"
            self.promoting.wants_retirement = True
            self.promoting = None
        self.step, self.disabled = 0, self.unsupported
        self._empty_requests()

    def close(self) -> None:
        os.close(self.requests_r)
        os.close(self.requests_w)
