"""The control server: listening sockets, connections and log follows, all inside the master's
selector loop (no thread; see docs/design.md, "Programs and the control plane").

The master registers nothing itself: `start()` registers the listening sockets with callbacks
`key.data(key, mask)`, the master calls `tick()` once per turn and sleeps no longer than
`next_deadline()`. Whatever a client does, the worst it costs is one bounded read or write.
"""

from __future__ import annotations

import logging
import os
import secrets
import selectors
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from arbiter.control.backend import Backend, ControlError
from arbiter.control.connection import HttpConnection, Limits, Peer, Request
from arbiter.control.dashboard import Dashboard
from arbiter.control.logs import LogFollower
from arbiter.control.routes import Api
from arbiter.control.security import Credentials, Guard, peer_credentials
from arbiter.errors import ArbiterError, BindError
from arbiter.web.sockets import remove_stale_unix_socket

if TYPE_CHECKING:
    from arbiter.control.xmlrpc import XmlRpc

FOLLOW_POLL = 0.25  # how often followed log files are checked for new bytes
UNIX_PATH_MAX = 107

BASE_HEADERS = [
    ("X-Frame-Options", "DENY"),
    ("Content-Security-Policy", "frame-ancestors 'none'"),
    ("X-Content-Type-Options", "nosniff"),
    ("Cache-Control", "no-store"),
    ("Referrer-Policy", "no-referrer"),
]


class ControlStartError(ArbiterError):
    """The control server cannot listen where it was asked to."""


def missing_credential(address: str) -> str:
    """Why TCP control without a credential is refused, and how to make one."""
    return (f"refusing to serve the control API on {address} without a credential: anyone who can "
            "connect (every user of this machine, even on loopback) could read logs and stop programs. "
            "Make a token and pass it: "
            "`(umask 077; python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > token)`, "
            "then `--control-token-file token` (or control_token_file in the config file, or "
            "$ARBITER_TOKEN); clients send it as 'Authorization: Bearer <token>'")


class ControlServer:
    """HTTP/1.1 + JSON (and Supervisor's XML-RPC) for `arbiter ctl`, the dashboard and probes."""

    def __init__(self, backend: Backend, selector: selectors.BaseSelector, *, unix_path: str | None,
                 unix_mode: int = 0o600, unix_owner: str | None = None, tcp: tuple[str, int] | None = None,
                 credentials: Credentials | None = None,
                 log: logging.Logger, clock: Callable[[], float] = time.monotonic) -> None:
        self.backend, self.selector, self.log, self.clock = backend, selector, log, clock
        self.unix_path = os.path.abspath(unix_path) if unix_path else None
        self.unix_mode, self.tcp = unix_mode, tcp
        self.unix_owner = _owner(unix_owner) if unix_owner else None
        self.credentials = credentials or Credentials()
        self.limits = Limits()
        self.csrf_token = secrets.token_urlsafe(32)
        self.guard = Guard(uid=os.geteuid(), credentials=self.credentials, unix_path=self.unix_path)
        self.guard.unix_owner = self.unix_owner
        self.guard.unix_group_access = bool(unix_mode & 0o060)
        self._listeners: list[tuple[socket.socket, str]] = []
        self._unix_inode: tuple[int, int] | None = None
        self._connections: set[HttpConnection] = set()
        self._follows: dict[HttpConnection, LogFollower] = {}
        self._next_poll = 0.0
        self._addresses: list[str] = []
        self.dashboard = Dashboard(self.csrf_token, self.guard)
        self._xmlrpc: XmlRpc | None = None
        self.api = Api(backend, log, self._add_follow, {
            "/": ("GET", self.dashboard.page), "/login": ("GET", self.dashboard.login),
            "/RPC2": ("POST", self._rpc2),
            "/favicon.ico": ("GET", lambda conn, request, params: conn.respond(204, b"", ""))})

    def _rpc2(self, conn: HttpConnection, request: Request, params: dict[str, str]) -> None:
        if self._xmlrpc is None:
            # Made on the first XML-RPC call: xmlrpc.client brings http.client, email and ssl,
            # ~20 ms of a master's start and ~1.5 MB it would otherwise hold for nothing.
            from arbiter.control.xmlrpc import XmlRpc

            self._xmlrpc = XmlRpc(self.backend, self.log)
        self._xmlrpc.handle(conn, request, params)

    # -- starting -------------------------------------------------------------------------------

    @property
    def addresses(self) -> list[str]:
        return list(self._addresses)

    def start(self) -> None:
        """Bind, listen and register every configured address.

        Raises:
            ArbiterError: naming the address and the reason (in use, path too long, a TCP
                address without a credential...).
        """
        if not self.unix_path and not self.tcp:
            raise ControlStartError("the control server needs a unix socket path or a TCP address")
        if self.tcp and not self.credentials.any:
            raise ControlStartError(missing_credential(f"{self.tcp[0]}:{self.tcp[1]}"))
        try:
            if self.unix_path:
                self._listen_unix(self.unix_path)
            if self.tcp:
                self._listen_tcp(*self.tcp)
        except BaseException:
            self.close()
            raise
        for sock, kind in self._listeners:
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ, self._accept_callback(sock, kind))
        for address in self._addresses:
            self.log.info("Control API at: %s", address)  # the real port, when 0 was asked for

    def _listen_unix(self, path: str) -> None:
        if len(os.fsencode(path)) > UNIX_PATH_MAX:
            raise ControlStartError(f"control socket path {path} is longer than {UNIX_PATH_MAX} bytes; "
                                    "choose a shorter one")
        directory = os.path.dirname(path)
        if not os.path.isdir(directory):
            # Missing directories are made just open enough for whom the socket admits.
            dir_mode = 0o700 | (0o050 if self.unix_mode & 0o060 else 0) | (0o005 if self.unix_mode & 0o006 else 0)
            try:
                os.makedirs(directory, mode=dir_mode, exist_ok=True)
            except OSError as exc:
                raise ControlStartError(
                    f"cannot create the control socket directory {directory}: {exc.strerror}") from None
        try:
            remove_stale_unix_socket(path)
        except BindError as exc:
            raise ControlStartError(f"control socket: {exc}") from None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # umask 0o177 around bind: the socket is born 0600 and never open to others, even
        # briefly; chmod then widens it to unix_mode if asked. The master has one thread.
        old_umask = os.umask(0o177)
        try:
            sock.bind(path)
        except OSError as exc:
            sock.close()
            raise ControlStartError(f"cannot bind the control socket {path}: {exc.strerror}") from None
        finally:
            os.umask(old_umask)
        os.chmod(path, self.unix_mode)
        if self.unix_owner is not None:
            try:
                os.chown(path, *self.unix_owner)
            except OSError as exc:
                sock.close()
                raise ControlStartError(f"cannot chown the control socket {path}: {exc.strerror}") from None
        st = os.stat(path)
        self._unix_inode = (st.st_dev, st.st_ino)
        sock.listen(64)
        self._listeners.append((sock, "unix"))
        self._addresses.append(f"unix:{path}")

    def _listen_tcp(self, host: str, port: int) -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ControlStartError(f"control address {host}:{port}: {exc.strerror}") from None
        family, _, _, _, address = sorted(infos, key=lambda i: i[0] != socket.AF_INET)[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            sock.close()
            raise ControlStartError(f"cannot listen on control address {host}:{port}: {exc.strerror}") from None
        sock.listen(64)
        bound_host, bound_port = sock.getsockname()[:2]
        self.guard.tcp_ports.add(bound_port)
        if host not in ("0.0.0.0", "::", ""):
            self.guard.tcp_hosts.add(host.lower() if ":" not in host else f"[{host.lower()}]")
        self._listeners.append((sock, "tcp"))
        shown = f"[{bound_host}]" if family == socket.AF_INET6 else bound_host
        self._addresses.append(f"http://{shown}:{bound_port}")

    def child_environment(self) -> dict[str, str]:
        """What every program is told about this API, as Supervisor tells it: SUPERVISOR_SERVER_URL
        (the unix socket first: no credential crosses it), and for TCP the Basic credential
        (SUPERVISOR_USERNAME/PASSWORD, which Supervisor's client library sends)."""
        env: dict[str, str] = {}
        unix = [a for a in self._addresses if a.startswith("unix:")]
        tcp = [a for a in self._addresses if a.startswith("http://")]
        if unix:
            env["SUPERVISOR_SERVER_URL"] = "unix://" + unix[0][len("unix:"):]
        elif tcp:
            env["SUPERVISOR_SERVER_URL"] = tcp[0]
            password = self.credentials.password or ""
            if self.credentials.username and not password.startswith("{SHA}"):
                env["SUPERVISOR_USERNAME"], env["SUPERVISOR_PASSWORD"] = self.credentials.username, password
        return env

    # -- connections ----------------------------------------------------------------------------

    def _accept_callback(self, listener: socket.socket, kind: str) -> Callable[[selectors.SelectorKey, int], None]:
        def accept(key: selectors.SelectorKey, mask: int) -> None:
            for _ in range(16):  # a bounded batch per turn, so a flood cannot hold the loop
                try:
                    sock, address = listener.accept()
                except (BlockingIOError, InterruptedError):
                    return
                except OSError as exc:
                    self.log.warning("control: accept failed: %s", exc)
                    return
                try:
                    self._adopt(sock, kind, address)
                except Exception:
                    self.log.exception("control: cannot set up a connection")
                    sock.close()
        return accept

    def _adopt(self, sock: socket.socket, kind: str, address: object) -> None:
        if len(self._connections) >= self.limits.max_connections:
            self.log.warning("control: %d connections open; refusing another", len(self._connections))
            sock.close()
            return
        if kind == "unix":
            pid, uid, _ = peer_credentials(sock)
            peer = Peer("unix", self.unix_path or "", uid=uid, pid=pid)
        else:
            host, port = address[:2]  # type: ignore[index]
            peer = Peer("tcp", f"{host}:{port}")
        conn = HttpConnection(sock, peer, self.selector, self.limits, self.clock, self.log,
                              self._on_request, BASE_HEADERS)
        self._connections.add(conn)
        conn.on_close.append(lambda: self._forget(conn))

    def _forget(self, conn: HttpConnection) -> None:
        self._connections.discard(conn)
        follower = self._follows.pop(conn, None)
        if follower:
            follower.close()

    def _on_request(self, conn: HttpConnection, request: Request) -> None:
        try:
            self.guard.check(request, self.csrf_token)
        except ControlError as exc:
            # Logged without headers or query: they may hold a token.
            self.log.warning("control: refused %s %s from %s: %s", request.method, request.path,
                             request.peer.address if request.peer.kind == "tcp" else f"uid {request.peer.uid}",
                             exc.message)
            foreign = request.peer.kind == "unix" and request.peer.uid not in (self.guard.uid, 0)
            conn.respond_error(exc, close=foreign,
                               headers=self._challenge() if exc.http_status == 401 else None)
            return
        self.api.handle(conn, request)

    def _challenge(self) -> list[tuple[str, str]]:
        # Basic first when configured: a browser then asks for the name and password itself.
        out = [("WWW-Authenticate", 'Basic realm="arbiter", charset="UTF-8"')] if self.credentials.username else []
        return out + ([("WWW-Authenticate", 'Bearer realm="arbiter"')] if self.credentials.token else [])

    def _add_follow(self, conn: HttpConnection, follower: LogFollower) -> None:
        self._follows[conn] = follower
        self._pump(conn, follower)

    def _pump(self, conn: HttpConnection, follower: LogFollower) -> None:
        # Back-pressure: a client that reads slowly only delays its own stream.
        for _ in range(4):
            if conn.closed or conn.pending_output >= self.limits.stream_buffer:
                return
            try:
                data = follower.poll()
            except OSError as exc:
                self.log.warning("control: following %s failed: %s", follower.path, exc)
                conn.close()
                return
            if not data:
                return
            conn.write_stream(data)

    # -- the master's turn ----------------------------------------------------------------------

    def tick(self) -> None:
        """Enforce connection timeouts and send what followed logs gained since last turn."""
        now = self.clock()
        for conn in list(self._connections):
            try:
                conn.tick(now)
            except Exception:
                self.log.exception("control: error in a connection timer")
                conn.close()
        if self._follows and now >= self._next_poll:
            self._next_poll = now + FOLLOW_POLL
            for conn, follower in list(self._follows.items()):
                try:
                    self._pump(conn, follower)
                except Exception:
                    self.log.exception("control: error following %s", follower.path)
                    conn.close()

    def next_deadline(self) -> float | None:
        """The earliest time (on `clock`) `tick` has work: a timeout, or a followed log's poll."""
        times = [d for d in (c.deadline() for c in self._connections) if d is not None]
        if self._follows:
            times.append(self._next_poll)
        return min(times) if times else None

    # -- the end --------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop listening, answer what can be answered at once, close every connection and
        remove the unix socket (if it is still ours)."""
        for conn in list(self._connections):
            conn.flush_and_close()
        for sock, _ in self._listeners:
            try:
                self.selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()
        self._listeners.clear()
        if self.unix_path and self._unix_inode:
            try:
                st = os.stat(self.unix_path)
                if (st.st_dev, st.st_ino) == self._unix_inode:
                    os.unlink(self.unix_path)
            except OSError:
                pass
            self._unix_inode = None

    def close_in_child(self) -> None:
        """In a forked worker: close our file descriptors only. Unregistering would edit the
        epoll set the child shares with the master, and the socket file is the master's."""
        for conn in list(self._connections):
            conn.close_in_child()
        for follower in self._follows.values():
            follower.close()
        for sock, _ in self._listeners:
            sock.close()
        self._connections.clear()
        self._follows.clear()
        self._listeners.clear()
        self._unix_inode = None


def _owner(spec: str) -> tuple[int, int]:
    """(uid, gid) of `USER` or `USER:GROUP` (names or numbers; the user's group by default).

    Raises:
        ControlStartError: no such user or group.
    """
    import grp
    import pwd

    user, _, group = spec.partition(":")
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        gid = entry.pw_gid
        if group:
            gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise ControlStartError(f"control_socket_owner {spec!r}: expected USER or USER:GROUP that "
                                "exist on this machine") from None
    return entry.pw_uid, gid
