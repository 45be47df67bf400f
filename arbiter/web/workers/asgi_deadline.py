"""`--request-timeout` for the uvicorn worker: a watcher over uvicorn's request tasks.

No wrapper around the app, so an ordinary request pays nothing: uvicorn already keeps every
request's task (`server_state.tasks`), and each task runs its request's `RequestResponseCycle`.
Four times a second a task on the worker's event loop (no thread) looks at them, noting when it
first saw each; one seen `timeout` seconds ago is overdue. (A wrapper that kept a table and
watched `send` cost 2-3 us a request, 8-10% of a hello-world request on this worker; its
lightest form, a table and nothing else, still 0.5-0.8 us.) A request is thus stopped between
`timeout` and `timeout` plus one look after it began, never before.

For an overdue request: its task's await chain (and the stack of every other thread, where a
sync endpoint that the framework runs in a thread pool is stuck) goes to the error log with the
request line and the worker's pid. If the app had sent nothing, the watcher answers 504 through
the cycle (the app's task is suspended: nothing interleaves on the event loop); then it cancels
the task, and uvicorn closes the connection, cutting a response that had begun. The worker
keeps serving. uvicorn logs the cancelled task as an "Exception in ASGI application";
`not_a_request_timeout` drops that record, since the watcher's own line says what happened.

What it cannot do: a thread cannot be cancelled, so a sync endpoint run in a thread keeps
running after the 504; and code that blocks the event loop stops the watcher too (and the
heartbeat: `--timeout` catches it). An app that catches the cancellation and answers anyway
finds its response already sent, and uvicorn refuses it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
import weakref
from collections.abc import MutableMapping
from typing import Any

from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from arbiter.web.http.deadlines import describe, stacks
from arbiter.web.workers.base import Worker

CHECK_EVERY = 0.25  # seconds between looks at the requests in flight
CANCEL_MESSAGE = "arbiter: --request-timeout"
# Set in an expired request's scope (to "504" or "cut"), for the access log's line.
SCOPE_KEY = "arbiter.request_timeout"
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]

_BODY = b"504 Gateway Timeout\nthe request ran longer than the server allows\n"
_HEAD: Message = {
    "type": "http.response.start", "status": 504,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(_BODY)).encode()),
                (b"connection", b"close")],
}


# The tasks the watcher cancelled, while they wind down (weak: a finished task leaves by itself).
_cancelled: weakref.WeakSet[asyncio.Task[Any]] = weakref.WeakSet()


def not_a_request_timeout(record: logging.LogRecord) -> bool:
    """A logging filter for `uvicorn.error`: drop the "Exception in ASGI application" record
    of a request the watcher cancelled (its own log line already tells the story). uvicorn logs
    it from the request's own task; the exception is not always the watcher's CancelledError
    (a framework's task group may raise its own), so the task decides, not the message."""
    if not record.exc_info or not isinstance(record.exc_info[1], BaseException):
        return True
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no running loop: not from a request's task
        return True
    return task is None or task not in _cancelled


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


def cycle_of(task: asyncio.Task[Any]) -> RequestResponseCycle | None:
    """The HTTP request a uvicorn task runs, or None (a WebSocket session, the lifespan, ours).

    uvicorn runs each request as `cycle.run_asgi(app)`; the cycle is that coroutine's `self`.
    Asked once per task, of the few tasks alive when the watcher looks."""
    frame = getattr(task.get_coro(), "cr_frame", None)
    owner = frame.f_locals.get("self") if frame is not None else None
    return owner if isinstance(owner, RequestResponseCycle) else None


class Watcher:
    """Stops the requests of one uvicorn worker that run past `timeout` (see the module's doc)."""

    def __init__(self, timeout: float, worker: Worker, tasks: set[asyncio.Task[Any]]) -> None:
        self.timeout = timeout
        self.worker = worker
        self.tasks = tasks  # uvicorn's own set of request tasks (server_state.tasks)
        # Each request task alive at a look: when it was first seen, and its cycle (None: not HTTP).
        self._seen: dict[asyncio.Task[Any], tuple[float, RequestResponseCycle | None]] = {}
        # Every other task on the loop, and when first seen: a framework may run the endpoint in
        # a task of its own (Starlette's BaseHTTPMiddleware, anyio task groups), whose await
        # chain is then where the request is stuck. The loop's own tasks at start are left out.
        self._others: dict[asyncio.Task[Any], float] = {}
        self._ours: set[asyncio.Task[Any]] = set()
        self._every = CHECK_EVERY

    async def watch(self) -> None:
        """Look every `CHECK_EVERY` seconds (at most a quarter of the deadline), until cancelled."""
        every = self._every = min(CHECK_EVERY, self.timeout / 4)
        self._ours = asyncio.all_tasks()  # this one, the heartbeat, the server
        while True:
            await asyncio.sleep(every)
            await self.look(time.monotonic())

    async def look(self, now: float) -> None:
        others = self._others
        every_task = asyncio.all_tasks()  # a set of a few hundred at most: microseconds, 4 times a second
        for task in [t for t in others if t not in every_task]:
            del others[task]
        for task in every_task:
            others.setdefault(task, now)
        seen = self._seen
        alive = self.tasks
        for task in [t for t in seen if t not in alive]:
            del seen[task]
        for task in list(alive):
            entry = seen.get(task)
            if entry is None:
                seen[task] = (now, cycle_of(task))
                continue
            first, cycle = entry
            if cycle is not None and now - first >= self.timeout and not task.done():
                seen[task] = (first, None)  # once
                await self.expire(task, cycle, now - first, self._older_tasks(first))

    def _older_tasks(self, since: float) -> list[asyncio.Task[Any]]:
        """The app's other tasks seen first by the look after `since` or before (one the
        request started just after a look is first seen by the next)."""
        return [t for t, first in self._others.items()
                if first <= since + self._every and t not in self._ours and t not in self._seen and not t.done()]

    async def expire(self, task: asyncio.Task[Any], cycle: RequestResponseCycle, ran: float,
                     older: list[asyncio.Task[Any]]) -> None:
        """Log where the request is (its task, and the app's tasks as old as it: `older`),
        answer 504 if nothing was sent, then cancel its task."""
        scope: Scope = cycle.scope  # type: ignore[assignment]  # a TypedDict to uvicorn; we add a key
        others = stacks()
        client = scope.get("client") or ("unix socket",)
        begun = cycle.response_started
        # A 504 needs the socket to take it now: the watcher must not wait on a slow client.
        answer = not begun and not cycle.disconnected and not cycle.flow.write_paused
        outcome = "answered 504" if answer else (
            "connection cut (the response had begun)" if begun else "connection cut")
        text = describe(self.worker.pid, request_line(scope), str(client[0]), f"at least {ran:.1f} s",
                        self.timeout, outcome)
        chains = "".join(f"\n{await_chain(t)}" for t in older)
        self.worker.report_request_timeout(
            f"{text}; the worker goes on serving\n{await_chain(task)}"
            + (f"\nOther tasks, running since before this request began:{chains}" if chains else "")
            + (f"\nOther threads (a sync endpoint run in a thread keeps running):\n{others}" if others else ""))
        scope[SCOPE_KEY] = "504" if answer else "cut"
        if answer:
            cycle.keep_alive = False
            send: Any = cycle.send  # typed for uvicorn's TypedDict events; ours are plain dicts
            await send(_HEAD)
            await send({"type": "http.response.body", "body": _BODY})
        _cancelled.add(task)
        task.cancel(CANCEL_MESSAGE)
