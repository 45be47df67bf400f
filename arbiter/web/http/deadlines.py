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
  finds its request expired (`Response` claims the request's ticket before its head goes out,
  see `tickets`) and gets `ClientDisconnected`, so two responses never interleave on one
  connection.
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

from arbiter.web.http.response import error_response
from arbiter.web.http.tickets import (
    APP,
    CONN,
    DONE,
    DUE,
    MARKS,
    REQ,
    RUNNER,
    WATCHER,
    Ticket,
    finish,
    marks_before,
    take,
)

if TYPE_CHECKING:
    from arbiter.web.http.connection import Connection
    from arbiter.web.http.parser import Request

GATEWAY_TIMEOUT = error_response(504, "Gateway Timeout", "the request ran longer than the server allows")


class InFlight:
    """An overdue request as its watcher sees it: a view of its ticket, made only when the
    request is past its deadline (the ticket is what every request pays for)."""

    __slots__ = ("ticket",)

    def __init__(self, ticket: Ticket) -> None:
        self.ticket = ticket

    @property
    def due(self) -> float:
        return float(self.ticket[DUE])

    @property
    def conn(self) -> Connection:
        return self.ticket[CONN]  # type: ignore[no-any-return]

    @property
    def thread(self) -> int:
        """The ident of the thread the request runs on (the sync and gthread workers)."""
        return self.ticket[RUNNER]  # type: ignore[no-any-return]

    @property
    def owner(self) -> Any:
        """The greenlet the request runs on (the gevent worker)."""
        return self.ticket[RUNNER]

    @property
    def request_line(self) -> str:
        req = self.ticket[REQ]
        return f"{req.method} {req.uri} {req.protocol}"

    @property
    def peer(self) -> str:
        return self.conn.remote_addr or "unix socket"


class Deadlines:
    """The requests in flight in one worker and their deadline, `timeout` seconds after start."""

    def __init__(self, timeout: float, current: Callable[[], Any] = threading.get_ident) -> None:
        """`current`: how to get what runs the request now (the thread's ident, or
        `gevent.getcurrent` where requests run on greenlets); it is the ticket's runner."""
        self.timeout = timeout
        self._current = current
        self._in_flight: dict[int, Ticket] = {}  # dict operations are atomic: no lock needed

    def begin(self, conn: Connection, req: Request) -> Ticket:
        ticket = [time.monotonic() + self.timeout, conn, req, self._current()]
        self._in_flight[id(ticket)] = ticket
        return ticket

    def end(self, ticket: Ticket) -> bool:
        """The request is done; True if it expired first (its client was answered or cut)."""
        self._in_flight.pop(id(ticket), None)
        return finish(ticket)

    def overdue(self, now: float) -> list[InFlight]:
        # An expired request leaves the table as it expires.
        return [InFlight(t) for t in list(self._in_flight.values()) if t[DUE] <= now]

    def describe(self, entry: InFlight, pid: int, outcome: str, now: float) -> str:
        ran = f"{now - (entry.due - self.timeout):.1f} s"
        return describe(pid, entry.request_line, entry.peer, ran, self.timeout, outcome)

    def expire(self, entry: InFlight) -> str | None:
        """Take the response from the app (see the module's doc); returns what the client got,
        or None if the request ended after all (between `overdue` and now): nothing was done."""
        self._in_flight.pop(id(entry.ticket), None)
        first = take(entry.ticket)
        if first is None:
            return None
        sock = entry.conn.sock
        if first is APP:
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


class OneDeadline(Deadlines):
    """The sync worker's: it runs one request at a time, on its main thread, so the request in
    flight is one attribute rather than a table entry, and it reads no clock per request: its
    watcher notes when it first saw each request and counts from there. A request is then
    stopped between `timeout` and `timeout` plus one look of the watcher (`check`) after it
    began, never before; the clock read and the sum cost 0.1 us a request in place (measured),
    nearly 1% of a hello-world request on this worker."""

    def __init__(self, timeout: float) -> None:
        super().__init__(timeout)
        self._main = threading.get_ident()
        self._now: Ticket | None = None
        self._seen: Ticket | None = None  # the watcher's: the request it last saw, and when
        self._seen_at = 0.0

    def begin(self, conn: Connection, req: Request) -> Ticket:
        ticket = self._now = [0.0, conn, req, self._main]  # DUE is set by the watcher
        return ticket

    def end(self, ticket: Ticket) -> bool:
        self._now = None
        ticket.append(DONE)
        if len(ticket) == MARKS + 2 and ticket[MARKS] is APP:
            return False  # `tickets.finish`'s usual case, inline: this runs for every request
        return WATCHER in marks_before(ticket, DONE)

    def overdue(self, now: float) -> list[InFlight]:
        """Called by one watcher only, at intervals: what it saw for the first time is due
        `timeout` later (so its start is known to within one interval, and never later)."""
        ticket = self._now  # one read: the watcher's view cannot tear
        if ticket is None:
            return []
        if ticket is not self._seen:
            self._seen, self._seen_at = ticket, now
            ticket[DUE] = now + self.timeout
            return []
        if now - self._seen_at < self.timeout or WATCHER in ticket[MARKS:]:
            return []
        return [InFlight(ticket)]

    def describe(self, entry: InFlight, pid: int, outcome: str, now: float) -> str:
        ran = f"at least {now - self._seen_at:.1f} s"
        return describe(pid, entry.request_line, entry.peer, ran, self.timeout, outcome)


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


def describe(pid: int, request_line: str, peer: str, ran: str, timeout: float, outcome: str) -> str:
    """The log line's first part: which request, in which worker, how long ("2.1 s"), what was done."""
    return (f"Request timeout (pid:{pid}): {request_line} from {peer} ran {ran}, "
            f"over --request-timeout {timeout:g}; {outcome}")
