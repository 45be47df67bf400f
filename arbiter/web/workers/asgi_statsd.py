"""Gunicorn's per-request StatsD metrics for ASGI apps: wrapped around the app only when
`--statsd-host` is set, so it costs nothing otherwise."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from arbiter.statsd import Statsd


class StatsdMiddleware:
    def __init__(self, app: Callable[..., Awaitable[None]], sender: Statsd) -> None:
        self.app = app
        self.sender = sender

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[..., Any],
                       send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        status = [500]  # an app that fails before it answers is counted as uvicorn answers it

        async def send_and_note(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.sender.request(status[0], time.monotonic() - started)
