"""A request's ticket under `--request-timeout`: who answers its client, the app or the watcher.

A ticket is made for every request, so it is a plain list rather than an object:

    [due, conn, req, runner, *marks]

`runner` is what the request runs on: its thread's ident, or its greenlet. Measured in place on
the sync worker (a hello-world request costs ~14 us of CPU there), an object with six slots and
an `__init__` cost 0.4-0.8 us a request, too much for a guard meant to cost under 3%; a list
costs a fraction of that.

Three parties append a mark: the app (`APP`, as its response head is about to go out), the
watcher (`WATCHER`, as it takes the response away) and the end of the request (`DONE`).
`list.append` is atomic under the GIL, so the order of the marks is the order in which these
happened, and who answers the client is settled without a lock: the first of `APP` and
`WATCHER`. A watcher that comes after `DONE` does nothing.
"""

from __future__ import annotations

from typing import Any

from arbiter.web.http.errors import ClientDisconnected

Ticket = list[Any]
DUE, CONN, REQ, RUNNER, MARKS = 0, 1, 2, 3, 4
APP = "app"
WATCHER = "watcher"
DONE = "done"


def claim(ticket: Ticket) -> None:
    """The app's response head is about to go out (called by `Response`).

    Raises:
        ClientDisconnected: the watcher took the response first; the client got (or lost) its answer.
    """
    ticket.append(APP)
    if ticket[MARKS] is not APP:
        raise ClientDisconnected("the request ran past --request-timeout")


def finish(ticket: Ticket) -> bool:
    """The request ended; True if the watcher had taken its response away first."""
    ticket.append(DONE)
    if len(ticket) == MARKS + 2 and ticket[MARKS] is APP:
        return False  # [APP, DONE]: the usual end, decided without a slice
    return WATCHER in marks_before(ticket, DONE)


def take(ticket: Ticket) -> str | None:
    """The watcher takes the response away. Returns None if the request had ended (nothing to
    do), APP if the app's head had begun (cut the connection), else WATCHER (answer 504)."""
    ticket.append(WATCHER)
    before = marks_before(ticket, WATCHER)
    if DONE in before:
        return None
    return APP if APP in before else WATCHER


def head_started(ticket: Ticket) -> bool:
    """The app's head went out before any watcher."""
    return len(ticket) > MARKS and ticket[MARKS] is APP


def marks_before(ticket: Ticket, mark: str) -> list[str]:
    marks: list[str] = ticket[MARKS:]
    return marks[:marks.index(mark)] if mark in marks else marks
