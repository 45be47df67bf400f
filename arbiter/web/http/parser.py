"""HTTP/1.x request parsing on top of `httptools.HttpRequestParser` (llhttp), with our limits.

llhttp does the parsing and already rejects most smuggling vectors (see `tests/test_http_parser.py`
for the exact list): Content-Length together with Transfer-Encoding, duplicate or non-numeric
Content-Length, NUL / bare CR / bare LF / other control bytes in the head, obs-fold, bad header
tokens, unknown or lowercase methods (501 for a token, 400 for anything else), `HTTP/1.2`, bad
chunk framing and chunk extensions with spaces. What it lets through, and we refuse (the rules
themselves are in `arbiter.web.http.rules`):

- request line, header count and header field size over the configured limits (414 / 431), and
  a head growing past what those limits allow while still incomplete (431);
- HTTP versions other than 1.0 and 1.1 (llhttp accepts 0.9 and 2.0) (400);
- any Transfer-Encoding but a sole `chunked`, e.g. `gzip, chunked` (501), and any
  Transfer-Encoding in HTTP/1.0 (400);
- a repeated Host (RFC 9112 section 3.2) or Content-Type header (400);
- a target in a form its method may not use: `GET *`, `OPTIONS *x` (400);
- a chunked trailer carrying a field that only means something in a head, such as Host or
  Content-Length (400; other trailers are counted against the limits and dropped, as Gunicorn).

A parser belongs to one connection. Data is fed as it arrives; requests whose head is complete
queue up in `ready` (pipelining answers them in order) while their bodies keep arriving into
`Request.body`. Nothing raises out of `feed` (bad input, or an exception from our own code or
httptools' while parsing it, which becomes a 400): requests completed before it are still
answered, then the error is (`error`), or, if it happened inside a body, the app reading that body
gets it (`Request.error`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import httptools

from arbiter.web.http.errors import RequestError, bad_request
from arbiter.web.http.rules import (
    METHOD_PEEK,
    check_trailer,
    check_transfer_encoding,
    map_error,
    method_refusal,
    split_target,
    unexpected,
)

# Gunicorn's ceilings (gunicorn/http/message.py): a request line limit above 8190 is 8190; a
# header count of 0 or above 32768 is 32768; a field size of 0 checks no single field but still
# bounds the whole head as if each field could take 8190 bytes.
MAX_REQUEST_LINE = 8190
MAX_FIELDS = 32768
DEFAULT_FIELD_SIZE = 8190
# Reads are at most this large, so a head may overshoot its byte budget by this much before
# the check below sees it; the budget is a memory bound, the exact limits are checked per field.
READ_SLACK = 65536
# The request line's share of the head's byte budget when its limit is 0 ("unlimited" in
# Gunicorn, which then reads a line of any length into memory; we stop at 1 MiB).
UNLIMITED_LINE = 1 << 20

(KIND_PLAIN, KIND_CONTENT_LENGTH, KIND_TRANSFER_ENCODING, KIND_EXPECT, KIND_HOST, KIND_SCRIPT_NAME, KIND_PROXY,
 KIND_CONTENT_TYPE) = range(8)
_SPECIAL_KINDS = {
    "CONTENT-LENGTH": KIND_CONTENT_LENGTH,
    "CONTENT-TYPE": KIND_CONTENT_TYPE,
    "TRANSFER-ENCODING": KIND_TRANSFER_ENCODING,
    "EXPECT": KIND_EXPECT,
    "HOST": KIND_HOST,
    "SCRIPT_NAME": KIND_SCRIPT_NAME,
    "X-FORWARDED-FOR": KIND_PROXY,
    "X-FORWARDED-PROTO": KIND_PROXY,
    "X-FORWARDED-PROTOCOL": KIND_PROXY,
    "X-FORWARDED-SSL": KIND_PROXY,
}
_ENV_KEYS = {"CONTENT-TYPE": "CONTENT_TYPE", "CONTENT-LENGTH": "CONTENT_LENGTH"}

# Raw header name -> (NAME, environ key or None, kind). Names repeat across requests, so the
# decode / upper / replace work is done once; the cap keeps hostile names from growing it forever.
_NAMES: dict[bytes, tuple[str, str | None, int]] = {}
_NAMES_CAP = 4096
_METHODS: dict[bytes, str] = {}
_PROTOCOLS = {"1.1": ((1, 1), "HTTP/1.1"), "1.0": ((1, 0), "HTTP/1.0")}


def _name_info(raw: bytes) -> tuple[str, str | None, int]:
    name = raw.decode("latin-1").upper()
    if name in _ENV_KEYS:
        key: str | None = _ENV_KEYS[name]
    elif "_" in name:
        # Gunicorn's header_map="drop": X_Forwarded_For would land on the same environ key as
        # X-Forwarded-For and could be used to fool whatever reads it downstream.
        key = None
    else:
        key = "HTTP_" + name.replace("-", "_")
    info = (name, key, _SPECIAL_KINDS.get(name, KIND_PLAIN))
    if len(_NAMES) < _NAMES_CAP:
        _NAMES[raw] = info
    return info


@dataclass(frozen=True)
class Limits:
    """Request limits as configured; the properties apply Gunicorn's meaning of 0 and its ceilings.

    As Gunicorn counts: the request line without its CRLF (`GET / HTTP/1.1` is 14 bytes), a
    header field as its whole line with the CRLF (`Host: a` is 9 bytes). llhttp hands us the
    name and the value without the whitespace after the colon, so a field counts as
    `Name: value` plus CRLF, exact for the usual single space.
    """

    request_line: int = 4094
    fields: int = 100
    field_size: int = 8190

    @classmethod
    def from_config(cls, cfg: Any) -> Limits:
        return cls(cfg.limit_request_line, cfg.limit_request_fields, cfg.limit_request_field_size)

    @property
    def line_limit(self) -> int:
        """The longest request line in bytes; 0 for no limit of its own."""
        return min(self.request_line, MAX_REQUEST_LINE) if self.request_line > 0 else 0

    @property
    def max_fields(self) -> int:
        return self.fields if 0 < self.fields <= MAX_FIELDS else MAX_FIELDS

    @property
    def field_limit(self) -> int:
        """The longest header field line (CRLF included) in bytes; 0 for no per-field check."""
        return max(self.field_size, 0)

    @property
    def head_bytes(self) -> int:
        """The most bytes an incomplete head may take (a memory bound, whatever the limits)."""
        line = self.line_limit or UNLIMITED_LINE
        field = self.field_limit or DEFAULT_FIELD_SIZE
        return line + 2 + self.max_fields * (field + 2) + 2 + READ_SLACK


class Request:
    """One request: its head (complete once queued in `RequestParser.ready`) and its body so far.

    What hooks see: `method`, `uri` (the raw request target), `path` (still percent-encoded),
    `query`, `version` (a tuple, as Gunicorn's), `headers` as (UPPERCASE NAME, value) pairs.
    """

    __slots__ = (
        "method", "uri", "path", "query", "version", "protocol", "headers", "env", "keep_alive",
        "content_length", "chunked", "transfer_encodings", "expect", "expect_continue",
        "script_name", "proxied", "host_seen", "type_seen", "url", "head_done", "complete", "body",
        "received", "discard", "error", "continue_sent",
    )

    def __init__(self) -> None:
        self.method = ""
        self.uri = ""
        self.path = ""
        self.query = ""
        self.version = (1, 1)
        self.protocol = "HTTP/1.1"
        self.headers: list[tuple[str, str]] = []
        self.env: dict[str, str] = {}  # HTTP_* and CONTENT_* environ entries, repeats joined
        self.keep_alive = False
        self.content_length: int | None = None
        self.chunked = False
        self.transfer_encodings: list[str] = []
        self.expect = ""
        self.expect_continue = False
        self.script_name: str | None = None
        self.proxied = False  # carries headers a trusted proxy may set
        self.host_seen = False
        self.type_seen = False
        self.url = b""
        self.head_done = False
        self.complete = False
        self.body = bytearray()
        self.received = 0  # body bytes parsed so far, read or not
        self.discard = False  # the app is done with it; arriving body bytes are dropped
        self.error: RequestError | None = None  # the body turned out malformed
        self.continue_sent = False

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri} {self.protocol}>"


class RequestParser:
    """Feeds one connection's bytes to llhttp and queues the requests it finds."""

    __slots__ = (
        "_parser", "_limits", "_line_limit", "_field_limit", "_max_fields", "_head_limit",
        "_trailer_limit", "ready", "current", "error", "closed", "partial", "discarded",
        "_in_head", "_head_bytes", "_since_body", "_fields", "_last_keep_alive", "_start",
    )

    def __init__(self, limits: Limits) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._limits = limits
        self._line_limit = limits.line_limit
        self._field_limit = limits.field_limit
        self._max_fields = limits.max_fields
        self._head_limit = limits.head_bytes
        self._trailer_limit = self._head_limit
        self.ready: deque[Request] = deque()
        self.current: Request | None = None  # the message being parsed
        self.error: RequestError | None = None  # a bad head: answer it once `ready` is empty
        self.closed = False  # nothing more will be parsed on this connection
        self.partial = False  # a message has begun and is not complete yet
        self.discarded = 0  # body bytes dropped since the app left a body unread
        self._in_head = True
        self._head_bytes = 0
        self._since_body = 0
        self._fields = 0
        self._last_keep_alive = True
        # The first bytes of the message being parsed, None when unknown (it began right after
        # another one inside a read): only to tell a method llhttp does not know (501) from a
        # request line that is not one (400).
        self._start: bytes | None = b""

    # -- feeding ---------------------------------------------------------------------------

    def feed(self, data: bytes | memoryview) -> None:
        """Parse `data`; never raises for bad input (see the module docstring)."""
        if self.closed:
            return
        if self.current is None:
            self._start = bytes(data[:METHOD_PEEK])  # a new message begins here (after any CRLF)
        elif self._start is not None and len(self._start) < METHOD_PEEK:
            self._start += bytes(data[:METHOD_PEEK - len(self._start)])
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # CONNECT or an Upgrade request: llhttp stops after the message. We answer it as a
            # plain request and close, since the bytes after it are not HTTP/1.1 any more.
            self.closed = True
            if self.ready:
                self.ready[-1].keep_alive = False
            return
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__cause__ or exc.__context__
            if cause is not None and not isinstance(cause, Exception):
                raise cause from None  # SystemExit from a signal handler that ran in a callback
            self._fail(cause if isinstance(cause, RequestError) else unexpected(cause))
            return
        except httptools.HttpParserInvalidMethodError:
            # Where the failing message began is known unless it followed another one within
            # a read (pipelining); then it is taken for malformed.
            self._fail(method_refusal(self._start or b""))
            return
        except httptools.HttpParserInvalidURLError:
            self._fail(bad_request("invalid request target"))
            return
        except httptools.HttpParserError as exc:
            self._fail(map_error(str(exc)))
            return
        except Exception as exc:
            # Not a parse error llhttp reported: a fault of ours or httptools' on strange input.
            # The class of bug that killed workers (issue 8): whatever it is, the input is
            # refused and the worker serves on.
            self._fail(unexpected(exc))
            return
        if self._in_head:
            self._head_bytes += len(data)
            if self._head_limit and self._head_bytes > self._head_limit:
                self._fail(RequestError(431, "Request Header Fields Too Large", "request head too large"))
        elif self.current is not None and self.current.chunked:
            self._since_body += len(data)
            if self._since_body > self._trailer_limit:
                self._fail(RequestError(431, "Request Header Fields Too Large", "chunk trailers too large"))

    def _fail(self, err: RequestError) -> None:
        self.closed = True
        cur = self.current
        if cur is not None and cur.head_done:
            cur.error = err  # the body is bad; whoever reads it finds out
        elif cur is None and not self._last_keep_alive:
            pass  # bytes after a `Connection: close` request: ignored, we close after answering
        else:
            self.error = err

    # -- llhttp callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.current = Request()
        self.partial = True
        self._fields = 0

    def on_url(self, url: bytes) -> None:
        cur = self.current
        assert cur is not None
        cur.url += url
        limit = self._line_limit
        # The request line is METHOD SP target SP HTTP/x.y; get_method is only asked when near.
        if limit and len(cur.url) + 24 > limit and len(cur.url) + len(self._parser.get_method()) + 10 > limit:
            raise RequestError(414, "URI Too Long", f"request line longer than {limit} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        cur = self.current
        assert cur is not None
        self._fields += 1
        if self._fields > self._max_fields:
            raise RequestError(431, "Request Header Fields Too Large", f"more than {self._max_fields} header fields")
        # `Name: value` and its CRLF, as Gunicorn counts a field line (see `Limits`).
        if self._field_limit and len(name) + len(value) + 4 > self._field_limit:
            raise RequestError(
                431, "Request Header Fields Too Large", f"header field longer than {self._field_limit} bytes"
            )
        upper, key, kind = _NAMES.get(name) or _name_info(name)
        if cur.head_done:
            # A chunked trailer: counted against the limits, never passed on (as Gunicorn: WSGI
            # has no trailers); one that only means something in a head is refused.
            check_trailer(upper)
            return
        text = value.decode("latin-1")
        if text and text[-1] in " \t":
            text = text.rstrip(" \t")
        cur.headers.append((upper, text))
        if key is not None:
            env = cur.env
            if key in env:
                env[key] = env[key] + "," + text
            else:
                env[key] = text
        if kind:
            self._special(cur, kind, text)

    @staticmethod
    def _special(cur: Request, kind: int, text: str) -> None:
        if kind == KIND_CONTENT_LENGTH:
            cur.content_length = int(text)  # llhttp has checked: digits only, no repeat
        elif kind == KIND_TRANSFER_ENCODING:
            cur.transfer_encodings.append(text)
        elif kind == KIND_EXPECT:
            cur.expect = text.lower()
        elif kind == KIND_HOST:
            if cur.host_seen:
                raise bad_request("more than one Host header")
            cur.host_seen = True
        elif kind == KIND_CONTENT_TYPE:
            # Joined into one CONTENT_TYPE, two would read as a type no client sent.
            if cur.type_seen:
                raise bad_request("more than one Content-Type header")
            cur.type_seen = True
        elif kind == KIND_SCRIPT_NAME:
            cur.script_name = text
            cur.proxied = True
        else:
            cur.proxied = True

    def on_headers_complete(self) -> None:
        cur = self.current
        assert cur is not None
        parser = self._parser
        protocol = _PROTOCOLS.get(parser.get_http_version())
        if protocol is None:
            raise bad_request(f"unsupported HTTP version {parser.get_http_version()}")
        cur.version, cur.protocol = protocol
        raw_method = parser.get_method()
        method = _METHODS.get(raw_method)
        if method is None:
            method = _METHODS.setdefault(raw_method, raw_method.decode("ascii"))
        cur.method = method
        cur.keep_alive = parser.should_keep_alive()
        if cur.transfer_encodings:
            check_transfer_encoding(cur)
        if cur.expect == "100-continue" and cur.version == (1, 1):
            cur.expect_continue = True  # RFC 9110 10.1.1: HTTP/1.0 expectations are ignored
        split_target(cur)
        cur.head_done = True
        self._in_head = False
        self._head_bytes = 0
        self._since_body = 0
        self.ready.append(cur)

    def on_body(self, body: bytes) -> None:
        cur = self.current
        assert cur is not None
        self._since_body = 0
        cur.received += len(body)
        if cur.discard:
            self.discarded += len(body)
        else:
            cur.body += body

    def on_message_complete(self) -> None:
        cur = self.current
        assert cur is not None
        self._start = None  # the next message begins somewhere in this read
        cur.complete = True
        self._last_keep_alive = cur.keep_alive
        self.current = None
        self.partial = False
        self._in_head = True
        self._head_bytes = 0
