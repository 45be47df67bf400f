"""The JSON API under /v1/, the probes, /metrics, and the Supervisor-compatible log tails.

Every handler reads `backend.status()` / `backend.log_path()`, or turns the request into a
`Command`; none changes master state itself. Errors are `{"error": {"code", "message"}}`.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from typing import Any, TypeVar

from arbiter.control import commands, metrics
from arbiter.control.backend import Backend, ControlError
from arbiter.control.connection import HttpConnection, Request
from arbiter.control.logs import DEFAULT_TAIL, LogFollower, Source, read_range
from arbiter.control.names import check_names, find_one, namespec, select
from arbiter.control.records import (
    ClearArgs,
    CommandArgs,
    GroupArgs,
    MasterInfo,
    NoArgs,
    ProcessArgs,
    ProgramRow,
    ReloadArgs,
    ReplaceWorkerArgs,
    ScaleArgs,
    SignalArgs,
)

Handler = Callable[[HttpConnection, Request, dict[str, str]], None]
STREAMS = ("stdout", "stderr")
LOG_TEXT = "text/plain; charset=utf-8"
_NAME = r"(?P<name>[^/]+)"
_STREAM = r"(?P<stream>stdout|stderr)"


_Usage = TypeVar("_Usage", ProgramRow, MasterInfo)


def _with_usage(process: _Usage) -> _Usage:
    """Add `rss` and `cpu` from /proc when the master did not (programs, the master itself)."""
    if process.rss is not None or not process.pid:
        return process
    usage = metrics.proc_usage(process.pid)
    return dataclasses.replace(process, rss=usage[0], cpu=usage[1]) if usage else process


class Api:
    """Routes a request (already authorised) to its handler."""

    def __init__(self, backend: Backend, log: logging.Logger,
                 follow: Callable[[HttpConnection, LogFollower], None],
                 extra: dict[str, tuple[str, Handler]]) -> None:
        self.backend, self.log, self._follow = backend, log, follow
        table: list[tuple[str, str, Handler]] = [
            ("GET", "/healthz", self.healthz),
            ("GET", "/readyz", self.readyz),
            ("GET", "/metrics", self.metrics),
            ("GET", "/v1/status", self.status),
            ("POST", f"/v1/processes/{_NAME}/(?P<action>start|stop|restart|signal)", self.process_action),
            ("POST", "/v1/(?P<action>start|stop|restart|signal)", self.processes_action),
            ("POST", r"/v1/workers/(?P<pid>[0-9]{1,10})/replace", self.replace_worker),
            ("POST", "/v1/reload", self.reload),
            ("POST", "/v1/scale", self.scale),
            ("POST", "/v1/(?P<action>reread|update|add|remove|shutdown|refork)", self.simple_command),
            ("GET", "/v1/logs/master", self.read_log),
            ("POST", "/v1/logs/master/clear", self.clear_log),
            ("GET", f"/v1/logs/{_NAME}/{_STREAM}", self.read_log),
            ("POST", f"/v1/logs/{_NAME}(?:/{_STREAM})?/clear", self.clear_log),
            ("GET", f"/logtail/{_NAME}(?:/{_STREAM})?", self.supervisor_tail),
            ("GET", "/mainlogtail", self.supervisor_tail),
        ]
        table += [(method, path, handler) for path, (method, handler) in extra.items()]
        self.routes = [(method, re.compile(pattern + r"\Z"), handler) for method, pattern, handler in table]

    def handle(self, conn: HttpConnection, request: Request) -> None:
        allowed = []
        for method, pattern, handler in self.routes:
            match = pattern.match(request.path)
            if not match:
                continue
            if request.method == method or (method == "GET" and request.method == "HEAD"):
                params = {k: v for k, v in match.groupdict().items() if v is not None}
                try:
                    handler(conn, request, params)
                except ControlError as exc:
                    conn.respond_error(exc)
                return
            allowed.append(method)
        if allowed:
            allow = ", ".join(sorted(set(allowed) | ({"HEAD"} if "GET" in allowed else set())))
            conn.respond_error(ControlError("METHOD_NOT_ALLOWED", f"{request.method} is not allowed on "
                                            f"{request.path}; use {allow}"), headers=[("Allow", allow)])
        else:
            conn.respond_error(ControlError("NOT_FOUND", f"no such route: {request.path}"))

    # -- probes and metrics -------------------------------------------------------------------

    def healthz(self, conn: HttpConnection, request: Request, params: dict[str, str]) -> None:
        conn.respond(200, b"ok\n", "text/plain; charset=utf-8")

    def readyz(self, conn: HttpConnection, request: Request, params: dict[str, str]) -> None:
        ok, why = metrics.ready(self.backend.status())
        conn.respond(200 if ok else 503, f"{'ready' if ok else 'not ready'}: {why}\n".encode(),
                     "text/plain; charset=utf-8")

    def metrics(self, conn: HttpConnection, request: Request, params: dict[str, str]) -> None:
        conn.respond(200, metrics.render(self.backend.status()).encode(), metrics.CONTENT_TYPE)

    # -- status and commands ------------------------------------------------------------------

    def status(self, conn: HttpConnection, request: Request, params: dict[str, str]) -> None:
        status = self.backend.status()
        programs = list(status.programs)
        if request.query.get("name"):
            programs = select(programs, [n for n in request.query["name"].split(",") if n])
        status = dataclasses.replace(status, master=_with_usage(status.master),
                                     programs=tuple(_with_usage(p) for p in programs))
        conn.respond_json(200, status.to_json())

    def _body(self, request: Request) -> dict[str, Any]:
        body = request.json()
        if not isinstance(body, dict):
            raise ControlError("BAD_REQUEST", f"request body must be a JSON object, got {type(body).__name__}")
        return body

    def _process_args(self, action: str, names: list[str], body: dict[str, Any]) -> ProcessArgs | SignalArgs:
        if action == "signal":
            return SignalArgs(tuple(names), commands.signal_name(body.get("signal")))
        return ProcessArgs(tuple(names), bool(body.get("wait", True)))

    def process_action(self, conn: HttpConnection, request: Request, params: dict[str, str]) -> None:
        body = self._body(request)
        name, action = params["name"], params["action"]
        matched = select(self.backend.status().programs, [name])

        def done(reply: Any) -> None:
            results = commands.process_results(reply, matched)
            if len(results) == 1 and not results[0].ok:
                conn.respond_error(ControlError(results[0].status, results[0].description))
            else:
                conn.respond_json(200, {"result": [r.to_json() for r in results]})

        commands.submit(self.backend, conn, self.log, action, self._process_args(action, [name], body), done)

    def processes_action(self, conn: HttpConnection, request: Request, params: dict[str, str]) -> None:
        body = self._body(request)
        names, action = check_names(body.get("names")), params["action"]
        matched = select(self.backend.status().programs, names)
        commands.submit(self.backend, conn, self.log, action, self._process_args(action, names, body),
                        lambda reply: self._results(conn, reply, matched))

    def _results(self, conn: HttpConnection, reply: Any, matched: list[ProgramRow]) -> None:
        conn.respond_json(200, {"result": [r.to_json() for r in commands.process_results(reply, matched)]})

    def _run(self, conn: HttpConnection, name: str, args: CommandArgs) -> None:
        commands.submit(self.backend, conn, self.log, name, args,
                        lambda reply: conn.respond_json(200, {"result": reply}))

    def reload(self, conn: HttpConnection, request: Request, params: dict[str, str]) -> None:
        self._run(conn, "reload", ReloadArgs(bool(self._body(request).get("wait", False))))

    def replace_worker(self, conn: HttpConnection, request: Request, params: dict[str, str]) -> None:
        self._body(request)  # an empty or JSON-object body, like every POST
        self._run(conn, "replace_worker", ReplaceWorkerArgs(int(params["pid"])))

    def scale(self, conn: HttpConnection, request: Request, params: dict[str, str]) -> None:
        self._run(conn, "scale", ScaleArgs(commands.scale_spec(self._body(request).get("spec"))))

    def simple_command(self, conn: HttpConnection, request: Request, params: dict[str, str]) -> None:
        body, action = self._body(request), params["action"]
        args: CommandArgs = NoArgs()
        if action in ("add", "remove"):
            args = GroupArgs(tuple(check_names(body.get("names"))))
        elif action == "update":
            args = GroupArgs(tuple(check_names(body.get("names"), required=False)))
        self._run(conn, action, args)

    # -- logs -----------------------------------------------------------------------------------

    def _log_path(self, name: str, stream: str) -> Source:
        """The log file, or for a program whose output goes through the master's own stream,
        what the master keeps of it in memory."""
        if name != "master":
            name = namespec(find_one(self.backend.status().programs, name))
        path = self.backend.log_path(name, stream)
        if not path:
            memory = self.backend.log_memory(name, stream)
            if memory is not None:
                return memory
            raise ControlError("NO_FILE", f"{stream} of {name} is not captured to a file")
        return path

    @staticmethod
    def _int(request: Request, key: str, default: int) -> int:
        try:
            return int(request.query.get(key, default))
        except ValueError:
            raise ControlError("BAD_ARGUMENTS", f"{key} must be an integer, got {request.query[key]!r}") from None

    def read_log(self, conn: HttpConnection, request: Request, params: dict[str, str]) -> None:
        name, stream = params.get("name", "master"), params.get("stream", "stdout")
        path = self._log_path(name, stream)
        offset = self._int(request, "offset", -DEFAULT_TAIL)
        if request.query.get("follow", "0") not in ("", "0", "false", "no"):
            self._start_follow(conn, path, offset)
            return
        chunk = read_range(path, offset, self._int(request, "length", 0))
        if request.query.get("format") == "json":
            conn.respond_json(200, {"data": chunk.data.decode("utf-8", "replace"), "offset": chunk.offset,
                                    "next_offset": chunk.next_offset, "size": chunk.size})
            return
        conn.respond(200, chunk.data, LOG_TEXT, [
            ("X-Log-Offset", str(chunk.offset)), ("X-Log-Next-Offset", str(chunk.next_offset)),
            ("X-Log-Size", str(chunk.size))])

    def _start_follow(self, conn: HttpConnection, path: Source, offset: int) -> None:
        follower = LogFollower(path, offset)
        conn.start_stream(200, LOG_TEXT, [("X-Log-Offset", str(follower.position))])
        self._follow(conn, follower)

    def supervisor_tail(self, conn: HttpConnection, request: Request, params: dict[str, str]) -> None:
        """supervisorctl's `tail -f` and `maintail -f` read these (a chunked never-ending GET)."""
        path = self._log_path(params.get("name", "master"), params.get("stream", "stdout"))
        self._start_follow(conn, path, -DEFAULT_TAIL)

    def clear_log(self, conn: HttpConnection, request: Request, params: dict[str, str]) -> None:
        name = params.get("name", "master")
        streams = [params["stream"]] if "stream" in params else (["stdout"] if name == "master" else list(STREAMS))
        matched: list[ProgramRow] = []
        if name != "master":
            matched = select(self.backend.status().programs, [name])
        commands.submit(self.backend, conn, self.log, "clear", ClearArgs((name,), tuple(streams)),
                        lambda reply: self._results(conn, reply, matched))
