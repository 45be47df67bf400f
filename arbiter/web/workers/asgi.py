"""The `uvicorn` worker: an ASGI app served by `uvicorn.Server` on the inherited sockets.

uvloop when available, httptools with the sync worker's request rules (asgi_http.py),
WebSockets through `websockets`; lifespan on. The heartbeat is a task on the worker's own
event loop, so a handler that blocks the loop (a CPU loop, a blocking call) stops the heartbeat
and the master treats the worker as hung, which is the point.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import os
from collections.abc import Generator
from typing import Any

import uvicorn
from uvicorn.config import WS_PROTOCOLS

from arbiter import logs, statsd
from arbiter.web import tls
from arbiter.web.http.parser import Limits
from arbiter.web.workers.asgi_deadline import Watcher, not_a_request_timeout
from arbiter.web.workers.asgi_http import protocol_class
from arbiter.web.workers.base import Worker

HEARTBEAT_EVERY = 0.5


def _loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


# What uvicorn imports on its own when a worker builds its Config and event loop: the loop
# factory, the WebSocket protocol, the lifespan and proxy-headers middleware. Importing them
# here, with this module, puts them in the master before it forks (`workers.preimport`): each
# worker then starts with them in shared pages, instead of importing them again after the fork
# (~0.1-0.2 s of CPU and a few MB of private memory per worker).
_SERVER_MODULES = (
    "uvloop", "uvicorn.loops.uvloop", "uvicorn.loops.auto", "uvicorn.lifespan.on",
    "uvicorn.middleware.proxy_headers",
)


def _websocket_protocol() -> str:
    """`websockets` (a dependency) on its Sans-I/O core where this uvicorn has that binding."""
    return "websockets-sansio" if "websockets-sansio" in WS_PROTOCOLS else "websockets"


def _preimport_server_modules() -> None:
    modules = list(_SERVER_MODULES)
    ws = WS_PROTOCOLS.get(_websocket_protocol())
    if ws:
        modules.append(ws.partition(":")[0])
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:  # an optional module not installed: uvicorn reports or falls back itself
            pass


_preimport_server_modules()


def _without_websocket_traces(record: logging.LogRecord) -> bool:
    """`websockets` logs every handshake header and frame at DEBUG through uvicorn's logger:
    cookies, tokens and message contents do not belong in the error log, even at debug."""
    return record.levelno > logging.DEBUG or _WEBSOCKETS_DIR not in record.pathname


_WEBSOCKETS_DIR = f"{os.sep}websockets{os.sep}"


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
    # Reforking: a promoted worker runs the lifespan shutdown, closes its loop and the loop's
    # executor, so the mold holds neither; each worker it forks makes a new loop and runs the
    # lifespan startup itself (what the app binds to a loop is made anew there).
    refork_safe = True

    def make_config(self) -> uvicorn.Config:
        cfg = self.cfg
        kwargs: dict[str, Any] = dict(
            loop=_loop_name(),
            # Our request limits and refusals, and a drain that loses no request (asgi_http.py).
            http=protocol_class(Limits.from_config(cfg)),
            ws=_websocket_protocol(),
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
        )
        if cfg.certfile:
            kwargs.update(ssl_certfile=cfg.certfile, ssl_keyfile=cfg.keyfile)
        kwargs.update(root_path=cfg.root_path)  # --root-path
        app = self.app
        if logs.access_enabled():
            from arbiter.web.workers.asgi_access import AccessLogMiddleware

            app = AccessLogMiddleware(app, cfg.access_log_format)
        sender = statsd.client(cfg)
        if sender is not None:
            from arbiter.web.workers.asgi_statsd import StatsdMiddleware

            app = StatsdMiddleware(app, sender)
        config = uvicorn.Config(app, **kwargs)
        if cfg.certfile:
            config.load()
            config.ssl = tls.server_context(cfg)  # every TLS setting, as the sync worker has them
        return config

    def capacity(self) -> int:
        return max(1, int(self.cfg.worker_connections))  # uvicorn's limit_concurrency

    def handle_exit(self) -> None:
        super().handle_exit()
        server = getattr(self, "server", None)
        if server is not None:
            server.should_exit = True

    def handle_promote(self) -> None:
        super().handle_promote()
        server = getattr(self, "server", None)
        if self.promoted and server is not None:
            server.should_exit = True  # uvicorn's own drain, then the loop ends

    def run(self) -> None:
        # uvicorn logs through its own loggers; send them where our error log goes.
        ours = logging.getLogger("arbiter.error")
        theirs = logging.getLogger("uvicorn.error")
        theirs.handlers[:] = ours.handlers
        theirs.setLevel(ours.level)
        theirs.propagate = False
        theirs.addFilter(_without_websocket_traces)
        if self.cfg.request_timeout > 0:
            theirs.addFilter(not_a_request_timeout)
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
            if self.promoted:  # the mold must hold no thread: wait for the loop's executor
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()
            asyncio.set_event_loop(None)

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self._heartbeat())]
        if self.cfg.request_timeout > 0:
            watcher = Watcher(float(self.cfg.request_timeout), self, self.server.server_state.tasks)
            tasks.append(loop.create_task(watcher.watch()))
        try:
            # Duplicates: asyncio closes the sockets it served on when the server stops, and a
            # worker promoted to the mold keeps the originals for the workers it forks.
            await self.server.serve(sockets=[sock.dup() for sock in self.sockets])
        finally:
            for task in tasks:
                task.cancel()

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

