"""Serving WSGI requests on a connection: environ, the app call, the response, hooks, access log.

`WSGIHandler.serve(conn)` answers every request whose head is complete on `conn`, in order
(pipelining), and says whether the connection may be kept for the next one. Both WSGI worker
classes use it: the sync worker in its only thread, the thread worker in pool threads.

Whatever happens (an app exception, a client that went away, a bad body), the iterable the
app returned has `close()` called exactly once, and a response whose head was already sent is
cut off by closing the connection rather than patched up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from arbiter import logs, statsd
from arbiter.web.http.accesslog import AccessLog
from arbiter.web.http.body import Body
from arbiter.web.http.connection import Connection, ListenerInfo
from arbiter.web.http.deadlines import Deadlines
from arbiter.web.http.environ import Trust, base_environ, build_environ
from arbiter.web.http.errors import ClientDisconnected, InvalidResponse, RequestError, bad_request
from arbiter.web.http.parser import Request
from arbiter.web.http.response import Response, error_response


class FileWrapper:
    """`wsgi.file_wrapper`: sent with sendfile(2) when the file allows it, else iterated."""

    def __init__(self, filelike: Any, blksize: int = 8192) -> None:
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self) -> Iterator[bytes]:
        read = self.filelike.read
        while True:
            data = read(self.blksize)
            if not data:
                return
            yield data


class _Minimal:
    """Stands in for a response in the access log of a request refused before the app ran."""

    def __init__(self, status: str, length: int) -> None:
        self.status = status
        self.status_code = int(status[:3])
        self.headers: list[tuple[str, str]] = []
        self.sent = length


class WSGIHandler:
    """Answers requests for one worker. Safe to use from several threads at once."""

    def __init__(self, worker: Any, multithread: bool) -> None:
        cfg = worker.cfg
        self.worker = worker
        self.app = worker.app
        self.log: logging.Logger = worker.log
        self.keepalive = cfg.keepalive > 0
        self.url_scheme = "https" if cfg.certfile else "http"
        self.multithread = multithread
        self.trust = Trust(tuple(cfg.forwarded_allow_ips))
        self.pre_request = cfg.hook("pre_request")
        self.post_request = cfg.hook("post_request")
        # Decided once: formatting costs nothing per request when the access log is off.
        self.access_log = AccessLog(cfg.access_log_format) if logs.access_enabled() else None
        self.statsd = statsd.client(cfg)  # Gunicorn's per-request metrics, when --statsd-host is set
        self.sendfile = cfg.sendfile is not False  # --no-sendfile
        self.root_path = cfg.root_path  # --root-path: the SCRIPT_NAME the app is mounted at
        self._bases: dict[int, dict[str, Any]] = {}
        # --request-timeout: the worker sets this to its Deadlines and watches them.
        self.deadlines: Deadlines | None = None

    def base_for(self, listener: ListenerInfo) -> dict[str, Any]:
        base = self._bases.get(id(listener))
        if base is None:
            base = base_environ(listener, self.url_scheme, self.multithread, FileWrapper)
            if self.root_path:
                base["SCRIPT_NAME"] = self.root_path
            self._bases[id(listener)] = base
        return base

    # -- a connection's requests ------------------------------------------------------------------

    def serve(self, conn: Connection) -> bool:
        """Answer the requests ready on `conn`; True if the connection stays open."""
        parser = conn.parser
        ready = parser.ready
        worker = self.worker
        while ready:
            req = ready.popleft()
            keep = self.handle(conn, req)
            worker.request_done()
            if not keep:
                return False
            if not req.complete:
                if parser.closed:
                    return False  # the body broke off (a bad chunk, a refused trailer): no more
                # The app left part of the body unread: drop the rest as it arrives.
                req.discard = True
                parser.discarded = 0
                req.body = bytearray()
                return True
        if parser.error is not None:
            self.send_error(conn, parser.error)
            return False
        return not parser.closed

    def send_error(self, conn: Connection, err: RequestError) -> None:
        """Answer a refused request and leave the connection to be closed."""
        # Debug only: clients choose what they send, and must not be able to fill the log. A
        # cause is an exception no check meant to raise (a fault of ours): its traceback comes too.
        self.log.debug("Invalid request from %s: %s %s", conn.remote_addr or "unix socket", err.status, err.detail,
                       exc_info=err.__cause__)
        payload = error_response(err.status, err.reason, err.detail)
        try:
            conn.send(payload)
        except ClientDisconnected:
            pass

    # -- one request -----------------------------------------------------------------------------

    def handle(self, conn: Connection, req: Request) -> bool:
        """Run the app for `req` and send its response; True if the connection may be kept."""
        started = time.monotonic() if self.access_log is not None or self.statsd is not None else 0.0
        resp = Response(conn, req, self.keepalive and req.keep_alive, self.worker)
        try:
            if req.error is not None:
                # Its body already turned out malformed (it arrived with the head): refused
                # before the app runs, whether or not the app would have read it.
                raise req.error
            environ = build_environ(self.base_for(conn.listener), conn, req, self.trust)
        except Exception as exc:
            # A RequestError says what is wrong; anything else came from interpreting what the
            # client sent (its path, its proxy headers), so it is refused as a bad request too.
            err = exc if isinstance(exc, RequestError) else bad_request("malformed request")
            if err is not exc:
                err.__cause__ = exc
            self.send_error(conn, err)
            self._log_access(req, _Minimal(f"{err.status} {err.reason}", 0), {}, started)
            return False
        environ["wsgi.input"] = Body(req, conn)
        result = None
        deadlines = self.deadlines
        if deadlines is not None:
            deadlines.begin(resp)
        try:
            if self.pre_request is not None:
                self.pre_request(self.worker, req)
            result = self.app(environ, resp.start_response)
            rtype = type(result)
            if rtype is list or rtype is tuple:
                if len(result) == 1:
                    resp.write_whole(result[0])
                else:
                    resp.write_whole(b"".join(result))
            elif rtype is FileWrapper and self.sendfile and resp.send_file(result.filelike):
                pass
            else:
                write = resp.write
                for chunk in result:
                    write(chunk)
            resp.finish()
        except ClientDisconnected as exc:
            self.log.debug("Client %s went away: %s", conn.remote_addr, exc)
            resp.keep_alive = False
        except Exception as exc:
            self._failed(conn, req, resp, exc)
        finally:
            if result is not None and hasattr(result, "close"):
                try:
                    result.close()
                except Exception:
                    self.log.exception("Error closing the response of %s %s", req.method, req.uri)
            if deadlines is not None:
                taken = deadlines.end(resp)
                if taken is not None:
                    self._deadline_over(resp, taken)
        if self.post_request is not None:
            try:
                self.post_request(self.worker, req, environ, resp)
            except Exception:
                self.log.exception("post_request hook failed")
        if self.access_log is not None:
            self._log_access(req, resp, environ, started)
        if self.statsd is not None:
            self.statsd.request(resp.status_code or 500, time.monotonic() - started)
        return resp.keep_alive

    def _failed(self, conn: Connection, req: Request, resp: Response, exc: Exception) -> None:
        resp.keep_alive = False
        if isinstance(exc, RequestError):
            # The body turned out malformed while the app read it: the client's fault.
            status, reason, detail = exc.status, exc.reason, exc.detail
        else:
            if isinstance(exc, InvalidResponse):
                self.log.error("Invalid response to %s %s: %s", req.method, req.uri, exc)
            else:
                self.log.exception("Error handling request %s %s", req.method, req.uri)
            status, reason, detail = 500, "Internal Server Error", ""
        if resp.headers_sent:
            return  # the client gets a cut-off response; closing the connection tells it so
        # Set before the first byte goes out, as for the app's own head: a --request-timeout
        # watcher reads it to choose between a 504 and a cut (see `deadlines`).
        resp.headers_sent = True
        resp.status = f"{status} {reason}"
        resp.status_code = status
        resp.headers = []
        try:
            conn.send(error_response(status, reason, detail))
        except ClientDisconnected:
            pass

    @staticmethod
    def _deadline_over(resp: Response, taken: str) -> None:
        """The request ran past its deadline: what that leaves to the connection and the log."""
        resp.keep_alive = False  # the connection was answered (or cut) from outside
        if taken == "504":
            resp.status, resp.status_code, resp.headers = "504 Gateway Timeout", 504, []

    def _log_access(self, req: Request, resp: Any, environ: dict[str, Any], started: float) -> None:
        if self.access_log is None:
            return
        try:
            self.access_log.log(req, resp, environ, time.monotonic() - started)
        except Exception:
            self.log.exception("Failed to write the access log")
