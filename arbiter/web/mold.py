"""The mold, from the inside: a worker that stopped serving and forks new workers on request.

Reforking (docs/reforking.md): the master promotes a warm worker (SIGURG). The worker class
finishes its connections and stops its threads or event loop; then this module takes over:
`on_refork(worker)`, a collection and `gc.freeze()` (what is frozen is never written by the
collector again, so its pages stay shared with every child), and a loop that heartbeats and
reads fork requests from a pipe the master writes.

A request is one fixed-size record: (scoreboard slot, worker age, generation). The mold forks
twice: the middle process exits at once, so the new worker is orphaned and, the master being a
child subreaper, becomes the master's own child. The new worker writes its pid into the slot it
was given: that is the master's answer, read on its next scoreboard pass. Nothing here waits on
the master, and the master never waits on the mold.
"""

from __future__ import annotations

import gc
import logging
import os
import select
import signal
import struct
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from arbiter.web.scoreboard import SlotState
from arbiter.web.workers.base import Worker

log = logging.getLogger("arbiter.error")

REQUEST = struct.Struct("=III")  # slot index, age, generation: 12 bytes, one atomic pipe write
REPARENT_WAIT = 5.0  # seconds a new worker waits to become the master's child before giving up
THREADS_WAIT = 5.0  # seconds the mold gives threads told to stop (an executor's idle workers)
# Signals the mold handles (the worker's); blocked around each fork so that no handler of the
# mold's runs in the new worker before it installs its own.
_FORK_BLOCKED = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGABRT, signal.SIGUSR1,
                 signal.SIGURG, signal.SIGCHLD)


class ForkRequest(NamedTuple):
    slot: int
    age: int
    generation: int

    def encode(self) -> bytes:
        return REQUEST.pack(self.slot, self.age, self.generation)


# start_child(request, master_pid): runs in the new worker, never returns.
StartChild = Callable[[ForkRequest, int], None]


def serve(worker: Worker, requests_fd: int, start_child: StartChild) -> int:
    """Be the mold until stopped (SIGTERM, the master gone). Returns the exit code.

    A mold must hold one thread only: a fork copies just the calling thread, and a lock another
    thread held stays locked forever in every child. An app that keeps a thread of its own
    running past `on_refork` cannot be reforked; the mold says so and exits (code 3), and the
    master stops trying until the next reload.
    """
    master_pid = worker.ppid
    hook = worker.cfg.hook("on_refork")
    if hook:
        hook(worker)
    deadline = time.monotonic() + THREADS_WAIT
    for thread in threading.enumerate():
        if thread is not threading.main_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
    others = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    if others:
        log.error("Worker (pid:%d) cannot become the mold: threads still running after on_refork: %s",
                  os.getpid(), ", ".join(sorted(others)))
        return 3
    # Collect, then freeze. CPython's docs suggest freezing without collecting (freed memory
    # becomes holes each child fills); measured with memory_bench on both of its apps, collecting
    # first gave the lower total (fastapi_big 223 vs 243 MB, lazy_state_app 160 vs 179 MB).
    gc.collect()
    gc.freeze()
    try:
        from setproctitle import setproctitle

        setproctitle(f"arbiter: mold [{worker.cfg.title_name}]")
    except ImportError:  # pragma: no cover - a dependency; titles are cosmetic
        pass
    worker.slot.set_state(SlotState.MOLD)
    log.info("Worker (pid:%d) is now the mold", os.getpid())
    pending = b""
    while worker.alive:
        worker.notify()  # heartbeat; notices an orphaned mold
        try:
            readable, _, _ = select.select([requests_fd, worker.wakeup_fd], [], [], 0.25)
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for clarity
            continue
        if worker.wakeup_fd in readable:
            worker.drain_wakeup()
        if requests_fd not in readable or not worker.alive:
            continue
        try:
            pending += os.read(requests_fd, REQUEST.size * 64)
        except (BlockingIOError, InterruptedError):
            continue
        while len(pending) >= REQUEST.size:
            request = ForkRequest(*REQUEST.unpack_from(pending))
            pending = pending[REQUEST.size:]
            try:
                fork_worker(worker, request, master_pid, start_child)
            except OSError as exc:  # EAGAIN, ENOMEM: the master drops the request after `timeout`
                log.error("The mold cannot fork a worker: %s", exc.strerror or exc)
    return 0


def fork_worker(worker: Worker, request: ForkRequest, master_pid: int, start_child: StartChild) -> None:
    """Fork twice; the grandchild becomes a worker, the middle process exits at once."""
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _FORK_BLOCKED)
    try:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                middle = os.getpid()
                if os.fork() == 0:
                    _become_worker(worker, request, master_pid, middle, old_mask, start_child)
                code = 0
            finally:
                os._exit(code)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    try:
        os.waitpid(pid, 0)  # the middle process exits right after its fork: a short wait
    except ChildProcessError:
        pass


def _become_worker(worker: Worker, request: ForkRequest, master_pid: int, middle: int,
                   old_mask: set[signal.Signals | int], start_child: StartChild) -> None:
    """In the grandchild. Never returns."""
    code = 0
    try:
        # Wait to be the master's child: only then is a parent-death signal about the master.
        deadline = time.monotonic() + REPARENT_WAIT
        while (ppid := os.getppid()) != master_pid:
            if ppid != middle or time.monotonic() > deadline:
                return  # the master is gone, or is not a subreaper: nobody would supervise us
            time.sleep(0.0005)
        slot = worker.slot.sibling(request.slot)
        # The master may have given up on this request (the mold was slow or died) and freed
        # the slot: then it no longer carries the generation it was claimed for.
        if slot.pid != 0 or slot.generation != request.generation:
            return
        for sig in _FORK_BLOCKED:
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGURG, signal.SIG_IGN)  # until the new worker handles it
        for fd in (worker.wakeup_fd, worker._wakeup_w):
            try:
                os.close(fd)
            except OSError:
                pass
        slot.register(os.getpid())
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        start_child(request, master_pid)
    except BaseException:
        log.exception("A worker forked by the mold failed to start")
        code = 1
    finally:
        os._exit(code)
