"""HTTP/1.x request parsing on top of `httptools.HttpRequestParser` (llhttp), with our limits.

llhttp does the parsing and already rejects most smuggling vectors (see `tests/test_http_parser.py`
for the exact list): Content-Length together with Transfer-Encoding, duplicate or non-numeric
Content-Length, NUL / bare CR / bare LF / other control bytes in the head, obs-fold, bad header
tokens, unknown or lowercase methods, `HTTP/1.2`, bad chunk framing. What it lets through, and
this module refuses:

- request line, header count and header field size over the configured limits (414 / 431), and
  a head growing past what those limits allow while still incomplete (431);
- HTTP versions other than 1.0 and 1.1 (llhttp accepts 0.9 and 2.0) (400);
- any Transfer-Encoding but a sole `chunked`, e.g. `gzip, chunked` (501), and any
  Transfer-Encoding in HTTP/1.0 (400);
- a repeated Host header (400, RFC 9112 section 3.2).

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
from urllib.parse import urlsplit

import httptools

from arbiter.web.http.errors import RequestError, bad_request

# Gunicorn's ceilings where a limit of 0 would otherwise mean "no limit at all".
MAX_FIELDS = 32768
# Reads are at most this large, so a head may overshoot its byte budget by this much before
# the check below sees it; the budget is a memory bound, the exact limits are checked per field.
READ_SLACK = 65536
# Bound on trailer and chunk-extension bytes seen without any body data, when limits are 0.
UNLIMITED_HEAD = 1 << 20

KIND_PLAIN, KIND_CONTENT_LENGTH, KIND_TRANSFER_ENCODING, KIND_EXPECT, KIND_HOST, KIND_SCRIPT_NAME, KIND_PROXY = range(7)
_SPECIAL_KINDS = {
    "CONTENT-LENGTH": KIND_CONTENT_LENGTH,
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
    """Request limits from the config; 0 means unlimited, as in Gunicorn."""

    request_line: int = 4094
    fields: int = 100
    field_size: int = 8190

    @classmethod
    def from_config(cls, cfg: Any) -> Limits:
        return cls(cfg.limit_request_line, cfg.limit_request_fields, cfg.limit_request_field_size)

    @property
    def max_fields(self) -> int:
        return self.fields if 0 < self.fields <= MAX_FIELDS else MAX_FIELDS

    @property
    def head_bytes(self) -> int:
        """The most bytes an incomplete head may take; 0 when a limit is off."""
        if not self.request_line or not self.field_size:
            return 0
        return self.request_line + 2 + self.max_fields * (self.field_size + 2) + 2 + READ_SLACK


class Request:
    """One request: its head (complete once queued in `RequestParser.ready`) and its body so far.

    What hooks see: `method`, `uri` (the raw request target), `path` (still percent-encoded),
    `query`, `version` (a tuple, as Gunicorn's), `headers` as (UPPERCASE NAME, value) pairs.
    """

    __slots__ = (
        "method", "uri", "path", "query", "version", "protocol", "headers", "env", "keep_alive",
        "content_length", "chunked", "transfer_encodings", "expect", "expect_continue",
        "script_name", "proxied", "host_seen", "url", "head_done", "complete", "body", "received",
        "discard", "error", "continue_sent",
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
        "_in_head", "_head_bytes", "_since_body", "_fields", "_last_keep_alive",
    )

    def __init__(self, limits: Limits) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._limits = limits
        self._line_limit = limits.request_line
        self._field_limit = limits.field_size
        self._max_fields = limits.max_fields
        self._head_limit = limits.head_bytes
        self._trailer_limit = self._head_limit or UNLIMITED_HEAD
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

    # -- feeding ---------------------------------------------------------------------------

    def feed(self, data: bytes | memoryview) -> None:
        """Parse `data`; never raises for bad input (see the module docstring)."""
        if self.closed:
            return
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
            self._fail(cause if isinstance(cause, RequestError) else _unexpected(cause))
            return
        except httptools.HttpParserInvalidMethodError:
            self._fail(bad_request("invalid method"))
            return
        except httptools.HttpParserInvalidURLError:
            self._fail(bad_request("invalid request target"))
            return
        except httptools.HttpParserError as exc:
            self._fail(_map_error(str(exc)))
            return
        except Exception as exc:
            # Not a parse error llhttp reported: a fault of ours or httptools' on strange input.
            # The class of bug that killed workers (issue 8): whatever it is, the input is
            # refused and the worker serves on.
            self._fail(_unexpected(exc))
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
        if self._field_limit and len(name) + len(value) + 2 > self._field_limit:
            raise RequestError(
                431, "Request Header Fields Too Large", f"header field longer than {self._field_limit} bytes"
            )
        if cur.head_done:
            return  # a chunked trailer: counted against the limits, not passed on (as Gunicorn)
        upper, key, kind = _NAMES.get(name) or _name_info(name)
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
            _check_transfer_encoding(cur)
        if cur.expect == "100-continue" and cur.version == (1, 1):
            cur.expect_continue = True  # RFC 9110 10.1.1: HTTP/1.0 expectations are ignored
        _split_target(cur)
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
        cur.complete = True
        self._last_keep_alive = cur.keep_alive
        self.current = None
        self.partial = False
        self._in_head = True
        self._head_bytes = 0


def _check_transfer_encoding(cur: Request) -> None:
    codings = [c.strip().lower() for value in cur.transfer_encodings for c in value.split(",")]
    if cur.version < (1, 1):
        raise bad_request("Transfer-Encoding is not allowed in HTTP/1.0")
    if codings != ["chunked"]:
        # We cannot decode gzip & co., and passing encoded bytes on as the body would hand the
        # app something other than what Content-Type says.
        raise RequestError(501, "Not Implemented", "unsupported transfer coding")
    cur.chunked = True


def _split_target(cur: Request) -> None:
    raw = cur.url
    uri = raw.decode("latin-1")  # llhttp lets no byte over 0x7f into the target
    cur.uri = uri
    if uri[:1] == "/":
        path, _, query = uri.partition("?")
        if "#" in query:
            query = query.partition("#")[0]
        elif "#" in path:
            path = path.partition("#")[0]
        cur.path, cur.query = path, query
    elif "://" in uri:  # absolute form, as sent to proxies
        try:
            parts = urlsplit(uri)
        except ValueError:  # e.g. an unbalanced "[" or "]" in the authority
            raise bad_request("invalid request target") from None
        cur.path, cur.query = parts.path or "/", parts.query
    else:  # "*" (OPTIONS) or authority form (CONNECT)
        cur.path, cur.query = uri, ""


def _unexpected(exc: BaseException | None) -> RequestError:
    """A 400 for an exception no check of ours meant to raise; the cause is kept for the log."""
    err = bad_request("malformed request")
    err.__cause__ = exc
    return err


_ERROR_MESSAGES = (
    ("Invalid HTTP version", "invalid HTTP version"),
    ("Expected HTTP/", "invalid HTTP version"),
    ("Content-Length", "invalid or ambiguous Content-Length"),
    ("Transfer-Encoding", "invalid or ambiguous Transfer-Encoding"),
    ("header", "invalid header"),
    ("chunk", "invalid chunked body"),
)


def _map_error(message: str) -> RequestError:
    if "Transfer-Encoding" in message and "invalid" in message and "Content-Length" not in message:
        if message.startswith("Request has invalid"):
            return RequestError(501, "Not Implemented", "unsupported transfer coding")
    for needle, detail in _ERROR_MESSAGES:
        if needle in message:
            return bad_request(detail)
    return bad_request("malformed request")
