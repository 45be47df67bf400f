"""What a request must be beyond what llhttp checks, and the status each refusal is answered with.

The parser (`arbiter.web.http.parser`) calls these from its llhttp callbacks or when llhttp
reports an error; each raises or returns a `RequestError`. Kept apart from the parser so that the
rules read as a list, and the parser as the bookkeeping of a stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from arbiter.web.http.errors import RequestError, bad_request

if TYPE_CHECKING:
    from arbiter.web.http.parser import Request

# How many bytes of a message's start are kept to read its method when llhttp refuses it.
METHOD_PEEK = 32

# RFC 9110 section 6.5.1: a trailer cannot carry what must be known before the content (framing,
# routing, request modifiers, authentication, the content's format), nor hop-by-hop fields, nor
# the proxy headers a trusted peer may set. We never pass trailers on (WSGI has none), so such a
# field can only be a broken client or a probe for a server that merges trailers into the head.
FORBIDDEN_IN_TRAILERS = frozenset({
    "CONTENT-LENGTH", "TRANSFER-ENCODING", "TRAILER", "TE", "CONNECTION", "KEEP-ALIVE", "UPGRADE",
    "PROXY-CONNECTION", "HOST", "MAX-FORWARDS", "EXPECT", "RANGE", "IF-MATCH", "IF-NONE-MATCH",
    "IF-MODIFIED-SINCE", "IF-UNMODIFIED-SINCE", "IF-RANGE", "CACHE-CONTROL", "PRAGMA",
    "AUTHORIZATION", "PROXY-AUTHORIZATION", "COOKIE", "CONTENT-TYPE", "CONTENT-ENCODING",
    "CONTENT-RANGE", "FORWARDED", "X-FORWARDED-FOR", "X-FORWARDED-HOST", "X-FORWARDED-PROTO",
    "X-FORWARDED-PROTOCOL", "X-FORWARDED-SSL", "SCRIPT_NAME",
})

# RFC 9110 section 5.6.2: the characters of a token, which a method is.
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def check_trailer(name: str) -> None:
    """Refuse a trailer field (`name` in upper case) that may only appear in a head.

    Raises:
        RequestError: 400.
    """
    if name in FORBIDDEN_IN_TRAILERS:
        raise bad_request(f"{name.title()} is not allowed in a chunked trailer")


def method_refusal(start: bytes) -> RequestError:
    """The answer to a method llhttp refused, given the first bytes of the message (or b"").

    A token llhttp does not know (`FOO`, `-BLARGH`, `get`) is a method this server does not
    implement: 501, as RFC 9110 section 9.1 says. Anything else is not a request line: 400.
    """
    method = start.lstrip(b"\r\n").partition(b" ")[0]
    if method and all(byte in _TCHAR for byte in method):
        return RequestError(501, "Not Implemented", "unknown method")
    return bad_request("invalid method")


def check_transfer_encoding(cur: Request) -> None:
    """Accept a sole `chunked` in HTTP/1.1 and mark the request chunked.

    Raises:
        RequestError: 400 for Transfer-Encoding in HTTP/1.0, 501 for any other coding.
    """
    codings = [c.strip().lower() for value in cur.transfer_encodings for c in value.split(",")]
    if cur.version < (1, 1):
        raise bad_request("Transfer-Encoding is not allowed in HTTP/1.0")
    if codings != ["chunked"]:
        # We cannot decode gzip & co., and passing encoded bytes on as the body would hand the
        # app something other than what Content-Type says.
        raise RequestError(501, "Not Implemented", "unsupported transfer coding")
    cur.chunked = True


def split_target(cur: Request) -> None:
    """Set `uri`, `path` and `query` from the raw target (RFC 9112 section 3.2: its four forms).

    Raises:
        RequestError: 400 for a target in no form the method allows (`GET *`, `OPTIONS *x`,
            `CONNECT /x`, an absolute URI whose authority does not parse).
    """
    uri = cur.url.decode("latin-1")  # llhttp lets no byte over 0x7f into the target
    cur.uri = uri
    if cur.method == "CONNECT":  # authority form (host:port), and CONNECT has no other
        host, _, port = uri.rpartition(":")
        if not host or not port.isdigit() or "/" in uri:
            raise bad_request("CONNECT needs a host:port target")
        cur.path, cur.query = uri, ""
    elif uri[:1] == "/":  # origin form
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
    elif uri == "*" and cur.method == "OPTIONS":  # asterisk form: OPTIONS only
        cur.path, cur.query = uri, ""
    else:
        raise bad_request("invalid request target")


def unexpected(exc: BaseException | None) -> RequestError:
    """A 400 for an exception no check meant to raise; the cause is kept for the log."""
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


def map_error(message: str) -> RequestError:
    """The answer to one of llhttp's other parse errors, from its message."""
    if "Transfer-Encoding" in message and "invalid" in message and "Content-Length" not in message:
        if message.startswith("Request has invalid"):
            return RequestError(501, "Not Implemented", "unsupported transfer coding")
    for needle, detail in _ERROR_MESSAGES:
        if needle in message:
            return bad_request(detail)
    return bad_request("malformed request")
