"""One client connection: its socket, its parser, and bounded-time I/O for the request in progress.

Sockets stay non-blocking for their whole life. The worker's selector loop reads them when they
are readable; while an app runs, `read_more` and `send` wait with `poll` when the socket would
block, each wait bounded by `io_timeout` (a slow client that keeps making progress is fine; one
that stalls for `io_timeout` is dropped). Keeping the socket non-blocking means the hot path is
one `send` for a small response, with no `settimeout` mode switches (each one an ioctl).
"""

from __future__ import annotations

import select
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from arbiter.web.http.errors import ClientDisconnected
from arbiter.web.http.parser import Limits, RequestParser

RECV_SIZE = 65536
# TLS writes go out in pieces this large, so that each piece gets its own io_timeout.
TLS_SEND_PIECE = 65536
# How long a client may take to send a complete request head (from accept, or from the first
# byte of the next request on a keep-alive connection), and how long one I/O wait may last
# while an app runs. At least this, or `keepalive` if that is longer: slowloris-style clients
# are cut off, and a sync worker never waits on one client for long.
MIN_HEAD_TIMEOUT = 10.0

_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
_POLLIN = select.POLLIN | select.POLLERR | select.POLLHUP
_POLLOUT = select.POLLOUT | select.POLLERR | select.POLLHUP


@dataclass(frozen=True)
class ListenerInfo:
    """What every request arriving on one listening socket shares."""

    sock: socket.socket
    server_name: str
    server_port: str
    is_unix: bool

    @classmethod
    def of(cls, sock: socket.socket, tls: bool) -> ListenerInfo:
        name = sock.getsockname()
        if sock.family == socket.AF_UNIX:
            path = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
            # As Gunicorn: WSGI has no notion of a unix socket, so the path stands in for a name.
            return cls(sock, path or "localhost", "443" if tls else "80", True)
        return cls(sock, str(name[0]), str(name[1]), False)


def peer_strings(addr: Any) -> tuple[str, str]:
    """REMOTE_ADDR and REMOTE_PORT for an accepted socket's address (unix peers have none)."""
    if isinstance(addr, tuple) and len(addr) >= 2:
        return str(addr[0]), str(addr[1])
    return "", ""


class Connection:
    """A client connection. Owned by one thread at a time: the selector loop, or a pool thread."""

    __slots__ = (
        "sock", "fd", "listener", "remote_addr", "remote_port", "trusted", "parser", "tls",
        "handshaking", "deadline", "waiting", "busy", "io_timeout", "tick", "closed", "proxy",
        "answering", "runner",
    )

    def __init__(
        self,
        sock: socket.socket,
        addr: Any,
        listener: ListenerInfo,
        limits: Limits,
        io_timeout: float,
        trusted: bool,
        tls: bool = False,
    ) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.listener = listener
        self.remote_addr, self.remote_port = peer_strings(addr)
        self.trusted = trusted
        self.parser = RequestParser(limits)
        self.tls = tls
        self.handshaking = tls
        self.deadline = 0.0
        self.waiting = True  # a request head is awaited (not idle between requests)
        self.busy = False  # handed to a pool thread (gthread)
        self.io_timeout = io_timeout
        # Called after each wait for the client while an app runs (the sync worker's heartbeat:
        # a worker waiting on a slow-but-alive client is not hung).
        self.tick: Callable[[], None] | None = None
        self.closed = False
        self.proxy: Any = None  # a PROXY header still to read (arbiter.web.http.proxy), or None
        # Under --request-timeout: the response in progress, and what runs it (its thread's
        # ident, or its greenlet), for the watcher (arbiter.web.http.deadlines).
        self.answering: Any = None
        self.runner: Any = None

    def __repr__(self) -> str:
        return f"<Connection fd={self.fd} peer={self.remote_addr}:{self.remote_port}>"

    # -- TLS ---------------------------------------------------------------------------------

    def handshake(self) -> None:
        """Advance a non-blocking TLS handshake; returns once it is complete.

        Raises:
            ssl.SSLWantReadError, ssl.SSLWantWriteError: call again when the socket is ready.
            OSError: the handshake failed; close the connection.
        """
        self.sock.do_handshake()  # type: ignore[attr-defined]
        self.handshaking = False

    # -- reading -----------------------------------------------------------------------------

    def read_more(self) -> None:
        """Wait for more bytes from the client (bounded by io_timeout) and parse them.

        Raises:
            ClientDisconnected: EOF, a socket error, or no data within io_timeout.
        """
        sock = self.sock
        while True:
            try:
                data = sock.recv(RECV_SIZE)
                break
            except ssl.SSLWantWriteError:
                self._wait(_POLLOUT)
            except _WOULD_BLOCK:
                self._wait(_POLLIN)
            except OSError as exc:
                raise ClientDisconnected(f"error reading from client: {exc}") from None
        if not data:
            raise ClientDisconnected("client closed the connection")
        self.parser.feed(data)

    # -- writing -----------------------------------------------------------------------------

    def send(self, data: bytes | bytearray | memoryview) -> None:
        """Send all of `data`; each wait for the client bounded by io_timeout.

        Raises:
            ClientDisconnected: the client went away or stalled.
        """
        if self.tls:
            self._send_tls(data)
            return
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise ClientDisconnected(f"error writing to client: {exc}") from None
        if sent < len(data):
            self._send_rest(memoryview(data).cast("B")[sent:])

    def _send_rest(self, view: memoryview) -> None:
        sock = self.sock
        while view:
            self._wait(_POLLOUT)
            try:
                view = view[sock.send(view):]
            except BlockingIOError:
                continue
            except OSError as exc:
                raise ClientDisconnected(f"error writing to client: {exc}") from None

    def _send_tls(self, data: bytes | bytearray | memoryview) -> None:
        # An SSL write that would block must be retried with the same bytes, which the
        # blocking-with-timeout mode of SSLSocket does for us.
        sock = self.sock
        view = memoryview(data).cast("B")
        sock.settimeout(self.io_timeout)
        try:
            for start in range(0, len(view), TLS_SEND_PIECE):
                sock.sendall(view[start:start + TLS_SEND_PIECE])
                if self.tick is not None:
                    self.tick()
        except OSError as exc:
            raise ClientDisconnected(f"error writing to client: {exc}") from None
        finally:
            _restore_nonblocking(sock)

    def sendfile(self, file: Any, offset: int, count: int) -> int:
        """Send `count` bytes of `file` from `offset` with sendfile(2); returns bytes sent."""
        sock = self.sock
        # socket.sendfile refuses non-blocking sockets; with a timeout, each wait is bounded.
        sock.settimeout(self.io_timeout)
        try:
            return sock.sendfile(file, offset, count)
        except OSError as exc:
            raise ClientDisconnected(f"error writing to client: {exc}") from None
        finally:
            _restore_nonblocking(sock)

    def _wait(self, events: int) -> None:
        poller = select.poll()
        poller.register(self.fd, events)
        if not poller.poll(self.io_timeout * 1000.0):
            raise ClientDisconnected(f"client stalled for {self.io_timeout:g}s")
        if self.tick is not None:
            self.tick()

    # -- closing -----------------------------------------------------------------------------

    def close(self, linger: bool = False) -> None:
        """Close the socket. `linger`: we just sent an error and may not have read all the
        client sent; half-close and swallow what is already here, so the kernel does not answer
        unread data with a reset that could destroy our response before the client reads it.
        """
        if self.closed:
            return
        self.closed = True
        sock = self.sock
        if linger and not self.tls:
            try:
                sock.shutdown(socket.SHUT_WR)
                for _ in range(16):
                    if not sock.recv(RECV_SIZE):
                        break
            except OSError:
                pass
        try:
            sock.close()
        except OSError:
            pass


def _restore_nonblocking(sock: socket.socket) -> None:
    try:
        sock.settimeout(0.0)
    except OSError:
        pass  # already closed under us
