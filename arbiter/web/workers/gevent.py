"""The gevent worker: WSGI on greenlets, up to `worker_connections` connections per process.

For apps that spend their time waiting on I/O (databases, HTTP calls) through blocking
libraries: the process is monkey-patched (`prepare_process`, run after the fork and before the
app is imported), so a blocking call parks one greenlet and the others go on. The HTTP side is
the sync worker's, unchanged: the same httptools parser and request limits, the same WSGI
handler, so a request one worker refuses, the other refuses too.

- One greenlet per listening socket accepts while the pool has room; one greenlet per
  connection reads request heads, answers them (`WSGIHandler.serve`) and keeps the connection
  alive between requests, with the sync worker's timeouts (`keepalive` when idle, `max(keepalive,
  10 s)` for a head and for each wait on the client while the app runs).
- The main greenlet heartbeats every 0.25 s. Code that never yields (a CPU-bound loop, a C
  library that blocks without gevent's knowledge) stops the hub, and with it the heartbeat:
  the master then counts the worker as hung and aborts it after `timeout`, as for sync.
- SIGTERM (a reload, max-requests, a stop): stop accepting, finish the requests in flight and
  let idle keep-alive connections run out their timer (a request that arrives meanwhile is
  answered with `Connection: close`), within `graceful_timeout`.

The master is never patched, and `--preload` is refused with this class (see
`arbiter.web.workers.PRELOAD_GEVENT` and docs/design.md).
"""

from __future__ import annotations

import errno
import socket
import ssl
import time
import traceback
from typing import Any, ClassVar

import gevent
from gevent import monkey
from gevent import socket as gsocket
from gevent.pool import Pool

from arbiter.web.http.connection import MIN_HEAD_TIMEOUT, RECV_SIZE, Connection, ListenerInfo
from arbiter.web.http.deadlines import Deadlines
from arbiter.web.http.errors import ClientDisconnected
from arbiter.web.http.parser import Limits
from arbiter.web.http.response import DRAIN_LIMIT
from arbiter.web.http.wsgi import WSGIHandler
from arbiter.web.workers.base import Worker

HEARTBEAT_INTERVAL = 0.25
# The longest single wait for a request head. A stop shortens the grace of a silent connection
# (see `_receive`); a waiting greenlet notices within this.
WAIT_SLICE = 1.0
ACCEPT_BACKOFF = 0.5  # after EMFILE and friends
_ACCEPT_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def _timed_out(exc: OSError) -> bool:
    # A plain gevent socket raises socket.timeout (TimeoutError); a gevent SSL socket raises an
    # SSLError of its own, with no errno, saying the read "timed out".
    return isinstance(exc, TimeoutError) or (
        isinstance(exc, ssl.SSLError) and exc.errno is None and "timed out" in str(exc)
    )


class GeventWorker(Worker):
    """WSGI worker serving many connections at once on greenlets (`-k gevent`)."""

    interface = "wsgi"
    allows_preload = False
    # Requests of one process run concurrently (PEP 3333's wsgi.multithread, as Gunicorn says).
    multithread: ClassVar[bool] = True

    @classmethod
    def prepare_process(cls) -> None:
        """Patch the standard library for gevent, before the app (or anything of it) is imported."""
        monkey.patch_all()

    # -- life cycle ------------------------------------------------------------------------

    def run(self) -> None:
        self.setup()
        self.ready()
        try:
            while self.alive:  # SIGTERM, or the master gone (notify), turns it False
                self.notify()
                self.expire_overdue()
                gevent.sleep(HEARTBEAT_INTERVAL)
            self.begin_stop()
            # The pool, not `conns`: a connection accepted just before the stop has a greenlet
            # that may not have started yet, and it must be answered too.
            while not self.pool.join(timeout=HEARTBEAT_INTERVAL):
                self.notify()
                self.expire_overdue()
                if self.graceful_timeout_over():
                    break
        finally:
            self.teardown()

    def capacity(self) -> int:
        return max(1, int(self.cfg.worker_connections))

    def setup(self) -> None:
        cfg = self.cfg
        self.limits = Limits.from_config(cfg)
        self.keepalive = float(cfg.keepalive)
        self.head_timeout = max(self.keepalive, MIN_HEAD_TIMEOUT)
        self.io_timeout = self.head_timeout
        self.graceful_timeout = float(cfg.graceful_timeout)
        self.ssl_context = self.tls_context()
        self.handler = WSGIHandler(self, multithread=self.multithread)
        self.deadlines: Deadlines | None = None
        if cfg.request_timeout > 0:
            # Greenlets cannot run while the watcher does: no fence needed (see `deadlines`).
            self.deadlines = self.handler.deadlines = Deadlines(
                float(cfg.request_timeout), connections=lambda: self.conns, current=gevent.getcurrent, threads=False)
        self.trust = self.handler.trust
        self.conns: set[Connection] = set()
        self.stop_deadline: float | None = None
        self.stop_grace = 0.0
        # One receive buffer for the whole worker: a greenlet fills it and parses it with no
        # switch in between, so 1000 connections do not cost 1000 buffers.
        self._buf = bytearray(RECV_SIZE)
        self._view = memoryview(self._buf)
        self.pool = Pool(max(1, int(cfg.worker_connections)))
        self.in_progress = 0  # greenlets in an app call: the busy ratio's numerator
        self.listeners: list[ListenerInfo] = []
        patched = []
        for sock in self.sockets:
            # The master's sockets are plain ones; the same fd as a gevent socket waits on the hub.
            gsock = gsocket.socket(sock.family, sock.type, sock.proto, fileno=sock.detach())
            if gsock.family in (socket.AF_INET, socket.AF_INET6):
                try:
                    gsock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # inherited by accepted sockets
                except OSError:
                    pass
            patched.append(gsock)
            self.listeners.append(ListenerInfo.of(gsock, self.ssl_context is not None))
        self.sockets = patched
        self.acceptors = [gevent.spawn(self._accept_loop, info) for info in self.listeners]

    def teardown(self) -> None:
        gevent.killall(self.acceptors)
        for info in self.listeners:
            try:
                info.sock.close()
            except OSError:
                pass

    # -- accepting -------------------------------------------------------------------------

    def _accept_loop(self, info: ListenerInfo) -> None:
        """Accept one connection each time the listener is reported readable.

        Every worker waits on the same listening socket. Accepting until the backlog is empty
        would let the first worker awake take a whole burst (all 64 of wrk's keep-alive
        connections went to one worker while the other idled); one accept per wake-up lets the
        other workers, woken by the same readiness, take their share, and a busy worker, whose
        loop comes round less often, takes less (Gunicorn's gevent worker does the same with
        `max_accept = 1`).
        """
        listener = info.sock
        listener.setblocking(False)
        readable = gevent.get_hub().loop.io(listener.fileno(), 1)
        try:
            while True:
                self.pool.wait_available()
                gsocket.wait(readable)
                try:
                    sock, addr = listener.accept()
                except BlockingIOError:
                    continue  # another worker took it
                except OSError as exc:
                    if exc.errno in _ACCEPT_EXHAUSTED:
                        self.log.error("Cannot accept connections: %s; retrying in %.1fs", exc, ACCEPT_BACKOFF)
                        gevent.sleep(ACCEPT_BACKOFF)
                    continue  # ECONNABORTED and the like: that client is gone, try the next
                self.pool.spawn(self._connection, sock, addr, info)
        finally:
            readable.close()

    # -- one connection --------------------------------------------------------------------

    def _connection(self, sock: socket.socket, addr: Any, info: ListenerInfo) -> None:
        context = self.ssl_context
        if context is not None:
            try:
                sock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            except (OSError, ValueError):
                sock.close()
                return
        conn = Connection(sock, addr, info, self.limits, self.io_timeout, False, context is not None)
        conn.trusted = self.trust.trusts(conn.remote_addr)
        conn.deadline = time.monotonic() + self.head_timeout
        self.conns.add(conn)
        self.slot.set_connections(len(self.conns))
        linger = False
        try:
            if conn.tls:
                sock.settimeout(self.head_timeout)
                conn.handshake()
            linger = self._converse(conn)
        except (OSError, ValueError) as exc:  # ClientDisconnected and ssl.SSLError are OSErrors
            self.log.debug("Connection from %s ended: %s", conn.remote_addr or "unix socket", exc)
        except Exception:
            self.log.exception("Error serving connection from %s", conn.remote_addr or "unix socket")
        finally:
            self.conns.discard(conn)
            self.slot.set_connections(len(self.conns))
            try:
                sock.settimeout(0.0)  # a lingering close must not wait on the client
            except OSError:
                pass
            conn.close(linger)

    def _converse(self, conn: Connection) -> bool:
        """Answer requests on `conn` until it is done; True when its close should linger."""
        parser = conn.parser
        sock = conn.sock
        view = self._view
        while True:
            n = self._receive(conn)
            if not n:
                return False  # the client closed, or its time is up
            parser.feed(view[:n])
            if conn.tls:
                # Decrypted bytes waiting inside the TLS layer: take them before waiting again.
                while sock.pending() and not parser.closed:  # type: ignore[attr-defined]
                    n = sock.recv_into(self._buf)
                    if not n:
                        break
                    parser.feed(view[:n])
            if parser.ready or parser.error is not None:
                sock.settimeout(self.io_timeout)  # each wait on the client while the app runs
                self.in_progress += 1  # one hub thread: greenlets never interleave on it
                self.slot.set_in_progress(self.in_progress)
                try:
                    kept = self.handler.serve(conn)
                finally:
                    self.in_progress -= 1
                    self.slot.set_in_progress(self.in_progress)
                if not kept or conn.closed:
                    return parser.partial or parser.error is not None
                now = time.monotonic()
                if parser.partial:
                    conn.waiting = True  # the next head has begun, or an unread body is dropped
                    conn.deadline = now + self.head_timeout
                else:
                    conn.waiting = False
                    conn.deadline = now + self.keepalive
            elif parser.closed or parser.discarded > DRAIN_LIMIT:
                return True
            elif not conn.waiting:
                conn.waiting = True
                conn.deadline = time.monotonic() + self.head_timeout

    def _receive(self, conn: Connection) -> int | None:
        """Wait for bytes until the connection's deadline; how many arrived (0: EOF), None: time's up."""
        sock = conn.sock
        while True:
            now = time.monotonic()
            if self.stop_deadline is not None and not conn.parser.partial and conn.deadline > self.stop_grace:
                conn.deadline = self.stop_grace  # stopping: see `begin_stop`
            wait = conn.deadline - now
            if wait <= 0:
                return None
            sock.settimeout(min(wait, WAIT_SLICE))
            try:
                return sock.recv_into(self._buf)
            except (BlockingIOError, ssl.SSLWantReadError):
                continue
            except OSError as exc:
                if _timed_out(exc):
                    continue
                raise ClientDisconnected(f"error reading from client: {exc}") from None

    # -- request deadlines -----------------------------------------------------------------

    def expire_overdue(self) -> None:
        """Stop the requests past `--request-timeout` (looked at with each heartbeat): log the
        greenlet's stack, answer 504 if nothing was sent (else cut the connection), and kill the
        greenlet (GreenletExit at the point where it waits), so the worker serves on. A greenlet
        that never yields cannot be reached: it stops the hub, and `--timeout` catches it."""
        if self.deadlines is None:
            return
        now = time.monotonic()
        for entry in self.deadlines.overdue(now):
            greenlet = entry.runner
            frame = getattr(greenlet, "gr_frame", None)
            stack = "".join(traceback.format_stack(frame)).rstrip() if frame is not None else "  (no frame)"
            record = self.deadlines.stop(entry, self.pid, "the worker goes on serving",
                                         f"Greenlet {id(greenlet):#x} (this request):\n{stack}")
            if record is None:
                continue  # it ended after all (greenlets switch only where they wait: not here)
            self.report_request_timeout(record)
            gevent.kill(greenlet)

    # -- graceful stop ---------------------------------------------------------------------

    def begin_stop(self) -> None:
        """Stop accepting; finish what is in progress and let idle connections run out.

        As in the sync worker: an idle keep-alive connection keeps its timer (a client may be
        sending its next request on it right now, which is answered with `Connection: close`),
        and a connection still silent since it was accepted gets at most `keepalive` more.
        """
        now = time.monotonic()
        gevent.killall(self.acceptors)
        for info in self.listeners:
            try:
                info.sock.close()
            except OSError:
                pass
        self.draining()
        self.stop_deadline = now + self.graceful_timeout
        self.stop_grace = now + self.keepalive

    def graceful_timeout_over(self) -> bool:
        """True once `graceful_timeout` has passed since the stop began (said in the log)."""
        assert self.stop_deadline is not None
        if time.monotonic() < self.stop_deadline:
            return False
        self.log.warning("Graceful timeout: %d connections still open; leaving them", len(self.pool))
        return True
