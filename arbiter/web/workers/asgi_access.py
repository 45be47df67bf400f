"""Gunicorn-format access log lines for ASGI apps, from the same atoms as the WSGI workers.

Wrapped around the app only when `--access-logfile` is set, so it costs nothing otherwise.
The ASGI scope is mapped onto the environ keys the atoms read (REMOTE_ADDR, RAW_URI...).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from arbiter.web.http.accesslog import AccessLog
from arbiter.web.workers.asgi_deadline import SCOPE_KEY as TIMED_OUT

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


class _Head:
    """The request side, as the atoms read it: `headers` as (NAME, value) pairs."""

    __slots__ = ("headers",)

    def __init__(self, headers: list[tuple[str, str]]) -> None:
        self.headers = headers


class _Response:
    __slots__ = ("status", "headers", "sent")

    def __init__(self) -> None:
        self.status = ""
        self.headers: list[tuple[str, str]] = []
        self.sent = 0


def _environ(scope: Scope, headers: list[tuple[str, str]]) -> dict[str, Any]:
    client = scope.get("client") or ("", 0)
    query = scope.get("query_string", b"").decode("latin-1")
    raw = scope.get("raw_path") or scope.get("path", "").encode()
    uri = raw.decode("latin-1") + (f"?{query}" if query else "")
    environ = {
        "REMOTE_ADDR": client[0], "REQUEST_METHOD": scope.get("method", ""), "RAW_URI": uri,
        "PATH_INFO": scope.get("path", ""), "QUERY_STRING": query,
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
    }
    for name, value in headers:
        environ["HTTP_" + name.replace("-", "_")] = value
    return environ


class AccessLogMiddleware:
    def __init__(self, app: Callable[..., Awaitable[None]], access_format: str) -> None:
        self.app = app
        self.access = AccessLog(access_format)

    async def __call__(self, scope: Scope, receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        response = _Response()

        async def send_and_note(message: Message) -> None:
            if message["type"] == "http.response.start":
                response.status = str(message["status"])
                response.headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", ())]
            elif message["type"] == "http.response.body":
                response.sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            if not response.status and scope.get(TIMED_OUT) == "504":
                response.status = "504"  # answered by the --request-timeout watcher, not through us
            headers = [(k.decode("latin-1").upper(), v.decode("latin-1")) for k, v in scope.get("headers", ())]
            self.access.log(_Head(headers), response, _environ(scope, headers), time.monotonic() - started)
