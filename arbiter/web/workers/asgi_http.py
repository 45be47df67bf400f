"""uvicorn's httptools protocol with the `sync` worker's request rules, and a gentler drain.

uvicorn hands llhttp's callbacks straight to the ASGI scope: no request limits, a second
`Host`, `HTTP/2.0`, `Transfer-Encoding` under HTTP/1.0 and `gzip, chunked` are served, and chunked
trailers are appended to the headers the app already holds. This subclass keeps uvicorn's ASGI
side (scope, flow control, pipelining, WebSocket upgrade) and puts our rules in the callbacks,
taking the numbers from `arbiter.web.http.parser.Limits` and the checks from
`arbiter.web.http.rules`, which the WSGI workers use:

- request line, header count, field size with Gunicorn's arithmetic (414 / 431), and a byte
  budget for a head that is still incomplete (431), so one endless header cannot grow the worker;
- HTTP versions other than 1.0 and 1.1 (400); Transfer-Encoding other than a sole `chunked`
  (501) or under HTTP/1.0 (400); a repeated Host or Content-Type (400); a target in a form its
  method may not use (400); a method llhttp does not know (501 for a token, else 400);
- trailers count against the limits and are dropped; one that only means something in a head
  (Host, Content-Length, Authorization...) is refused (400).

A refusal is answered like the sync worker's (same status, body and log line), after the
responses to requests pipelined before it, and the connection is half-closed and drained for a
moment, so the client reads the answer instead of a reset.
"""

from __future__ import annotations

import sys
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from arbiter.web.http.errors import RequestError, bad_request
from arbiter.web.http.parser import _PROTOCOLS, Limits, Request
from arbiter.web.http.response import error_response
from arbiter.web.http.rules import (
    METHOD_PEEK,
    check_trailer,
    check_transfer_encoding,
    map_error,
    method_refusal,
    split_target,
    unexpected,
)

# After a refusal: how long, and how many bytes, we read and drop before closing, so that unread
# input does not make the kernel reset the connection under our answer (the sync worker lingers
# the same way).
LINGER_SECONDS = 1.0
LINGER_BYTES = 1 << 20
_OWS = b" \t"
_WATCHED = frozenset((b"host", b"content-type", b"transfer-encoding", b"expect"))


def _refusing_app(err: RequestError) -> Callable[..., Awaitable[None]]:
    """An ASGI app that answers `err` as the sync worker would (status, reason, detail)."""
    body = (f"{err.status} {err.reason}\n{err.detail}\n" if err.detail else f"{err.status} {err.reason}\n").encode(
        "latin-1", "replace")

    async def refuse(scope: Any, receive: Any, send: Callable[[Any], Awaitable[None]]) -> None:
        await send({"type": "http.response.start", "status": err.status, "headers": [
            (b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    return refuse


def _refusal(exc: Exception, start: bytes | None) -> RequestError:
    """The answer for an error out of `feed_data`, as `RequestParser.feed` maps it.

    `start`: the first bytes of the failing message, None when unknown.
    """
    if isinstance(exc, httptools.HttpParserCallbackError):
        cause = exc.__cause__ or exc.__context__
        if cause is not None and not isinstance(cause, Exception):
            raise cause from None  # SystemExit from a signal handler that ran in a callback
        return cause if isinstance(cause, RequestError) else unexpected(cause)
    if isinstance(exc, httptools.HttpParserInvalidMethodError):
        return method_refusal(start or b"")
    if isinstance(exc, httptools.HttpParserInvalidURLError):
        return bad_request("invalid request target")
    if isinstance(exc, httptools.HttpParserError):
        return map_error(str(exc))
    return unexpected(exc)  # not a parse error: a fault of ours or httptools' on strange input


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """One connection. `limits` is set on the subclass `protocol_class` makes for a worker."""

    limits = Limits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = self.limits
        self._line_limit = limits.line_limit
        self._field_limit = limits.field_limit
        self._max_fields = limits.max_fields
        self._head_limit = limits.head_bytes
        self._trailer_limit = self._head_limit
        self._in_head = True  # between messages or inside a head: bytes count against the budget
        self._head_bytes = 0
        self._since_body = 0  # chunked: bytes since the last body data (sizes, extensions, trailers)
        self._trailers = 0
        # The most a field's name and value may add up to: the limit counts `: ` and CRLF too.
        self._field_room = self._field_limit - 4 if self._field_limit else sys.maxsize
        self._check_fields = True
        self._careful = True  # _check_fields or _head_done: on_header's one test
        self._head_done = False  # the current message's head is complete: headers now are trailers
        # Per message; reset when its head is complete, so on_message_begin costs nothing extra.
        self._host_seen = False
        self._type_seen = False
        self._codings: list[bytes] | None = None
        # The first bytes of the message being read (None: unknown, it began inside a read
        # after another one), only to tell an unknown method (501) from garbage (400).
        self._start: bytes | None = b""
        self._chunked = False
        self._pending: RequestError | None = None  # to answer once earlier responses are done
        self._refused = False
        self._lingered = 0
        self.draining = False

    # -- reading -----------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refused:
            self._linger(len(data))
            return
        self._unset_keepalive_if_required()
        # A field is no longer than the head (or the trailers) it is in: while that is shorter
        # than the field limit (nearly always), on_header need not measure each field.
        self._check_fields = self._head_bytes + self._since_body + len(data) > self._field_room
        self._careful = self._check_fields or self._head_done
        if self._in_head:
            if not self._head_bytes:
                self._start = data[:METHOD_PEEK]  # a message begins here
            elif self._start is not None and len(self._start) < METHOD_PEEK:
                self._start += data[:METHOD_PEEK - len(self._start)]
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgrade()
            return
        except Exception as exc:
            self._refuse(_refusal(exc, self._start))
            return
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_limit and self._head_bytes > self._head_limit:
                self._refuse(RequestError(431, "Request Header Fields Too Large", "request head too large"))
        elif self._chunked:
            self._since_body += len(data)
            if self._since_body > self._trailer_limit:
                self._refuse(RequestError(431, "Request Header Fields Too Large", "chunk trailers too large"))

    def _upgrade(self) -> None:
        # What uvicorn does on llhttp's upgrade pause (its helpers' names vary between versions).
        if self._should_upgrade():
            self.handle_websocket_upgrade()
        else:
            warn = getattr(self, "_unsupported_upgrade_warning", None)
            if warn is not None:
                warn()

    # -- llhttp callbacks --------------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self.url += url
        limit = self._line_limit
        # METHOD SP target SP HTTP/x.y, as the sync parser counts it.
        if limit and len(self.url) + 24 > limit and len(self.url) + len(self.parser.get_method()) + 10 > limit:
            raise RequestError(414, "URI Too Long", f"request line longer than {limit} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        # Called for every header of every request, so the common path is as short as uvicorn's
        # own: one flag says whether a field must be measured or is a trailer. The header count
        # is checked once the head is complete (the byte budget bounds the memory until then).
        if self._careful and self._checked_is_trailer(name, value):
            return
        name = name.lower()
        if value and value[-1] in _OWS:  # llhttp keeps trailing whitespace; RFC 9110 5.5 does not
            value = value.rstrip(b" \t")
        if name in _WATCHED:  # inline: every request has a Host
            if name == b"host":
                if self._host_seen:
                    raise bad_request("more than one Host header")
                self._host_seen = True
            elif name == b"content-type":
                if self._type_seen:
                    raise bad_request("more than one Content-Type header")
                self._type_seen = True
            elif name == b"transfer-encoding":
                if self._codings is None:
                    self._codings = []
                self._codings.append(value)
            elif value.lower() == b"100-continue":  # Expect
                self.expect_100_continue = True
        self.headers.append((name, value))

    def _checked_is_trailer(self, name: bytes, value: bytes) -> bool:
        if self._check_fields and len(name) + len(value) > self._field_room:
            raise RequestError(
                431, "Request Header Fields Too Large", f"header field longer than {self._field_limit} bytes"
            )
        if not self._head_done:
            return False
        # A chunked trailer: counted and checked, never added to the headers the app holds.
        self._trailers += 1
        if len(self.headers) + self._trailers > self._max_fields:
            raise RequestError(431, "Request Header Fields Too Large", f"more than {self._max_fields} header fields")
        check_trailer(name.decode("latin-1").upper())
        return True

    def on_headers_complete(self) -> None:
        if len(self.headers) > self._max_fields:
            raise RequestError(431, "Request Header Fields Too Large", f"more than {self._max_fields} header fields")
        parser = self.parser
        protocol = _PROTOCOLS.get(parser.get_http_version())
        if protocol is None:
            raise bad_request(f"unsupported HTTP version {parser.get_http_version()}")
        self._chunked = False
        if self._codings is not None:
            request = Request()
            request.version = protocol[0]
            request.transfer_encodings = [value.decode("latin-1") for value in self._codings]
            self._codings = None
            check_transfer_encoding(request)
            self._chunked = request.chunked
        if self.url[:1] != b"/":  # origin form is always fine; the other three depend on the method
            request = Request()
            request.method = parser.get_method().decode("ascii")
            request.url = self.url
            split_target(request)
        self._host_seen = self._type_seen = False
        self._trailers = 0
        self._head_done = self._careful = True
        self._in_head = False
        self._head_bytes = 0
        self._since_body = 0
        HttpToolsProtocol.on_headers_complete(self)
        if self.draining and self.cycle is not None:
            self.cycle.keep_alive = False

    def on_body(self, body: bytes) -> None:
        self._since_body = 0
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_head = True
        self._head_bytes = 0
        self._head_done = False
        self._careful = self._check_fields
        self._start = None  # the next message begins inside this read
        HttpToolsProtocol.on_message_complete(self)

    # -- refusing ----------------------------------------------------------------------------

    def _refuse(self, err: RequestError) -> None:
        """Answer `err` once the responses before it are out, then close."""
        self._refused = True
        cycle = self.cycle
        if self._head_done and cycle is not None:
            # The body of a request the app already has (or will have) turned out malformed.
            if any(queued is cycle for queued, _ in self.pipeline):
                # Still queued behind earlier requests: when its turn comes, the refusal is its
                # response instead of the app's, and the connection closes after it.
                self.pipeline = deque((queued, _refusing_app(err) if queued is cycle else app)
                                      for queued, app in self.pipeline)
                cycle.keep_alive = False
                return
            if not cycle.response_complete:
                if cycle.response_started:
                    self.transport.close()  # half a response is out; only a cut can say so
                    return
                cycle.disconnected = True  # the app's reads end, its answer goes nowhere
                cycle.message_event.set()
                self._answer(err)
                return
        if self.pipeline or (cycle is not None and not cycle.response_complete):
            # Responses to earlier requests are still to come, the last from `cycle` (the last
            # request read): answer once it is complete, so the answers stay in order.
            assert cycle is not None
            self._pending = err
            done = cycle.on_response

            def then_refuse() -> None:
                done()
                if self._pending is not None and not self.transport.is_closing():
                    self._answer(self._pending)

            cycle.on_response = then_refuse
            return
        self._answer(err)

    def _answer(self, err: RequestError) -> None:
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "unix socket"
        self.logger.debug("Invalid request from %s: %s %s", client, err.status, err.detail)
        self._unset_keepalive_if_required()
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(error_response(err.status, err.reason, err.detail))
        if transport.can_write_eof():
            transport.write_eof()
            self.flow.resume_reading()
            self.loop.call_later(LINGER_SECONDS, transport.close)
        else:
            transport.close()

    def _linger(self, size: int) -> None:
        self._lingered += size
        if self._lingered > LINGER_BYTES and self._pending is None:
            self.transport.close()

    # -- stopping ----------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Called when the worker starts to drain.

        uvicorn closes an idle keep-alive connection at once; a client that had just sent a
        request on it sees the connection drop with no answer, which is where most failed requests
        during a reload come from. Here an idle connection stays open until its keep-alive timer
        ends it, and a request that arrives meanwhile is answered with `Connection: close`, so the
        client moves to a live worker without losing anything.
        """
        self.draining = True
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False  # in flight: answer, then close
        elif self.timeout_keep_alive_task is None and not self._refused:
            # Accepted but silent so far: give the request that is surely coming the same
            # keep-alive grace as an idle connection.
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )


def protocol_class(limits: Limits) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for a worker whose limits are `limits` (uvicorn's `http=` option)."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})
