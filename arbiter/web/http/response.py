"""The response side of PEP 3333: `start_response`, `write()`, and putting bytes on the wire.

Headers are validated when the app calls `start_response`: a bad status, a bad header name, a
control character such as CR, LF or NUL, or a non-latin-1 character raises `InvalidResponse`,
answered with a 500, so nothing the app says can split a response. The head goes out with the
first non-empty body chunk, in one `send` when that chunk is small. Framing: the app's
Content-Length, else the exact length when the whole body is known (a list, or nothing), else
chunked for HTTP/1.1, else (HTTP/1.0) the end of the connection.
"""

from __future__ import annotations

import os
import re
import stat
import time
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from arbiter.web.http.errors import InvalidResponse
from arbiter.web.http.parser import Request

if TYPE_CHECKING:
    from arbiter.web.http.connection import Connection

SERVER = "arbiter"
# At most this much of an unread request body is read and dropped to keep the connection;
# beyond it the response says `Connection: close`.
DRAIN_LIMIT = 1 << 20
# Below this, the head is joined with the first chunk into one send.
COALESCE_LIMIT = 65536

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
# Control characters other than HTAB: CR and LF would split the response, the rest are invalid.
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_STATUS = re.compile(r"[1-5][0-9][0-9](?: [^\x00-\x08\x0a-\x1f\x7f]*)?\Z")
_HOP_BY_HOP = frozenset({
    "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "trailers",
    "transfer-encoding", "upgrade",
})
KIND_PLAIN, KIND_LENGTH, KIND_DROP, KIND_CONNECTION, KIND_DATE, KIND_SERVER = range(6)
_NAME_KINDS: dict[str, int] = {}
_STATUS_CODES: dict[str, int] = {}
_CACHE_CAP = 4096
_NO_BODY_CODES = frozenset({204, 304})

_date_second = -1
_date_line = b""


def date_header() -> bytes:
    """`Date: ...\\r\\n`, formatted once a second."""
    global _date_second, _date_line
    now = time.time()
    second = int(now)
    if second != _date_second:
        # Two threads may both refresh it; they compute the same bytes.
        _date_line = f"Date: {formatdate(now, usegmt=True)}\r\n".encode("ascii")
        _date_second = second
    return _date_line


_SERVER_LINE = f"Server: {SERVER}\r\n".encode("ascii")


def _name_kind(name: Any) -> int:
    kind = _NAME_KINDS.get(name)
    if kind is not None:
        return kind
    if type(name) is not str or not _TOKEN.match(name):
        raise InvalidResponse(f"invalid response header name {name!r}")
    lower = name.lower()
    if lower == "content-length":
        kind = KIND_LENGTH
    elif lower == "connection":
        kind = KIND_CONNECTION
    elif lower in _HOP_BY_HOP:
        kind = KIND_DROP  # PEP 3333: hop-by-hop headers are the server's business
    elif lower == "date":
        kind = KIND_DATE
    elif lower == "server":
        kind = KIND_SERVER
    else:
        kind = KIND_PLAIN
    if len(_NAME_KINDS) < _CACHE_CAP:
        _NAME_KINDS[name] = kind
    return kind


def _status_code(status: Any) -> int:
    code = _STATUS_CODES.get(status)
    if code is not None:
        return code
    if type(status) is not str or not _STATUS.match(status) or not _is_latin1(status):
        raise InvalidResponse(f"invalid status {status!r}: expected '200 OK' or similar, in latin-1")
    code = int(status[:3])
    if code < 200:
        raise InvalidResponse(f"status {status!r}: a WSGI app cannot send an interim (1xx) response")
    if len(_STATUS_CODES) < _CACHE_CAP:
        _STATUS_CODES[status] = code
    return code


def _is_latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True


def error_response(status: int, reason: str, detail: str = "") -> bytes:
    """A complete, closing error response with a short text body."""
    text = f"{status} {reason}\n{detail}\n" if detail else f"{status} {reason}\n"
    body = text.encode("latin-1", "replace")
    return (
        f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\n".encode("ascii") + date_header() + _SERVER_LINE + b"\r\n" + body
    )


# Apps send the same header lists again and again: validated and encoded once, by value.
_COMPILED: dict[tuple[Any, ...], tuple[bytes, int | None, bool, bool, bool]] = {}


def _compile_headers(headers: Any) -> tuple[bytes, int | None, bool, bool, bool]:
    """Validate the app's headers; (encoded lines, Content-Length, close?, add Date?, add Server?).

    Raises:
        InvalidResponse: a bad name, a non-str value, a control character (CR, LF, NUL...) or a
            non-latin-1 character.
    """
    lines = []
    length = None
    must_close = False
    extra_date = extra_server = True
    try:
        for name, value in headers:
            kind = _name_kind(name)
            if type(value) is not str:
                raise InvalidResponse(f"response header {name!r}: value {value!r} is not a str")
            if _BAD_VALUE.search(value):
                raise InvalidResponse(f"response header {name!r}: control character (CR, LF, NUL...) in {value!r}")
            if kind:
                if kind == KIND_LENGTH:
                    length = _content_length(value)
                elif kind == KIND_CONNECTION:
                    must_close = must_close or "close" in value.lower()
                    continue
                elif kind == KIND_DROP:
                    continue
                elif kind == KIND_DATE:
                    extra_date = False
                else:
                    extra_server = False
            lines.append(f"{name}: {value}\r\n")
    except (TypeError, ValueError) as exc:
        if isinstance(exc, InvalidResponse):
            raise
        raise InvalidResponse(f"response headers must be (name, value) pairs of str: {exc}") from None
    block = "".join(lines)
    try:
        encoded = block.encode("latin-1")
    except UnicodeEncodeError:
        raise InvalidResponse("response headers must be latin-1 (PEP 3333)") from None
    return encoded, length, must_close, extra_date, extra_server


class Response:
    """One response. What hooks and the access log see: `status`, `status_code`, `headers`,
    `sent` (body bytes sent) and `headers_sent`.
    """

    __slots__ = (
        "conn", "req", "status", "status_code", "headers", "sent", "headers_sent", "length",
        "chunked", "must_close", "keep_alive", "_block", "_extra", "_no_body", "_alive",
    )

    def __init__(self, conn: Connection, req: Request, keep_alive: bool, alive: Any) -> None:
        self.conn = conn
        self.req = req
        self.status: str | None = None
        self.status_code = 0
        self.headers: list[tuple[str, str]] = []
        self.sent = 0
        self.headers_sent = False
        self.length: int | None = None  # the app's Content-Length
        self.chunked = False
        self.must_close = False  # the app asked for it, or the framing needs it
        self.keep_alive = keep_alive  # final: decided when the head goes out
        self._block = b""  # the app's header lines, validated and encoded
        self._extra = b""  # Date / Server lines we add
        self._no_body = False
        self._alive = alive  # the worker: `alive` false means answer, then close

    # -- PEP 3333 callables ------------------------------------------------------------------

    def start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        if exc_info:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None  # no reference cycle through the traceback
        elif self.status is not None:
            raise AssertionError("start_response called a second time without exc_info")
        code = _status_code(status)
        if type(headers) is not list:
            try:
                headers = list(headers)
            except TypeError:
                raise InvalidResponse(f"response headers must be a list, not {type(headers).__name__}") from None
        try:
            key: tuple[Any, ...] | None = tuple(headers)
            compiled = _COMPILED.get(key)  # type: ignore[arg-type]
        except TypeError:  # unhashable items (lists): validate without the cache
            key = compiled = None
        if compiled is None:
            compiled = _compile_headers(headers)
            if key is not None:
                if len(_COMPILED) >= _CACHE_CAP:
                    _COMPILED.clear()
                _COMPILED[key] = compiled
        self._block, length, must_close, extra_date, extra_server = compiled
        self._extra = (date_header() if extra_date else b"") + (_SERVER_LINE if extra_server else b"")
        self.status = status
        self.status_code = code
        self.headers = headers
        self.length = length
        self.must_close = must_close
        return self.write

    def write(self, data: bytes) -> None:
        """PEP 3333 `write()`, and the path every body chunk takes."""
        if type(data) is not bytes:
            if not isinstance(data, (bytearray, memoryview)):
                raise TypeError(f"response body must be bytes, not {type(data).__name__}")
            data = bytes(data)
        if self.status is None:
            raise AssertionError("write() or response body before start_response")
        if not data:
            return
        if self.length is not None:
            room = self.length - self.sent
            if len(data) > room:
                data = data[:room]  # never more than the app's own Content-Length says
                if not data:
                    return
        if self.headers_sent:
            if not self._no_body:
                self.sent += len(data)
                self.conn.send(b"%x\r\n%b\r\n" % (len(data), data) if self.chunked else data)
            return
        head = self._head(None)
        if self._no_body:
            self.conn.send(head)
            return
        self.sent += len(data)
        if self.chunked:
            self.conn.send(head + b"%x\r\n%b\r\n" % (len(data), data))
        elif len(data) < COALESCE_LIMIT:
            self.conn.send(head + data)
        else:
            self.conn.send(head)
            self.conn.send(data)

    # -- the server's side -------------------------------------------------------------------

    def write_whole(self, data: bytes) -> None:
        """The entire body at once (the app returned a list): exact length, one send."""
        if self.headers_sent or self.status is None or type(data) is not bytes:
            self.write(data)  # which also refuses a non-bytes body before any byte is sent
            return
        if self.length is not None:
            data = data[:self.length]
        head = self._head(len(data))
        if self._no_body:
            self.conn.send(head)
            return
        self.sent = len(data)
        if len(data) < COALESCE_LIMIT:
            self.conn.send(head + data)
        else:
            self.conn.send(head)
            self.conn.send(data)

    def send_file(self, filelike: Any) -> bool:
        """Send a file with sendfile(2); False when it cannot be (caller iterates instead)."""
        if self.conn.tls or self.chunked or self.status is None:
            return False
        try:
            fileno = filelike.fileno()
            info = os.fstat(fileno)
            offset = filelike.tell()
        except (AttributeError, OSError, ValueError):
            return False
        if not stat.S_ISREG(info.st_mode):
            return False
        count = max(0, info.st_size - offset)
        if self.length is not None:
            count = min(count, self.length - self.sent)
        if not self.headers_sent:
            self.conn.send(self._head(count if self.length is None else None))
        if self._no_body or count <= 0:
            return True
        self.sent += self.conn.sendfile(filelike, offset, count)
        return True

    def finish(self) -> None:
        """End the body: send the head if nothing was sent, the last chunk if chunked."""
        if not self.headers_sent:
            if self.status is None:
                raise AssertionError("the app returned without calling start_response")
            self.conn.send(self._head(0))
        elif self.chunked:
            self.conn.send(b"0\r\n\r\n")
        if self.length is not None and self.sent < self.length and not self._no_body:
            # The client waits for bytes that will never come; only closing ends its wait.
            self.keep_alive = False

    def _head(self, whole: int | None) -> bytes:
        """The status line and headers; `whole` is the body length when it is known."""
        req = self.req
        code = self.status_code
        method_head = req.method == "HEAD"
        self._no_body = method_head or code in _NO_BODY_CODES
        framing = b""
        close = self.must_close
        if self.length is None and code not in _NO_BODY_CODES:
            if method_head:
                if whole:  # the length a GET would have; an empty HEAD body tells us nothing
                    framing = b"Content-Length: %d\r\n" % whole
            elif whole is not None:
                framing = b"Content-Length: %d\r\n" % whole
            elif req.version >= (1, 1):
                self.chunked = True
                framing = b"Transfer-Encoding: chunked\r\n"
            else:
                close = True  # HTTP/1.0 without a length: the body ends with the connection
        if not req.complete and not close:
            close = not _can_drain(req)
        # A worker being promoted to the mold closes each connection after its current answer.
        keep = self.keep_alive and not close and self._alive.alive and not getattr(self._alive, "promoted", False)
        self.keep_alive = keep
        if not keep:
            connection = b"Connection: close\r\n"
        elif req.version < (1, 1):
            connection = b"Connection: keep-alive\r\n"
        else:
            connection = b""
        head = b"".join((
            b"%s %s\r\n" % (req.protocol.encode("ascii"), self.status.encode("latin-1")),  # type: ignore[union-attr]
            self._block, self._extra, framing, connection, b"\r\n",
        ))
        # A final response ends any wait for "100 Continue"; one must not follow it.
        req.continue_sent = True
        self.headers_sent = True
        return head


def _content_length(value: str) -> int:
    text = value.strip()
    if not text.isdigit() or not text.isascii():
        raise InvalidResponse(f"invalid Content-Length {value!r}")
    return int(text)


def _can_drain(req: Request) -> bool:
    """Whether the unread rest of the request body is small enough to read and drop."""
    if req.expect_continue and not req.continue_sent:
        return False  # the client holds the body back until we say "continue"; we won't
    if req.content_length is not None:
        return req.content_length - req.received <= DRAIN_LIMIT
    return True  # chunked: drained while it stays under DRAIN_LIMIT, else closed

