"""Who may use the control API, and the checks that keep a web page from using it on their behalf.

- Unix socket: the kernel tells us the peer's uid (SO_PEERCRED); only our own uid and root pass,
  and the users the socket was given to on purpose (`control_socket_owner`, Supervisor's `chown`:
  that user, and its group's members when the mode opens it to the group).
- TCP: a credential, always (the server refuses to start without one, loopback included): a
  bearer token (`Authorization: Bearer ...`), or a supervisord.conf's `[inet_http_server]`
  username and password as HTTP Basic auth (what supervisorctl, Cesi and Supervisor's client
  library send; the password may be `{SHA}` and a SHA-1 hex digest, as Supervisor allows), or the
  dashboard's session cookie, derived from the secret so the secret never sits in a browser.
  Every comparison is constant-time. `/healthz` and `/readyz` need none.
- Every request: `Host` must name us (localhost, 127.0.0.1, [::1], the bound address, or the
  socket path), unless it carries the bearer token; this defeats DNS rebinding, where a hostile
  page gets the browser to send requests to 127.0.0.1 under the page's own host name.
- Browser requests (they carry `Origin`, `Sec-Fetch-Site` or a `Cookie`): `Origin`, when sent,
  must be our own, and a POST must carry the page's CSRF token in `X-CSRF-Token`.
  Scripts (ctl, curl, supervisorctl) send none of these headers and need no CSRF token.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import os
import pwd
import socket
import struct
from dataclasses import dataclass
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


def session_value(secret: str) -> str:
    """The dashboard cookie: proves the browser was given the secret, without being it."""
    return hmac.new(secret.encode(), b"arbiter dashboard session", hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Credentials:
    """What a TCP client must show: a bearer `token`, and/or a Basic (`username`, `password`)
    pair, the password either plain or `{SHA}<hex digest>`. Never printed (no repr of secrets)."""

    token: str | None = None
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:
        return f"Credentials(token={'set' if self.token else None}, username={'set' if self.username else None})"

    @property
    def any(self) -> bool:
        return bool(self.token or self.username)

    @property
    def session_secret(self) -> str | None:
        """What the dashboard's session cookie is derived from."""
        if self.token:
            return self.token
        if self.username:
            return f"{self.username}:{self.password or ''}"
        return None

    def bearer_ok(self, value: str) -> bool:
        return bool(self.token) and hmac.compare_digest(value.strip().encode(), (self.token or "").encode())

    def basic_ok(self, value: str) -> bool:
        """Whether a Basic auth value (base64 of "user:password") matches, in constant time."""
        if not self.username:
            return False
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return False
        expected = self.password or ""
        if expected.startswith("{SHA}"):
            given, expected = hashlib.sha1(password.encode()).hexdigest(), expected[5:].lower()
        else:
            given = password
        # Both compared every time, so the answer's timing says nothing about which was wrong.
        user_ok = hmac.compare_digest(user.encode(), self.username.encode())
        password_ok = hmac.compare_digest(given.encode(), expected.encode())
        return user_ok & password_ok


def _cookie(request: Request, name: str) -> str | None:
    for part in request.header("cookie").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


class Guard:
    """The checks, configured once per server."""

    def __init__(self, *, uid: int, credentials: Credentials, unix_path: str | None) -> None:
        self.uid = uid
        self.credentials = credentials
        self.unix_path = unix_path
        self.tcp_ports: set[int] = set()
        self.tcp_hosts: set[str] = set()
        self.metrics_token: str | None = None  # opens GET /metrics only (metrics_token_file)
        # Other users the socket was opened to on purpose (control_socket_owner and a group
        # mode, Supervisor's chown/chmod): its owner, and members of its group when the mode
        # gives the group access. A world-writable mode alone admits nobody else.
        self.unix_owner: tuple[int, int] | None = None
        self.unix_group_access = False

    @property
    def token(self) -> str | None:
        return self.credentials.token

    def authorized(self, request: Request) -> bool:
        """Whether the request carries a valid bearer token or Basic credential."""
        scheme, _, value = request.header("authorization").partition(" ")
        if scheme.lower() == "bearer":
            return self.credentials.bearer_ok(value)
        if scheme.lower() == "basic":
            return self.credentials.basic_ok(value)
        return False

    def has_session(self, request: Request) -> bool:
        cookie = _cookie(request, SESSION_COOKIE)
        secret = self.credentials.session_secret
        if not secret or not cookie:
            return False
        return hmac.compare_digest(cookie.encode(), session_value(secret).encode())

    def check(self, request: Request, csrf_token: str) -> None:
        """Raise ControlError (401, 403) unless `request` may proceed; note what was learned
        in `request.context` ("bearer": authenticated by a credential in the request)."""
        authorized = self.authorized(request) or self._metrics_only(request)
        request.context["bearer"] = authorized
        peer = request.peer
        if peer.kind == "unix" and peer.uid not in (self.uid, 0) and not self._admitted(peer.uid):
            raise ControlError("FORBIDDEN", f"uid {peer.uid} may not use this control socket")
        if not authorized:
            self._check_host(request)
        # TCP always needs a credential (the server does not start without one), so a request
        # without one is refused even if the server was somehow built without.
        if peer.kind == "tcp" and not authorized and request.path not in PUBLIC_PATHS \
                and not self.has_session(request) and not (request.path == "/login" and self.credentials.token):
            wanted = " or ".join(w for w, on in (("'Authorization: Bearer <token>'", self.credentials.token),
                                                 ("HTTP Basic auth", self.credentials.username)) if on)
            raise ControlError("UNAUTHORIZED", f"this address needs {wanted or 'a credential'}")
        if self.is_browser(request):
            self._check_origin(request)
            if request.method not in ("GET", "HEAD") and not hmac.compare_digest(
                    request.header("x-csrf-token").encode(), csrf_token.encode()):
                raise ControlError("FORBIDDEN", "missing or wrong X-CSRF-Token (reload the dashboard)")

    def _admitted(self, uid: int | None) -> bool:
        if self.unix_owner is None or uid is None:
            return False
        owner_uid, group = self.unix_owner
        if uid == owner_uid:
            return True
        if not self.unix_group_access:
            return False
        try:
            entry = pwd.getpwuid(uid)
        except KeyError:
            return False
        return group in os.getgrouplist(entry.pw_name, entry.pw_gid)

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
