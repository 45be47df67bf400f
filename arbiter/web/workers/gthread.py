"""The thread worker (gthread): the sync worker's selector front end, app calls on a pool.

The main thread owns the selector, accepts, reads request heads, heartbeats and enforces
timeouts, exactly as the sync worker does. A connection whose request head is complete leaves
the selector for a `ThreadPoolExecutor(cfg.threads)`, where its requests are answered (the
body is read and the response written from that thread). When it is done the thread puts the
connection on a queue and writes a byte to a pipe; the main loop wakes, and puts the
connection back in the selector or closes it. A connection is owned by one thread at a time,
so it needs no lock.

Graceful stop (as the sync worker: idle connections get their keep-alive grace, see
`SyncWorker.begin_stop`): wait up to `graceful_timeout` for the requests in flight, then shut
down the sockets still in use (so threads blocked on a client return) and leave; the process
exit (`os._exit` in the child) does not wait for app code stuck in a thread.
"""

from __future__ import annotations

import collections
import os
import selectors
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import ClassVar

from arbiter.web.http.connection import Connection
from arbiter.web.http.deadlines import InFlight, stacks
from arbiter.web.workers.sync import SyncWorker


class _DonePipe:
    """Marks the completion pipe in the selector."""


class ThreadWorker(SyncWorker):
    """WSGI worker answering up to `threads` requests at once."""

    multithread: ClassVar[bool] = True

    def setup(self) -> None:
        super().setup()
        self.pool = ThreadPoolExecutor(max_workers=max(1, int(self.cfg.threads)), thread_name_prefix="arbiter-wsgi")
        # deque.append and popleft are atomic: the queue needs no lock of its own.
        self.finished: collections.deque[tuple[Connection, bool]] = collections.deque()
        self.done_r, self.done_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.done_marker = _DonePipe()
        self.selector.register(self.done_r, selectors.EVENT_READ, self.done_marker)
        self.in_flight = 0
        self._count_lock = threading.Lock()
        # Connections whose request ran past --request-timeout: answered (504) or cut from here,
        # no longer counted, still held by their thread until its app call returns.
        self.abandoned: set[Connection] = set()

    def teardown(self) -> None:
        for conn in list(self.conns.values()):
            if conn.busy:
                # Unblock a thread waiting on its client; the thread then finds the socket gone.
                try:
                    conn.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        # A worker becoming the mold must leave no thread behind (a fork copies only the
        # calling thread, and any lock another one held stays locked in every child): wait.
        self.pool.shutdown(wait=self.promoted and not self.in_flight, cancel_futures=True)
        super().teardown()
        for fd in (self.done_r, self.done_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def capacity(self) -> int:
        return max(1, int(self.cfg.threads))

    def request_done(self) -> bool:
        # The scoreboard counter is a read-modify-write; threads must not interleave on it.
        with self._count_lock:
            return super().request_done()

    # -- handing connections to the pool and back ------------------------------------------

    def dispatch(self, conn: Connection, now: float) -> None:
        self.selector.unregister(conn.fd)
        conn.busy = True
        self.in_flight += 1
        self.slot.set_in_progress(self.in_flight)
        self.pool.submit(self._work, conn)

    def _work(self, conn: Connection) -> None:
        keep = False
        try:
            keep = self.handler.serve(conn)
        except Exception:
            self.log.exception("Error serving connection from %s", conn.remote_addr)
        finally:
            self.finished.append((conn, keep))
            try:
                os.write(self.done_w, b".")
            except (BlockingIOError, OSError):
                pass  # a full pipe already promises a wake-up

    def on_event(self, data: object, now: float) -> None:
        if data is not self.done_marker:
            return
        try:
            while os.read(self.done_r, 4096):
                pass
        except BlockingIOError:
            pass
        finished = self.finished
        while finished:
            conn, keep = finished.popleft()
            conn.busy = False
            if conn in self.abandoned:
                self.abandoned.discard(conn)
                conn.close()
                continue
            self.in_flight -= 1
            self.slot.set_in_progress(self.in_flight)
            if conn.fd not in self.conns:
                conn.close()  # dropped while in flight (forced stop)
                continue
            if keep and not conn.closed:
                self.selector.register(conn.fd, selectors.EVENT_READ, conn)
            self.after_serve(conn, keep, now)

    # -- request deadlines ------------------------------------------------------------------

    def sweep(self, now: float) -> None:
        super().sweep(now)
        if self.deadlines is not None:
            for entry in self.deadlines.overdue(now):
                self.expire_request(entry, now)

    def expire_request(self, entry: InFlight, now: float) -> None:
        """A thread's request is past its deadline. A thread cannot be killed: its client is
        answered (504) or cut from here, its connection stops counting (a drain does not wait for
        it), and the worker asks for a successor; it drains once that one is ready, finishing
        its other requests, and its exit ends the stuck thread."""
        assert self.deadlines is not None
        record = self.deadlines.stop(
            entry, self.pid, "the worker will be replaced once its other requests finish (a thread cannot be stopped)",
            stacks(entry.runner))
        if record is None:
            return  # it ended just now after all
        self.report_request_timeout(record)
        conn = entry.resp.conn
        if self.conns.pop(conn.fd, None) is not None:
            self.in_flight -= 1
            self.abandoned.add(conn)
            self.slot.set_connections(len(self.conns))
        self.ask_replacement("A request ran past --request-timeout")

    # -- graceful stop ---------------------------------------------------------------------

    def stopped(self, now: float) -> bool:
        # Busy connections stay in `conns`, so "none left" includes "none in flight".
        if not super().stopped(now):
            return False
        if self.in_flight:
            self.log.warning("Graceful timeout: %d requests still running; leaving them", self.in_flight)
        return True
