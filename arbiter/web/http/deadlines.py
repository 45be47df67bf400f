"""Request deadlines (`--request-timeout`) for the WSGI workers: find an overdue request, say
where it was stuck, and take its response away from the app.

A worker class enforces its own deadline, since only it knows its requests; the master learns of
it through the worker's scoreboard slot (`Slot.add_request_timeout`, and RETIRING or an exit).
This module holds what the sync, gthread and gevent workers share (the uvicorn worker has its
own, `asgi_deadline`):

- `begin(resp)` / `end(resp)` bracket each request (called from `WSGIHandler.handle`), and are
  all an ordinary request pays: the request marked on its connection (two stores). No clock is
  read per request in `gthread` and `gevent`: their watcher (the gthread main loop, the gevent
  heartbeat) looks four times a second, notes when it first saw each request, and `overdue(now)`
  lists those seen `timeout` seconds ago; a request is thus stopped between `timeout` and
  `timeout` plus one look after it began, never before. The sync worker's (`OneDeadline`)
  reads the clock once per request, so that its watchdog thread can sleep until it is due.
- `expire(entry)` takes the response away from the app: if no byte of it was sent, the client
  gets a 504 and the connection's write side is shut; else the connection is cut, so the
  client sees a broken response rather than waiting.
- `stacks()` formats the Python stack of every thread, the request's own first.

Two responses must never interleave on one connection, and an app thread may be writing while
the watcher acts. Rather than making every response ask leave to send (a lock, or any per-request
token, cost 3-6% of a hello-world request on the sync worker), the watcher fences the app off the
socket first: it keeps the socket under a new descriptor (`dup`) and puts a dead socket under the
app's (`dup2`, atomic in the kernel), where every later write fails and every read ends. Only
then does it read `headers_sent`, which a response sets before its first byte goes out: if it is
still false, no byte of the app's can reach the client, and the 504 goes out on the kept
descriptor. Greenlets need no fence: they cannot run while the watcher does, and the watcher's
writes never yield.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from arbiter.web.http.response import error_response

if TYPE_CHECKING:
    from arbiter.web.http.connection import Connection
    from arbiter.web.http.response import Response

GATEWAY_TIMEOUT = error_response(504, "Gateway Timeout", "the request ran longer than the server allows")


class InFlight:
    """An overdue request as its watcher sees it (made only for overdue requests)."""

    __slots__ = ("resp", "runner", "ran")

    def __init__(self, resp: Response, runner: Any, ran: float) -> None:
        self.resp = resp
        self.runner = runner  # the thread's ident, or the greenlet, the request runs on
        self.ran = ran  # at least this many seconds

    @property
    def request_line(self) -> str:
        req = self.resp.req
        return f"{req.method} {req.uri} {req.protocol}"

    @property
    def peer(self) -> str:
        return self.resp.conn.remote_addr or "unix socket"


class Deadlines:
    """The requests in flight in one worker and their deadline, `timeout` seconds after start.

    Each request in flight is marked on its connection (`Connection.answering`), and the watcher
    looks through the worker's connections (`connections()`). A table of requests cost the gevent
    worker 2-3 µs a request (a dict insert and pop keyed by id, and a tuple), 4-6% of a
    hello-world request, measured; two attribute stores cost nothing measurable.

    `current`: what the request runs on, kept for the stack in the log (the thread's ident, or
    `gevent.getcurrent` where requests run on greenlets, which need no fence: `threads=False`)."""

    def __init__(self, timeout: float, connections: Callable[[], Iterable[Connection]],
                 current: Callable[[], Any] = threading.get_ident, threads: bool = True) -> None:
        self.timeout = timeout
        self._connections = connections
        self._current = current
        self._threads = threads
        self._seen: dict[int, tuple[Response, float]] = {}  # the watcher's: first sight of each
        # Expired, until their app ends them: what their client got ("504", or "" for a cut).
        self._taken: dict[int, tuple[Response, str]] = {}
        self._dead = _dead_socket() if threads else None

    def begin(self, resp: Response) -> None:
        conn = resp.conn
        conn.runner = self._current()
        conn.answering = resp

    def end(self, resp: Response) -> str | None:
        """The request is done. None if it ended in time; else what its client got from the
        watcher ("504", or "" when the connection was cut)."""
        resp.conn.answering = None
        if not self._taken:
            return None
        taken = self._taken.pop(id(resp), None)
        return taken[1] if taken is not None else None

    def overdue(self, now: float) -> list[InFlight]:
        """Called by the one watcher, at intervals (see the module's doc)."""
        live: dict[int, tuple[Response, Any]] = {}
        for conn in list(self._connections()):
            resp = conn.answering  # one read: set and cleared by the thread that runs it
            if resp is not None and id(resp) not in self._taken:
                live[id(resp)] = (resp, conn.runner)
        seen = self._seen
        for key in [key for key, (resp, _) in seen.items() if live.get(key, (None,))[0] is not resp]:
            del seen[key]  # ended (and the same id may already be a new request's)
        late = []
        for key, (resp, runner) in live.items():
            first = seen.get(key)
            if first is None:
                seen[key] = (resp, now)
            elif now - first[1] >= self.timeout:
                late.append(InFlight(resp, runner, now - first[1]))
        return late

    def stop(self, entry: InFlight, pid: int, then: str, stack: str) -> str | None:
        """Expire `entry` (see `expire`) and return the error log's record for it: the request,
        what its client got, `then` (what becomes of the worker) and `stack` (taken before the
        expiry, where the request was stuck). None if it had ended after all."""
        outcome = self.expire(entry)
        if outcome is None:
            return None
        line = describe(pid, entry.request_line, entry.peer, f"at least {entry.ran:.1f} s", self.timeout, outcome)
        return f"{line}; {then}\n{stack}"

    def expire(self, entry: InFlight) -> str | None:
        """Take the response from the app (see the module's doc); returns what the client got,
        or None if the request ended after all (between `overdue` and now): nothing was done."""
        resp = entry.resp
        if not self._take(resp):
            return None
        conn = resp.conn
        if not self._threads:
            return self._answer(conn.fd, resp, fenced=False)
        assert self._dead is not None
        try:
            kept = os.dup(conn.fd)
            os.dup2(self._dead.fileno(), conn.fd)  # from here on, the app's writes fail
        except OSError:
            return "client already gone"
        try:
            return self._answer(kept, resp, fenced=True)
        finally:
            os.close(kept)

    def _take(self, resp: Response) -> bool:
        """Stop watching `resp` and mark it taken; False if it had ended."""
        if resp.conn.answering is not resp:
            return False
        self._seen.pop(id(resp), None)
        self._taken[id(resp)] = (resp, "")
        return True

    def _mark(self, resp: Response, got: str) -> None:
        if id(resp) in self._taken:
            self._taken[id(resp)] = (resp, got)

    def _answer(self, fd: int, resp: Response, fenced: bool) -> str:
        if resp.headers_sent:
            _shutdown(fd, socket.SHUT_RDWR)
            return "connection cut (the response had begun)"
        if resp.conn.tls:
            # An SSL connection cannot be written from outside the thread that owns it: cut.
            _shutdown(fd, socket.SHUT_RDWR)
            return "connection cut (TLS: no 504 from outside the request's thread)"
        self._mark(resp, "504")
        try:
            # One write that cannot block or yield (the socket is non-blocking): a 504 fits in
            # any socket buffer a client has not filled.
            os.write(fd, GATEWAY_TIMEOUT)
        except OSError:
            return "client already gone"
        # The answer, then end of stream; fenced, the rest of the connection is ours to end.
        _shutdown(fd, socket.SHUT_RDWR if fenced else socket.SHUT_WR)
        return "answered 504"


class OneDeadline(Deadlines):
    """The sync worker's: it runs one request at a time, on its main thread, so the request in
    flight is one attribute rather than a table entry, with its start (one clock read).

    Its watcher is a thread, and each time a thread wakes in a busy worker it must take the GIL
    from the main thread: under a saturated CPU that handoff waits on the scheduler, and looking
    four times a second cost 3-4% of a hello-world worker's requests (measured, against 0 when
    it looked every 20 s). Knowing when the current request began, the watcher sleeps until that
    request's deadline instead (`until_due`): a request that starts meanwhile is due later
    still. So it wakes about once per `timeout`, and stops a request right at its deadline."""

    def __init__(self, timeout: float) -> None:
        super().__init__(timeout, connections=tuple)
        self._main = threading.get_ident()
        self._now: Response | None = None
        self._started = 0.0
        self._gone: tuple[Response, str] | None = None  # the one request taken, and what it got

    def begin(self, resp: Response) -> None:
        self._started = time.monotonic()  # before `_now`: a watcher that sees this request sees its start
        self._now = resp

    def end(self, resp: Response) -> str | None:
        self._now = None
        gone = self._gone
        return gone[1] if gone is not None and gone[0] is resp else None

    def until_due(self, now: float) -> float:
        """Seconds the watcher may sleep: until the current request's deadline, or a whole
        `timeout` when none is in flight (one that starts meanwhile is due later than that)."""
        resp, started = self._now, self._started  # `_started` is this request's start, or a later one's
        if resp is None:
            return self.timeout
        return max(0.0, started + self.timeout - now)

    def overdue(self, now: float) -> list[InFlight]:
        resp, started = self._now, self._started
        if resp is None or (self._gone is not None and self._gone[0] is resp):
            return []
        ran = now - started
        return [InFlight(resp, self._main, ran)] if ran >= self.timeout else []

    def _take(self, resp: Response) -> bool:
        if self._now is not resp:
            return False
        self._gone = (resp, "")
        return True

    def _mark(self, resp: Response, got: str) -> None:
        self._gone = (resp, got)


def _dead_socket() -> socket.socket:
    """A socket whose peer is gone: writes to it fail (EPIPE), reads end (EOF)."""
    ours, theirs = socket.socketpair()
    theirs.close()
    ours.setblocking(False)
    return ours


def _shutdown(fd: int, how: int) -> None:
    # By descriptor, without closing it: the app's thread still holds its own number, and a
    # closed number could be reused by the next accepted connection while that thread writes.
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        return
    try:
        sock.shutdown(how)
    except OSError:
        pass
    finally:
        sock.detach()


def stacks(request_thread: int | None = None) -> str:
    """The Python stack of every thread but the caller's, `request_thread` first."""
    frames = sys._current_frames()
    names = {t.ident: t.name for t in threading.enumerate()}
    me = threading.get_ident()
    order = sorted((ident for ident in frames if ident != me), key=lambda ident: ident != request_thread)
    parts = []
    for ident in order:
        mark = " (this request)" if ident == request_thread else ""
        text = "".join(traceback.format_stack(frames[ident])).rstrip()
        parts.append(f"Thread {names.get(ident, '?')} [{ident}]{mark}:\n{text}")
    return "\n".join(parts)


def describe(pid: int, request_line: str, peer: str, ran: str, timeout: float, outcome: str) -> str:
    """The log line's first part: which request, in which worker, how long ("2.1 s"), what was done."""
    return (f"Request timeout (pid:{pid}): {request_line} from {peer} ran {ran}, "
            f"over --request-timeout {timeout:g}; {outcome}")
