"""The PROXY protocol (HAProxy's, v1 text and v2 binary) at the start of a connection:
`--proxy-protocol` and `--proxy-allow-from`.

Framing is done here (a v1 header is one CRLF-terminated line of at most 107 bytes; a v2
header is a 16-byte head whose last two bytes give the length of the rest); parsing and
validation of the header itself is the `proxy-protocol` library's (sans-IO, typed, with both
versions and their address families). As the specification requires, a connection from a
proxy that is expected to send the header must start with one: the receiver never guesses.
A peer outside `--proxy-allow-from` is served as a direct client, and a header it sends is
refused (it would forge its address), as Gunicorn does.
"""

from __future__ import annotations

from proxyprotocol import ProxyProtocol, ProxyProtocolChecksumError, ProxyProtocolSyntaxError
from proxyprotocol.detect import ProxyProtocolDetect
from proxyprotocol.v1 import ProxyProtocolV1
from proxyprotocol.v2 import ProxyProtocolV2

from arbiter.web.http.errors import RequestError

V1_PREFIX = b"PROXY "
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX = 107  # the specification's longest v1 line, CRLF included
V2_MAX = 16 + 4096  # the 16-byte head and addresses, with room for the TLVs proxies send


def _parser(mode: str) -> ProxyProtocol:
    if mode == "v1":
        return ProxyProtocolV1()
    if mode == "v2":
        return ProxyProtocolV2()
    return ProxyProtocolDetect(ProxyProtocolV1(), ProxyProtocolV2())


def _match(head: bytes, signature: bytes) -> str:
    """Whether `head` starts with `signature`: "yes", "no", or "maybe" (too short to tell)."""
    if head.startswith(signature):
        return "yes"
    return "maybe" if signature.startswith(head) else "no"


class ProxyHeader:
    """Reads one connection's PROXY header from the first bytes received.

    `feed` returns the bytes after the header (the HTTP request) once it is complete, and
    `None` while more are needed; `peer` is then the client's (address, port), or None when the
    proxy sent no address (v2 LOCAL, v1 UNKNOWN: a health check of the proxy's own).
    """

    def __init__(self, mode: str, allowed: bool) -> None:
        self.mode = mode
        self.allowed = allowed  # the peer is in --proxy-allow-from
        self.buffer = b""
        self.peer: tuple[str, int] | None = None

    def feed(self, data: bytes) -> bytes | None:
        """Raises:
            RequestError: no header where one is required, a header from a peer not allowed to
                send one, or a malformed one (400, or 403 for a forged one).
        """
        self.buffer += data
        head = self.buffer
        v1, v2 = _match(head, V1_PREFIX), _match(head, V2_SIGNATURE)
        if not self.allowed:
            if v1 == "yes" or v2 == "yes":
                raise RequestError(403, "Forbidden", "a PROXY header from a peer not in --proxy-allow-from")
            if v1 == "maybe" or v2 == "maybe":
                return None  # "PRO" may begin a header or a PROPFIND: wait for more
            return self._done(head)
        if v1 == "no" and v2 == "no":
            raise RequestError(400, "Bad Request", "the connection did not start with a PROXY header")
        if v1 == "yes":
            end = head.find(b"\r\n")
            if end < 0 or end + 2 > V1_MAX:
                if end >= 0 or len(head) >= V1_MAX:
                    raise RequestError(400, "Bad Request", "PROXY v1 header longer than 107 bytes")
                return None
            size = end + 2
        elif v2 == "yes" and len(head) >= 16:
            size = 16 + int.from_bytes(head[14:16], "big")
            if size > V2_MAX:
                raise RequestError(400, "Bad Request", "PROXY v2 header too long")
            if len(head) < size:
                return None
        else:
            return None
        self._parse(head[:size])
        return self._done(head[size:])

    def _parse(self, header: bytes) -> None:
        try:
            result = _parser(self.mode).unpack(header)
        except (ProxyProtocolSyntaxError, ProxyProtocolChecksumError, ValueError) as exc:
            raise RequestError(400, "Bad Request", f"invalid PROXY header: {exc or type(exc).__name__}") from None
        except Exception as exc:  # an incomplete header here means a malformed length
            raise RequestError(400, "Bad Request", f"invalid PROXY header: {type(exc).__name__}") from None
        peer = result.peername if result.proxied else None
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.peer = (str(peer[0]), int(peer[1]))

    def _done(self, rest: bytes) -> bytes:
        self.buffer = b""
        return rest
