"""The `uvicorn` worker: an ASGI app served by `uvicorn.Server` on the inherited sockets.

uvloop and httptools when available; lifespan on. The heartbeat is a task on the worker's own
event loop, so a handler that blocks the loop (a CPU loop, a blocking call) stops the heartbeat
and the master treats the worker as hung, which is the point.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Generator
from typing import Any

import uvicorn

from arbiter import logs
from arbiter.web.workers.base import Worker

HEARTBEAT_EVERY = 0.5


def _loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def _draining_protocol() -> type[Any] | str:
    """uvicorn's httptools protocol, changed in one respect: how it stops.

    uvicorn closes an idle keep-alive connection the moment shutdown starts; a client that
    had just sent a request on it sees the connection drop with no answer, which is where most
    failed requests during a reload come from. Here an idle connection stays open until its
    keep-alive timer ends it, and a request that arrives meanwhile is answered, with
    `Connection: close`, so the client moves to a live worker without losing anything.
    """
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:  # no httptools: uvicorn's h11 protocol, drained uvicorn's way
        return "h11"

    class DrainingHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[misc]
        draining = False

        def shutdown(self) -> None:
            self.draining = True
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.keep_alive = False  # in flight: answer, then close
            elif self.timeout_keep_alive_task is None:
                # Accepted but silent so far: give the request that is surely coming the same
                # keep-alive grace as an idle connection.
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self.timeout_keep_alive_handler
                )

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            if self.draining and self.cycle is not None:
                self.cycle.keep_alive = False

    return DrainingHttpToolsProtocol


class _Server(uvicorn.Server):
    """uvicorn's Server with our signal handling instead of its own."""

    def __init__(self, config: uvicorn.Config, worker: UvicornWorker) -> None:
        super().__init__(config)
        self.worker = worker

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The worker base installed the handlers; uvicorn's would re-raise the signal at exit.
        yield

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started and not self.should_exit:
            self.worker.ready()

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        self.worker.draining()
        await super().shutdown(sockets=sockets)


class UvicornWorker(Worker):
    interface = "asgi"

    def make_config(self) -> uvicorn.Config:
        cfg = self.cfg
        kwargs: dict[str, Any] = dict(
            loop=_loop_name(),
            http=_draining_protocol(),
            # "auto": startup and shutdown run whenever the app speaks lifespan, and a startup
            # failure stops the worker (exit 3); a bare app that rejects the lifespan scope is
            # still served, where "on" would refuse to start it.
            lifespan="auto",
            interface="asgi3",
            timeout_keep_alive=max(1, int(cfg.keepalive)),
            timeout_graceful_shutdown=int(cfg.graceful_timeout) or None,
            limit_concurrency=cfg.worker_connections,
            forwarded_allow_ips=",".join(cfg.forwarded_allow_ips),
            proxy_headers=True,
            access_log=False,
            log_config=None,
            server_header=True,
            date_header=True,
            h11_max_incomplete_event_size=cfg.limit_request_line + cfg.limit_request_field_size * 4
            if cfg.limit_request_line else None,
        )
        if cfg.certfile:
            kwargs.update(ssl_certfile=cfg.certfile, ssl_keyfile=cfg.keyfile)
        app = self.app
        if logs.access_enabled():
            from arbiter.web.workers.asgi_access import AccessLogMiddleware

            app = AccessLogMiddleware(app, cfg.access_log_format)
        return uvicorn.Config(app, **kwargs)

    def capacity(self) -> int:
        return max(1, int(self.cfg.worker_connections))  # uvicorn's limit_concurrency

    def handle_exit(self) -> None:
        super().handle_exit()
        server = getattr(self, "server", None)
        if server is not None:
            server.should_exit = True

    def run(self) -> None:
        # uvicorn logs through its own loggers; send them where our error log goes.
        ours = logging.getLogger("arbiter.error")
        theirs = logging.getLogger("uvicorn.error")
        theirs.handlers[:] = ours.handlers
        theirs.setLevel(ours.level)
        theirs.propagate = False
        config = self.make_config()
        self.server = _Server(config, self)
        if not self.alive:
            return
        factory = config.get_loop_factory() if hasattr(config, "get_loop_factory") else None
        if factory is None and hasattr(config, "setup_event_loop"):  # uvicorn before 0.36
            config.setup_event_loop()
        loop = (factory or asyncio.new_event_loop)()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()

    async def _serve(self) -> None:
        beat = asyncio.get_running_loop().create_task(self._heartbeat())
        try:
            await self.server.serve(sockets=self.sockets)
        finally:
            beat.cancel()

    async def _heartbeat(self) -> None:
        served = 0
        while True:
            self.notify()
            total = self.server.server_state.total_requests
            if total != served:
                for _ in range(total - served):
                    self.request_done()
                served = total
            self.slot.set_connections(len(self.server.server_state.connections))
            self.slot.set_in_progress(len(self.server.server_state.tasks))
            if not self.alive:
                self.server.should_exit = True
            await asyncio.sleep(HEARTBEAT_EVERY)

