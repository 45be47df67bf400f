"""The sync worker: WSGI, one app call at a time, every waiting connection in one selector.

A connection holds the worker only while its app call runs. The listening sockets, idle
keep-alive connections, clients whose request head is still arriving and TLS handshakes all
wait in one `selectors.DefaultSelector`; the app is called once a request head is complete.
So slow clients (slowloris) cost a file descriptor each, not the worker.

Timeouts (documented choices where Gunicorn has none to copy):
- an idle keep-alive connection is closed after `keepalive` seconds (0 turns keep-alive off);
- a request head (and a TLS handshake) must arrive within `max(keepalive, 10 s)` of the
  connection opening, or of the first byte of the next request on a kept connection;
- while the app runs, each wait on the client (reading the body, sending the response) is
  bounded by the same time; the unread rest of a body is dropped as it arrives (up to 1 MiB,
  else the connection is closed), in the selector, without holding the worker;
- on a graceful stop, idle connections are kept until their keep-alive timer ends, and a
  request that arrives meanwhile is answered with `Connection: close` (see `begin_stop`).

`ThreadWorker` (gthread) reuses this front end and overrides `dispatch` to hand complete
requests to a thread pool.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import ssl
import sys
import threading
import time
from typing import Any, ClassVar

from arbiter import logs
from arbiter.web.http.connection import MIN_HEAD_TIMEOUT, RECV_SIZE, Connection, ListenerInfo
from arbiter.web.http.deadlines import Deadlines, InFlight, OneDeadline, stacks
from arbiter.web.http.environ import Trust
from arbiter.web.http.errors import RequestError
from arbiter.web.http.parser import Limits
from arbiter.web.http.proxy import ProxyHeader
from arbiter.web.http.response import DRAIN_LIMIT
from arbiter.web.http.wsgi import WSGIHandler
from arbiter.web.workers.base import Worker

HEARTBEAT_INTERVAL = 0.25
SWEEP_INTERVAL = 0.25
# Accepts per listener per loop turn: enough to empty a burst, few enough to stay fair to the
# connections already open.
ACCEPT_BATCH = 64
# After EMFILE and friends, wait this long before accepting again instead of spinning.
ACCEPT_BACKOFF = 0.5
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
_ACCEPT_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
EXIT_REQUEST_TIMEOUT = 1  # a sync worker that stopped a request exits with this (the slot says why)


class SyncWorker(Worker):
    """WSGI worker running one request at a time; connections wait in a selector."""

    interface = "wsgi"
    multithread: ClassVar[bool] = False
    refork_safe: ClassVar[bool] = True

    # -- life cycle ------------------------------------------------------------------------

    def run(self) -> None:
        self.setup()
        self.ready()
        try:
            self.loop()
        finally:
            self.teardown()

    def setup(self) -> None:
        cfg = self.cfg
        self.limits = Limits.from_config(cfg)
        self.keepalive = float(cfg.keepalive)
        self.head_timeout = max(self.keepalive, MIN_HEAD_TIMEOUT)
        self.io_timeout = self.head_timeout
        self.max_connections = max(1, int(cfg.worker_connections))
        self.graceful_timeout = float(cfg.graceful_timeout)
        self.ssl_context = self.tls_context()
        self.handler = WSGIHandler(self, multithread=self.multithread)
        self.deadlines: Deadlines | None = None
        self.watch_stop = threading.Event()
        if cfg.request_timeout > 0:
            if self.multithread:
                self.deadlines = self.handler.deadlines = Deadlines(
                    float(cfg.request_timeout), connections=lambda: self.conns.values())
            else:
                self.deadlines = self.handler.deadlines = OneDeadline(float(cfg.request_timeout))
                self.start_watchdog()
        self.trust = self.handler.trust
        self.proxy_mode = cfg.proxy_protocol  # --proxy-protocol: off, v1, v2 or auto
        self.proxy_trust = Trust(tuple(cfg.proxy_allow_ips))
        self.selector = selectors.DefaultSelector()
        self.conns: dict[int, Connection] = {}
        self.listeners: list[ListenerInfo] = []
        self.accepting = False
        self.resume_accept_at = 0.0
        self.accept_trouble = logs.RepeatedError(self.log, "Cannot accept connections")
        self.stop_deadline: float | None = None
        self._buf = bytearray(RECV_SIZE)
        self._view = memoryview(self._buf)
        for sock in self.sockets:
            sock.setblocking(False)
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                try:
                    # Linux hands TCP_NODELAY down to accepted sockets: one setsockopt here
                    # instead of one per connection. Streamed chunks must not wait on Nagle.
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError:
                    pass
            self.listeners.append(ListenerInfo.of(sock, self.ssl_context is not None))
        self.selector.register(self.wakeup_fd, selectors.EVENT_READ, None)
        self._set_accepting(True)

    def teardown(self) -> None:
        for conn in list(self.conns.values()):
            if not conn.busy:
                self.close_conn(conn)
        self.selector.close()
        # A worker promoted to the mold must leave no thread behind (arbiter.web.mold).
        self.watch_stop.set()

    # -- request deadlines (sync) ----------------------------------------------------------

    def start_watchdog(self) -> None:
        """Watch the request deadline from a thread of this worker.

        Why a thread rather than SIGALRM: a signal handler runs only in the main thread between
        two bytecodes, so app code blocked in a C call that retries after EINTR (many database
        drivers) would delay it indefinitely; a thread reads the main thread's stack from outside
        (`sys._current_frames`) whatever it is doing, and costs no system call per request (a
        timer would need two `setitimer` calls). Nor does it take SIGALRM from apps that use it.
        The thread is this worker's only one; it ends with the process, or when the worker stops
        serving (teardown), as one promoted to the mold must.
        """
        thread = threading.Thread(target=self._watch, name="arbiter-deadline", daemon=True)
        thread.start()

    def _watch(self) -> None:
        deadlines = self.deadlines
        assert isinstance(deadlines, OneDeadline)
        # Asleep until the request in flight is due (see OneDeadline: each wake-up costs the main
        # thread a GIL handoff), plus a little so it is surely past its deadline; or until the
        # worker stops serving (teardown), as one promoted to the mold must.
        while not self.watch_stop.wait(deadlines.until_due(time.monotonic()) + 0.001):
            overdue = deadlines.overdue(time.monotonic())
            if overdue:
                self.expire_and_exit(overdue[0])

    def expire_and_exit(self, entry: InFlight) -> None:
        """A sync worker's only request is stuck: it can serve nothing else, so after the stack
        and the 504 it exits at once, and the master forks its replacement as it reaps it. No
        unwinding: an exception thrown into the app could be caught there, or a `finally` block
        could block again; `os._exit` cannot be stopped."""
        assert self.deadlines is not None
        record = self.deadlines.stop(entry, self.pid, "the worker exits and is replaced", stacks(entry.runner))
        if record is None:
            return  # it ended just now after all
        self.report_request_timeout(record)
        for handler in logging.getLogger("arbiter.error").handlers:
            handler.flush()
        sys.stderr.flush()
        os._exit(EXIT_REQUEST_TIMEOUT)

    # -- the loop --------------------------------------------------------------------------

    def loop(self) -> None:
        select = self.selector.select
        last_beat = next_sweep = 0.0
        while True:
            now = time.monotonic()
            if now - last_beat >= HEARTBEAT_INTERVAL:
                self.notify()
                last_beat = now
            if not self.alive or self.promoted:
                if self.stop_deadline is None:
                    self.begin_stop(now)
                if self.stopped(now):
                    return
            if now >= next_sweep:
                self.sweep(now)
                next_sweep = now + SWEEP_INTERVAL
            events = select(HEARTBEAT_INTERVAL)
            now = time.monotonic()
            for key, _mask in events:
                data = key.data
                if type(data) is Connection:
                    self.on_readable(data, now)
                elif data is None:
                    self.drain_wakeup()
                elif type(data) is ListenerInfo:
                    self.accept(data, now)
                else:
                    self.on_event(data, now)

    def on_event(self, data: Any, now: float) -> None:
        """A selector entry registered by a subclass."""

    # -- accepting -------------------------------------------------------------------------

    def _set_accepting(self, on: bool) -> None:
        if on == self.accepting:
            return
        for info in self.listeners:
            if on:
                self.selector.register(info.sock, selectors.EVENT_READ, info)
            else:
                self.selector.unregister(info.sock)
        self.accepting = on

    def _maybe_resume_accepting(self, now: float) -> None:
        if (
            not self.accepting and self.stop_deadline is None and self.alive
            and len(self.conns) < self.max_connections and now >= self.resume_accept_at
        ):
            self._set_accepting(True)

    def accept(self, info: ListenerInfo, now: float) -> None:
        listener = info.sock
        tls = self.ssl_context is not None
        register = self.selector.register
        for _ in range(ACCEPT_BATCH):
            if len(self.conns) >= self.max_connections:
                self._set_accepting(False)  # resumed when a connection closes
                break
            try:
                # _accept gives the bare fd: socket.accept would also switch it to blocking
                # mode, one more system call that we would then undo.
                fd, addr = listener._accept()  # type: ignore[attr-defined]
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in _ACCEPT_EXHAUSTED:  # logged once, then a count every 10 s
                    self.accept_trouble.occurred(now, f"{exc}; retrying every {ACCEPT_BACKOFF:.1f}s")
                    self.resume_accept_at = now + ACCEPT_BACKOFF
                    self._set_accepting(False)
                    break
                continue  # ECONNABORTED and the like: that client is gone, try the next
            if self.accept_trouble.since is not None:
                self.accept_trouble.cleared(now)
            sock = socket.socket(listener.family, listener.type, listener.proto, fileno=fd)
            sock.setblocking(False)
            if tls:
                assert self.ssl_context is not None
                sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False,
                                                    suppress_ragged_eofs=self.cfg.suppress_ragged_eofs)
            conn = Connection(sock, addr, info, self.limits, self.io_timeout, False, tls)
            conn.trusted = self.trust.trusts(conn.remote_addr)
            if self.proxy_mode != "off":
                conn.proxy = ProxyHeader(self.proxy_mode, self.proxy_trust.trusts(conn.remote_addr))
            if not self.multithread:
                conn.tick = self.notify
            conn.deadline = now + self.head_timeout
            self.conns[conn.fd] = conn
            register(conn.fd, selectors.EVENT_READ, conn)
        self.slot.set_connections(len(self.conns))

    # -- reading ---------------------------------------------------------------------------

    def on_readable(self, conn: Connection, now: float) -> None:
        if conn.handshaking:
            self.handshake(conn, now)
            return
        sock = conn.sock
        try:
            n = sock.recv_into(self._buf)
        except _WOULD_BLOCK:
            return
        except OSError:
            self.close_conn(conn)
            return
        if not n:
            self.close_conn(conn)
            return
        parser = conn.parser
        if conn.proxy is not None:
            rest = self._proxy_header(conn, self._view[:n])
            if rest is None:
                return
            parser.feed(rest)
        else:
            parser.feed(self._view[:n])
        if conn.tls:
            # Decrypted bytes waiting inside the TLS layer do not make the socket readable.
            while sock.pending() and not parser.closed:  # type: ignore[attr-defined]
                try:
                    n = sock.recv_into(self._buf)
                except OSError:  # SSLWantRead* are OSErrors too
                    break
                parser.feed(self._view[:n])
        if parser.ready or parser.error is not None:
            self.dispatch(conn, now)
        elif parser.closed or parser.discarded > DRAIN_LIMIT:
            self.close_conn(conn, linger=True)
        elif not conn.waiting:
            conn.waiting = True
            conn.deadline = now + self.head_timeout

    def _proxy_header(self, conn: Connection, data: memoryview) -> bytes | None:
        """Read the PROXY header from a connection's first bytes: the bytes after it, or None
        (more is needed, or the connection was refused and closed)."""
        try:
            rest: bytes | None = conn.proxy.feed(bytes(data))
        except RequestError as err:
            self.handler.send_error(conn, err)
            self.close_conn(conn)
            return None
        if rest is not None:
            if conn.proxy.peer is not None:
                conn.remote_addr, conn.remote_port = conn.proxy.peer[0], str(conn.proxy.peer[1])
            conn.proxy = None
        return rest

    def handshake(self, conn: Connection, now: float) -> None:
        try:
            conn.handshake()
        except ssl.SSLWantReadError:
            self.selector.modify(conn.fd, selectors.EVENT_READ, conn)
            return
        except ssl.SSLWantWriteError:
            self.selector.modify(conn.fd, selectors.EVENT_WRITE, conn)
            return
        except (OSError, ValueError) as exc:
            self.log.debug("TLS handshake with %s failed: %s", conn.remote_addr, exc)
            self.close_conn(conn)
            return
        self.selector.modify(conn.fd, selectors.EVENT_READ, conn)
        self.on_readable(conn, now)  # the client may have sent its request with the handshake

    # -- serving ---------------------------------------------------------------------------

    def dispatch(self, conn: Connection, now: float) -> None:
        """A request head is complete on `conn`: serve it (and any pipelined after it) now."""
        keep = False
        self.slot.set_in_progress(1)
        try:
            keep = self.handler.serve(conn)
        except Exception:
            # The handler answers app and client errors itself; anything reaching here is a
            # fault of ours, and costs this connection, never the worker and its other clients.
            self.log.exception("Error serving connection from %s", conn.remote_addr)
        finally:
            self.slot.set_in_progress(0)
            self.after_serve(conn, keep, time.monotonic())

    def after_serve(self, conn: Connection, keep: bool, now: float) -> None:
        """Put a served connection back to wait for its next request, or close it."""
        parser = conn.parser
        if not keep or conn.closed:
            self.close_conn(conn, linger=parser.partial or parser.error is not None)
            return
        if parser.partial:
            conn.waiting = True  # the next head has begun, or an unread body is being dropped
            conn.deadline = now + self.head_timeout
        else:
            conn.waiting = False
            conn.deadline = now + self.keepalive

    # -- closing ---------------------------------------------------------------------------

    def close_conn(self, conn: Connection, linger: bool = False) -> None:
        if self.conns.pop(conn.fd, None) is not None and not conn.busy:
            try:
                self.selector.unregister(conn.fd)
            except (KeyError, ValueError):
                pass
        conn.close(linger)
        self.slot.set_connections(len(self.conns))
        if not self.accepting:
            self._maybe_resume_accepting(time.monotonic())

    def sweep(self, now: float) -> None:
        """Close connections past their deadline; resume accepting after a backoff."""
        expired = [c for c in self.conns.values() if not c.busy and c.deadline <= now]
        for conn in expired:
            self.close_conn(conn)
        if not self.accepting:
            self._maybe_resume_accepting(now)

    # -- graceful stop ---------------------------------------------------------------------

    def begin_stop(self, now: float) -> None:
        """Stop accepting; from here on, finish what is in progress and let the rest go.

        An idle keep-alive connection is not cut at once: a client may be sending its next
        request on it right now, and would see the connection drop unanswered (the failed
        requests of a reload). It stays until its keep-alive timer ends; a request arriving
        meanwhile is answered with `Connection: close`, and the client moves to a live worker.
        A connection accepted but still silent gets the same grace.
        """
        self._set_accepting(False)
        if not self.promoted:  # a mold keeps the listening sockets for the workers it forks
            for info in self.listeners:
                try:
                    info.sock.close()
                except OSError:
                    pass
        self.draining()
        self.stop_deadline = now + self.graceful_timeout
        grace = now + self.keepalive
        for conn in self.conns.values():
            if not conn.busy and not conn.parser.partial and conn.deadline > grace:
                conn.deadline = grace

    def stopped(self, now: float) -> bool:
        """True when nothing is left to finish, or the graceful timeout is over."""
        assert self.stop_deadline is not None
        return not self.conns or now >= self.stop_deadline
