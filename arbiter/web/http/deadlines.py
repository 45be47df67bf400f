"""Request deadlines (`--request-timeout`) for the WSGI workers: find an overdue request, say
where it was stuck, and take its response away from the app.

A worker class enforces its own deadline, since only it knows its requests; the master learns of
it through the worker's scoreboard slot (`Slot.add_request_timeout`, and RETIRING or an exit).
This module holds what the sync and gthread workers share (the gevent and uvicorn workers have
their own ways to stop a greenlet or a task):

- `Deadlines.begin()` / `end()` bracket each request (called from `WSGIHandler.handle`);
  `overdue(now)` lists the requests past their deadline, for whoever watches (the gthread main
  loop, the sync worker's watchdog thread).
- `Deadlines.expire()` takes the response away from the app: if no byte of it was sent, the
  client gets a 504 and the connection's write side is shut; else the connection is cut, so the
  client sees a broken response rather than waiting. An app thread that later tries to send
  finds its request expired (`Response` asks `InFlight.claim()` before its head goes out) and
  gets `ClientDisconnected`, so two responses never interleave on one connection.
- `stacks()` formats the Python stack of every thread, the request's own first.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from arbiter.web.http.errors import ClientDisconnected
from arbiter.web.http.response import error_response

if TYPE_CHECKING:
    from arbiter.web.http.connection import Connection
    from arbiter.web.http.parser import Request

GATEWAY_TIMEOUT = error_response(504, "Gateway Timeout", "the request ran longer than the server allows")


class InFlight:
    """One request under a deadline. Cheap to make: the words for the log are found only if it
    expires, and the lock is its worker's."""

    __slots__ = ("started", "due", "req", "thread", "owner", "conn", "expired", "head_started", "_lock")

    def __init__(self, conn: Connection, req: Request, started: float, due: float, lock: threading.Lock) -> None:
        self.started = started
        self.due = due
        self.req = req
        self.thread = threading.get_ident()
        self.owner: Any = None  # what runs the request where it is not a thread (a greenlet)
        self.conn = conn
        self.expired = False
        self.head_started = False
        self._lock = lock

    @property
    def request_line(self) -> str:
        return f"{self.req.method} {self.req.uri} {self.req.protocol}"

    @property
    def peer(self) -> str:
        return self.conn.remote_addr or "unix socket"

    def claim(self) -> None:
        """The app's response head is about to go out (called by `Response`).

        Raises:
            ClientDisconnected: the request already expired; its client got (or lost) its answer.
        """
        with self._lock:
            if self.expired:
                raise ClientDisconnected("the request ran past --request-timeout")
            self.head_started = True


class Deadlines:
    """The requests in flight in one worker and their deadline, `timeout` seconds after start."""

    def __init__(self, timeout: float, current: Callable[[], Any] | None = None) -> None:
        """`current`: where requests run on something other than threads, how to get the one
        running now (`gevent.getcurrent`); it is kept as each request's `owner`."""
        self.timeout = timeout
        self._current = current
        self._in_flight: dict[int, InFlight] = {}  # dict operations are atomic: no lock needed
        # One lock for the worker: held only to claim a response, by an app thread or the watcher.
        self._lock = threading.Lock()

    def begin(self, conn: Connection, req: Request) -> InFlight:
        now = time.monotonic()
        entry = InFlight(conn, req, now, now + self.timeout, self._lock)
        if self._current is not None:
            entry.owner = self._current()
        self._in_flight[id(entry)] = entry
        return entry

    def end(self, entry: InFlight) -> None:
        self._in_flight.pop(id(entry), None)

    def overdue(self, now: float) -> list[InFlight]:
        return [e for e in list(self._in_flight.values()) if not e.expired and e.due <= now]

    def describe(self, entry: InFlight, pid: int, outcome: str, now: float) -> str:
        return describe(pid, entry.request_line, entry.peer, now - entry.started, self.timeout, outcome)

    def expire(self, entry: InFlight) -> str:
        """Take the response from the app (see the module's doc); returns what the client got."""
        with entry._lock:
            entry.expired = True
            begun = entry.head_started
        self._in_flight.pop(id(entry), None)
        sock = entry.conn.sock
        if begun:
            _shutdown(sock, socket.SHUT_RDWR)
            return "connection cut (the response had begun)"
        if entry.conn.tls:
            # An SSL object must not be written by this thread while the app's thread may be
            # reading it: cut instead of answering.
            _shutdown(sock, socket.SHUT_RDWR)
            return "connection cut (TLS: no 504 from outside the request's thread)"
        try:
            # One non-blocking send: a 504 fits in any socket buffer a client has not filled.
            sock.send(GATEWAY_TIMEOUT)
        except OSError:
            return "client already gone"
        _shutdown(sock, socket.SHUT_WR)  # the answer, then end of stream: the client stops waiting
        return "answered 504"


def _shutdown(sock: socket.socket, how: int) -> None:
    # Never close here: the app's thread still holds the descriptor, and a closed number could be
    # reused by the next accepted connection while that thread writes to it.
    try:
        sock.shutdown(how)
    except OSError:
        pass


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


def describe(pid: int, request_line: str, peer: str, ran: float, timeout: float, outcome: str) -> str:
    """The log line's first part: which request, in which worker, how long, what was done."""
    return (f"Request timeout (pid:{pid}): {request_line} from {peer} ran {ran:.1f} s, "
            f"over --request-timeout {timeout:g}; {outcome}")
