"""Telling the world where the pool stands: systemd (READY=1 once the pool first is, RELOADING=1
and READY=1 around a reload) and the event listeners (ARBITER_RELOAD_*), each said once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from arbiter.master.pool import WorkerPool
from arbiter.master.reload_state import NO_RELOAD, ReloadState
from arbiter.master.systemd import Notifier


@dataclass
class Reports:
    """What has been reported so far, so that each change is reported once."""

    ready_sent: bool = False
    reload_state: ReloadState = NO_RELOAD
    reloading: int = 0  # the generation the last reload started (for ARBITER_RELOAD_FAILED)

    def tick(self, pool: WorkerPool, notify: Notifier, emit: Callable[..., None]) -> None:
        if self.ready_sent and pool.last_reload == self.reload_state:
            return  # the common case: nothing to say
        ready = pool.ready_count()
        status = f"{ready} of {pool.target} workers ready, generation {pool.generation}"
        if not self.ready_sent and ready >= pool.target:
            self.ready_sent = True
            notify.ready(status)
        if pool.last_reload != self.reload_state:
            self.reload_state = state = pool.last_reload
            generation = pool.generation
            if state.in_progress:
                self.reloading = generation  # an abandoned generation is no longer the pool's
                emit("ARBITER_RELOAD_STARTED", generation=generation)
                notify.reloading(f"Reloading: {status}")
                return
            if state.has_failed:
                emit("ARBITER_RELOAD_FAILED", state.error, generation=max(generation, self.reloading))
            else:
                emit("ARBITER_RELOAD_FINISHED", generation=generation, workers=ready)
            notify.ready(f"Reload {state}; {status}")
