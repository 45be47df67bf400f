"""`--request-timeout` for the uvicorn worker: a wrapper around the ASGI app.

The requests in flight are looked at four times a second by a task on the worker's event loop
(no thread). When one is overdue, its task's await chain (and the stack of every other thread, where a
sync endpoint that the framework runs in a thread pool is stuck) goes to the error log with the
request line and the worker's pid, and its task is cancelled. The wrapper catches that
cancellation: if the app had sent nothing, the client gets a 504; if the response had begun,
the connection is cut (uvicorn closes a connection whose app raised after the head went out),
so the client sees a broken response rather than waiting. The worker keeps serving.

Why our own wrapper: uvicorn answers a task cancelled under it with its own 500, and has no
per-request timeout. What it cannot do: a thread cannot be cancelled, so a sync endpoint run in
a thread keeps running after the 504; and code that blocks the event loop stops the timer too
(and the heartbeat: `--timeout` catches it).
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from arbiter.web.http.deadlines import describe, stacks
from arbiter.web.workers.base import Worker

CHECK_EVERY = 0.25  # seconds between looks at the requests in flight
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
App = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

_BODY = b"504 Gateway Timeout\nthe request ran longer than the server allows\n"
_HEAD: Message = {
    "type": "http.response.start", "status": 504,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(_BODY)).encode()),
                (b"connection", b"close")],
}


class RequestTimedOut(Exception):
    """Raised to uvicorn for a request cut after its response had begun (uvicorn then closes
    the connection); `quiet_uvicorn` keeps its traceback out of the log, which already says why."""


def not_a_request_timeout(record: logging.LogRecord) -> bool:
    """A logging filter for `uvicorn.error`: drop the "Exception in ASGI application" record
    of a request this wrapper cut (its own log line already tells the story)."""
    return not (record.exc_info and isinstance(record.exc_info[1], RequestTimedOut))


def request_line(scope: Scope) -> str:
    path = scope.get("raw_path") or scope.get("path", "").encode()
    query = scope.get("query_string", b"")
    target = (path + (b"?" + query if query else b"")).decode("latin-1")
    return f"{scope.get('method', '')} {target} HTTP/{scope.get('http_version', '1.1')}"


def await_chain(task: asyncio.Task[Any]) -> str:
    """Where a suspended task waits: each coroutine of its await chain, outermost first.

    `Task.print_stack` shows only the task's own coroutine (its frames do not link to what they
    await), so this follows `cr_await` down to the innermost coroutine, where the app sits."""
    lines = [f"Task {task.get_name()} (most recent call last):\n"]
    step: Any = task.get_coro()
    while step is not None:
        frame = getattr(step, "cr_frame", None) or getattr(step, "gi_frame", None)
        if frame is None:
            break
        lines.extend(traceback.format_stack(frame))
        inner = getattr(step, "cr_await", None) or getattr(step, "gi_yieldfrom", None)
        if inner is not None and not hasattr(inner, "cr_frame") and not hasattr(inner, "gi_frame"):
            lines.append(f"  awaiting {inner!r}\n")
            break
        step = inner
    return "".join(lines).rstrip()


class _Request:
    __slots__ = ("started", "scope", "task", "expired", "head_sent")

    def __init__(self, started: float, scope: Scope, task: asyncio.Task[Any]) -> None:
        self.started = started
        self.scope = scope
        self.task = task
        self.expired = False
        self.head_sent = False


class DeadlineMiddleware:
    """Cancels an HTTP request's task once it has run `timeout` seconds (see the module's doc).

    Requests in flight sit in a dict, and `watch()` (a task the worker runs beside its
    heartbeat) looks at them every `CHECK_EVERY` seconds: a dict insert and pop per request,
    where a timer per request (`loop.call_later`, then `cancel`) cost ten times as much."""

    def __init__(self, app: App, timeout: float, worker: Worker) -> None:
        self.app = app
        self.timeout = timeout
        self.worker = worker
        self._in_flight: dict[asyncio.Task[Any], _Request] = {}

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        task = asyncio.current_task()
        assert task is not None
        request = _Request(time.monotonic(), scope, task)

        async def tracked_send(message: Message) -> None:
            if request.expired:
                raise RequestTimedOut("the request ran past --request-timeout")
            if message["type"] == "http.response.start":
                request.head_sent = True
            await send(message)

        in_flight = self._in_flight
        in_flight[task] = request
        try:
            await self.app(scope, receive, tracked_send)
        except (asyncio.CancelledError, RequestTimedOut):
            if not request.expired:
                raise  # not ours: the server is shutting down, or the client left
            task.uncancel()
        finally:
            in_flight.pop(task, None)
        if request.expired:
            if request.head_sent:
                raise RequestTimedOut("the request ran past --request-timeout; its response is cut")
            await send(_HEAD)
            await send({"type": "http.response.body", "body": _BODY})

    async def watch(self) -> None:
        """Stop the overdue requests, every `CHECK_EVERY` seconds (at most a quarter of the
        deadline), until cancelled."""
        every = min(CHECK_EVERY, self.timeout / 4)
        while True:
            await asyncio.sleep(every)
            due = time.monotonic() - self.timeout
            for request in [r for r in self._in_flight.values() if r.started <= due and not r.expired]:
                self._expire(request)

    def _expire(self, request: _Request) -> None:
        """Log where the request is, then cancel its task."""
        task = request.task
        if task.done():
            return
        request.expired = True
        others = stacks()
        client = request.scope.get("client") or ("unix socket",)
        outcome = "connection cut (the response had begun)" if request.head_sent else "answered 504"
        text = describe(self.worker.pid, request_line(request.scope), str(client[0]),
                        time.monotonic() - request.started, self.timeout, outcome)
        self.worker.report_request_timeout(
            f"{text}; the worker goes on serving\n{await_chain(task)}"
            + (f"\nOther threads (a sync endpoint run in a thread keeps running):\n{others}" if others else ""))
        task.cancel("request timeout")
