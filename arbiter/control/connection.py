"""One HTTP/1.1 client connection of the control server, driven by the master's selector.

h11 does the parsing (sans-IO: we feed it bytes and it hands back events), so this module only
moves bytes between a non-blocking socket and h11, and enforces the limits that keep one client
from costing the master anything: header and body size, a deadline to send a whole request
(slow clients), an idle keep-alive timeout, and a deadline on writes that make no progress.

A request is handed to `on_request(conn, request)` once complete. The answer may come at once or
turns later (a command the master has not finished); until then the connection is "in flight"
and h11 holds any pipelined bytes back.
"""

from __future__ import annotations

import json
import logging
import selectors
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import h11

from arbiter.control.backend import ControlError

READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


@dataclass
class Limits:
    """What one client may cost. Tests shrink the timeouts."""

    max_body: int = 1 << 20
    max_header: int = 16 << 10
    idle_timeout: float = 60.0      # keep-alive with nothing in progress
    request_timeout: float = 10.0   # from a request's first byte to its last
    write_timeout: float = 30.0     # output pending and none of it accepted
    drain_timeout: float = 2.0      # reading what a client still sends after our final answer
    max_connections: int = 64
    stream_buffer: int = 256 << 10  # a follow stream stops reading the file above this


@dataclass(frozen=True)
class Peer:
    """Who is on the other end: `kind` is "unix" or "tcp"; uid/pid only for unix sockets."""

    kind: str
    address: str
    uid: int | None = None
    pid: int | None = None


@dataclass
class Request:
    method: str
    target: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    peer: Peer
    context: dict[str, Any] = field(default_factory=dict)  # what the server learned (auth...)

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def json(self, *, empty: Any = None) -> Any:
        """The body as JSON (`empty` when there is none).

        Raises:
            ControlError: BAD_REQUEST when the body is not valid JSON.
        """
        if not self.body.strip():
            return {} if empty is None else empty
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ControlError("BAD_REQUEST", f"request body is not valid JSON: {exc}") from None


def _make_request(event: h11.Request, body: bytes, peer: Peer) -> Request:
    target = event.target.decode("latin-1")
    parts = urlsplit(target)
    headers: dict[str, str] = {}
    for name, value in event.headers:
        key, text = name.decode("latin-1").lower(), value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return Request(event.method.decode("ascii"), target, unquote(parts.path),
                   dict(parse_qsl(parts.query, keep_blank_values=True)), headers, body, peer)


def _reason(status: int) -> bytes:
    # h11 sends no reason phrase by default; supervisorctl's tail -f cannot read a status line
    # without one.
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


class HttpConnection:
    """Bytes in, h11 events, requests out; responses in, bytes out. Never blocks."""

    def __init__(self, sock: socket.socket, peer: Peer, selector: selectors.BaseSelector,
                 limits: Limits, clock: Callable[[], float], log: logging.Logger,
                 on_request: Callable[[HttpConnection, Request], None],
                 base_headers: list[tuple[str, str]]) -> None:
        self.sock, self.peer, self.log = sock, peer, log
        self._selector, self._limits, self._clock = selector, limits, clock
        self._on_request, self._base_headers = on_request, base_headers
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header)
        self._out = bytearray()
        self._mask = READ
        self._event: h11.Request | None = None
        self._body = bytearray()
        self._method = ""
        self.in_flight = False      # a request was handed on and its answer is not complete
        self.request_id = 0         # which request an answer belongs to (stale replies dropped)
        self.closed = False
        self._processing = False
        self._close_after_flush = False
        self._draining_until: float | None = None
        now = clock()
        self._request_started: float | None = None
        self._idle_since = now
        self._write_stalled_since: float | None = None
        self.on_close: list[Callable[[], None]] = []
        sock.setblocking(False)
        selector.register(sock, READ, self._handle)

    # -- the selector's side ------------------------------------------------------------------

    def _handle(self, key: selectors.SelectorKey, mask: int) -> None:
        try:
            if mask & WRITE:
                self._flush()
            if mask & READ and not self.closed:
                self._read()
        except Exception:  # whatever one client does, the master loop goes on
            self.log.exception("control: error on a connection from %s", self.peer.address)
            self.close()

    def _read(self) -> None:
        try:
            data = self.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        if self._draining_until is not None:
            if not data:
                self.close()
            return
        if self.in_flight:
            if not data:
                self.close()  # the client left; whatever answer comes later is dropped
            elif len(self._h11.trailing_data[0]) + len(data) > self._limits.max_header:
                self.close()  # pipelining beyond what we are willing to hold
            else:
                self._h11.receive_data(data)
            return
        if data and self._request_started is None:
            self._request_started = self._clock()
        self._h11.receive_data(data)
        self._process()

    def _process(self) -> None:
        """Pull events out of h11 until it needs more bytes or a request is handed on."""
        if self._processing:
            return
        self._processing = True
        try:
            while not self.in_flight and not self.closed and self._draining_until is None:
                try:
                    event = self._h11.next_event()
                except h11.RemoteProtocolError as exc:
                    self._protocol_error(exc)
                    return
                if event is h11.NEED_DATA or event is h11.PAUSED:
                    return
                if isinstance(event, h11.Request):
                    self._begin(event)
                elif isinstance(event, h11.Data):
                    self._body += event.data
                    if len(self._body) > self._limits.max_body:
                        self._too_large()
                elif isinstance(event, h11.EndOfMessage):
                    self._dispatch()
                elif isinstance(event, h11.ConnectionClosed):
                    self.close()
        finally:
            self._processing = False

    def _begin(self, event: h11.Request) -> None:
        self._event, self._body = event, bytearray()
        self._method = event.method.decode("ascii", "replace")
        length = dict(event.headers).get(b"content-length")
        # h11 bounds only a header block that arrives in pieces; one that arrives whole is
        # measured here.
        size = len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers)
        if size > self._limits.max_header:
            self.in_flight = True
            self.respond_error(ControlError("HEADERS_TOO_LARGE", f"request head larger than "
                                            f"{self._limits.max_header} bytes"), close=True)
        elif length is not None and int(length) > self._limits.max_body:
            self._too_large()
        elif self._h11.they_are_waiting_for_100_continue:
            self._send(h11.InformationalResponse(status_code=100, headers=[]))

    def _too_large(self) -> None:
        self.in_flight = True  # stops _process; the answer closes the connection
        self.respond_error(ControlError(
            "TOO_LARGE", f"request body larger than {self._limits.max_body} bytes"), close=True)

    def _protocol_error(self, exc: h11.RemoteProtocolError) -> None:
        status = exc.error_status_hint
        if self._h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            self.close()
            return
        self.in_flight = True
        code = "HEADERS_TOO_LARGE" if status == 431 else "BAD_REQUEST"
        self.respond_error(ControlError(code, f"malformed HTTP request: {exc}", status), close=True)

    def _dispatch(self) -> None:
        assert self._event is not None
        request = _make_request(self._event, bytes(self._body), self.peer)
        self._body = bytearray()
        self.in_flight = True
        self.request_id += 1
        self._request_started = None
        try:
            self._on_request(self, request)
        except Exception:  # a handler bug must cost one answer, never the master
            # The path only: a query may hold a token (/login?token=...).
            self.log.exception("control: error handling %s %s", request.method, request.path)
            if self.in_flight and self._h11.our_state is h11.SEND_RESPONSE:
                self.respond_error(ControlError("INTERNAL", "internal error; see the master's log"))
            elif self.in_flight:
                self.close()  # a response already begun cannot say so: end it

    # -- answering ----------------------------------------------------------------------------

    def respond(self, status: int, body: bytes, content_type: str = "application/json",
                headers: list[tuple[str, str]] | None = None, *, close: bool = False) -> None:
        """Send one complete response to the request in flight."""
        if not self._can_answer():
            return
        all_headers = [("Content-Type", content_type), ("Content-Length", str(len(body))),
                       *self._base_headers, *(headers or [])]
        if status == 204:
            all_headers = all_headers[2:]  # no body, and no framing headers (RFC 9110 8.6)
        if close:
            all_headers.append(("Connection", "close"))
        self._send(h11.Response(status_code=status, headers=all_headers, reason=_reason(status)))
        if body and self._method != "HEAD":
            self._send(h11.Data(data=body))
        self._send(h11.EndOfMessage())
        self._finished()

    def respond_json(self, status: int, value: Any, headers: list[tuple[str, str]] | None = None) -> None:
        body = json.dumps(value, default=str, separators=(",", ":")).encode() + b"\n"
        self.respond(status, body, "application/json", headers)

    def respond_error(self, error: ControlError, *, close: bool = False,
                      headers: list[tuple[str, str]] | None = None) -> None:
        body = json.dumps(error.to_json()).encode() + b"\n"
        self.respond(error.http_status, body, "application/json", headers, close=close)

    def start_stream(self, status: int, content_type: str, headers: list[tuple[str, str]] | None = None) -> None:
        """Begin a response of unknown length (chunked for HTTP/1.1 clients)."""
        if self._can_answer():
            self._send(h11.Response(status_code=status, reason=_reason(status), headers=[
                ("Content-Type", content_type), *self._base_headers, *(headers or [])]))

    def write_stream(self, data: bytes) -> None:
        if not self.closed and data and self._h11.our_state is h11.SEND_BODY:
            self._send(h11.Data(data=data))

    def end_stream(self) -> None:
        if not self.closed and self._h11.our_state is h11.SEND_BODY:
            self._send(h11.EndOfMessage())
            self._finished()

    @property
    def pending_output(self) -> int:
        return len(self._out)

    def _can_answer(self) -> bool:
        # IDLE too: h11 lets a server answer a request it could not parse (400, 408, 431).
        return not self.closed and self.in_flight and self._h11.our_state in (h11.IDLE, h11.SEND_RESPONSE)

    def _finished(self) -> None:
        """The answer is complete: reuse the connection for the next request, or close it."""
        self.in_flight = False
        self._event = None
        self._idle_since = self._clock()
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
            if self._h11.trailing_data[0]:
                self._request_started = self._clock()
            self._process()  # pipelined bytes already held by h11
        elif not self.closed:
            self._close_after_flush = True
            self._flush()

    def _send(self, event: Any) -> None:
        try:
            data = self._h11.send(event)
        except h11.LocalProtocolError:
            self.log.exception("control: cannot send %r", type(event).__name__)
            self.close()
            return
        if data:
            if not self._out:
                self._write_stalled_since = self._clock()
            self._out += data
            self._flush()

    def _flush(self) -> None:
        while self._out and not self.closed:
            try:
                sent = self.sock.send(self._out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.close()
                return
            del self._out[:sent]
            self._write_stalled_since = self._clock()
        if self.closed:
            return
        if not self._out and self._close_after_flush and self._draining_until is None:
            # Half-close and read what the client still sends, so that closing with unread
            # bytes does not reset the connection before it has read our answer.
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                self.close()
                return
            self._draining_until = self._clock() + self._limits.drain_timeout
        self._set_mask(READ | WRITE if self._out else READ)

    def _set_mask(self, mask: int) -> None:
        if mask != self._mask and not self.closed:
            self._mask = mask
            self._selector.modify(self.sock, mask, self._handle)

    # -- time -----------------------------------------------------------------------------------

    def deadline(self) -> float | None:
        """When `tick` next has something to check for this connection."""
        limits = self._limits
        times = []
        if self._draining_until is not None:
            times.append(self._draining_until)
        if self._out and self._write_stalled_since is not None:
            times.append(self._write_stalled_since + limits.write_timeout)
        if not self.in_flight:
            if self._request_started is not None:
                times.append(self._request_started + limits.request_timeout)
            else:
                times.append(self._idle_since + limits.idle_timeout)
        return min(times) if times else None

    def tick(self, now: float) -> None:
        """Enforce the timeouts."""
        if self.closed:
            return
        limits = self._limits
        if self._draining_until is not None:
            if now >= self._draining_until:
                self.close()
            return
        if self._out and self._write_stalled_since is not None \
                and now - self._write_stalled_since >= limits.write_timeout:
            self.close()
        elif not self.in_flight and self._request_started is not None:
            if now - self._request_started >= limits.request_timeout:
                self.in_flight = True
                self.respond_error(ControlError("TIMEOUT", "request not received in time"), close=True)
        elif not self.in_flight and now - self._idle_since >= limits.idle_timeout:
            self.close()

    # -- the end --------------------------------------------------------------------------------

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._selector.unregister(self.sock)
        except (KeyError, ValueError):
            pass
        self.sock.close()
        callbacks, self.on_close = self.on_close, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                self.log.exception("control: error while closing a connection")

    def flush_and_close(self) -> None:
        """Master shutting down: send what the socket takes at once, then close."""
        if not self.closed and self._out:
            try:
                self.sock.send(self._out)
            except OSError:
                pass
        self.close()

    def close_in_child(self) -> None:
        """After fork: drop our copy of the socket, leaving the parent's selector alone."""
        self.closed = True
        self.sock.close()
