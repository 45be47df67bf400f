"""Who may use the control API, and the checks that keep a web page from using it on their behalf.

- Unix socket: the kernel tells us the peer's uid (SO_PEERCRED); only our own uid and root pass.
- TCP: a bearer token (`Authorization: Bearer ...`), or the dashboard's session cookie, which is
  derived from the token so that the token itself never sits in a browser. Without a configured
  token TCP is only allowed on loopback (checked at start).
- Every request: `Host` must name us (localhost, 127.0.0.1, [::1], the bound address, or the
  socket path), unless it carries the bearer token; this defeats DNS rebinding, where a hostile
  page gets the browser to send requests to 127.0.0.1 under the page's own host name.
- Browser requests (they carry `Origin`, `Sec-Fetch-Site` or a `Cookie`): `Origin`, when sent,
  must be our own, and a POST must carry the page's CSRF token in `X-CSRF-Token`.
  Scripts (ctl, curl, supervisorctl) send none of these headers and need no CSRF token.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import struct
from urllib.parse import quote, urlsplit

from arbiter.control.backend import ControlError
from arbiter.control.connection import Peer, Request

SESSION_COOKIE = "arbiter_session"
# Readable without credentials: orchestrators probe these and they reveal nothing.
PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a unix socket."""
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", data)
    return pid, uid, gid


def is_loopback(host: str) -> bool:
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def session_value(token: str) -> str:
    """The dashboard cookie: proves the browser was given the token, without being it."""
    return hmac.new(token.encode(), b"arbiter dashboard session", hashlib.sha256).hexdigest()


def _cookie(request: Request, name: str) -> str | None:
    for part in request.header("cookie").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


class Guard:
    """The checks, configured once per server."""

    def __init__(self, *, uid: int, token: str | None, unix_path: str | None) -> None:
        self.uid = uid
        self.token = token
        self.unix_path = unix_path
        self.tcp_ports: set[int] = set()
        self.tcp_hosts: set[str] = set()
        self.metrics_token: str | None = None  # opens GET /metrics only (metrics_token_file)

    def has_token(self, request: Request) -> bool:
        if not self.token:
            return False
        scheme, _, value = request.header("authorization").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token.encode())

    def has_session(self, request: Request) -> bool:
        cookie = _cookie(request, SESSION_COOKIE)
        if not self.token or not cookie:
            return False
        return hmac.compare_digest(cookie.encode(), session_value(self.token).encode())

    def check(self, request: Request, csrf_token: str) -> None:
        """Raise ControlError (401, 403) unless `request` may proceed; note what was learned
        in `request.context` ("bearer": authenticated by token)."""
        bearer = self.has_token(request) or self._metrics_only(request)
        request.context["bearer"] = bearer
        peer = request.peer
        if peer.kind == "unix" and peer.uid not in (self.uid, 0):
            raise ControlError("FORBIDDEN", f"uid {peer.uid} may not use this control socket")
        if not bearer:
            self._check_host(request)
        if peer.kind == "tcp" and self.token and not bearer and request.path not in PUBLIC_PATHS \
                and not self.has_session(request) and request.path != "/login":
            raise ControlError("UNAUTHORIZED", "this address needs 'Authorization: Bearer <token>'")
        if self.is_browser(request):
            self._check_origin(request)
            if request.method not in ("GET", "HEAD") and not hmac.compare_digest(
                    request.header("x-csrf-token").encode(), csrf_token.encode()):
                raise ControlError("FORBIDDEN", "missing or wrong X-CSRF-Token (reload the dashboard)")

    def _metrics_only(self, request: Request) -> bool:
        if not self.metrics_token or request.path != "/metrics" or request.method not in ("GET", "HEAD"):
            return False
        scheme, _, value = request.header("authorization").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.metrics_token.encode())

    @staticmethod
    def is_browser(request: Request) -> bool:
        return any(request.header(h) for h in ("origin", "sec-fetch-site", "cookie"))

    def _host_ok(self, hostport: str, peer: Peer) -> bool:
        if peer.kind == "unix":
            if hostport == "" or (self.unix_path and hostport in (self.unix_path, quote(self.unix_path, safe=""))):
                return True
        host, port = hostport, None
        if hostport.startswith("["):
            host, _, rest = hostport.partition("]")
            host += "]"
            port = rest[1:] if rest.startswith(":") else None
        elif hostport.count(":") == 1:
            host, port = hostport.split(":")
        host = host.lower()
        if host not in LOOPBACK_NAMES and host not in self.tcp_hosts:
            return False
        if peer.kind == "unix":
            return port is None or port.isdigit()
        wanted = {str(p) for p in self.tcp_ports}
        return (port in wanted) if port is not None else ("80" in wanted)

    def _check_host(self, request: Request) -> None:
        if not self._host_ok(request.header("host"), request.peer):
            raise ControlError("FORBIDDEN", f"Host {request.header('host')!r} is not this server's address")

    def _check_origin(self, request: Request) -> None:
        origin = request.header("origin")
        if not origin:
            return
        parts = urlsplit(origin)
        if origin == "null" or parts.scheme not in ("http", "https") \
                or parts.netloc.lower() != request.header("host").lower():
            raise ControlError("FORBIDDEN", f"cross-origin request from {origin!r} refused")
