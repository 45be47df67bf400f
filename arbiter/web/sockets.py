"""Listening sockets: parsing `--bind` addresses, binding them once in the master, adopting
inherited ones (`fd://N`, systemd's LISTEN_FDS), and naming them for the log.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from arbiter.errors import BindError, ConfigError

SD_LISTEN_FDS_START = 3


@dataclass(frozen=True)
class Address:
    """A parsed `--bind` value."""

    family: socket.AddressFamily
    host: str = ""
    port: int = 0
    path: str = ""  # unix sockets
    fd: int = -1  # fd://N

    @property
    def text(self) -> str:
        if self.fd >= 0:
            return f"fd://{self.fd}"
        if self.family == socket.AF_UNIX:
            return f"unix:{self.path}"
        host = f"[{self.host}]" if self.family == socket.AF_INET6 else self.host
        return f"{host}:{self.port}"


def parse_address(text: str) -> Address:
    """`host:port`, `[v6]:port`, `:port`, `unix:/path`, `fd://N`.

    Raises:
        ConfigError: the address is malformed; the message says which form was expected.
    """
    text = text.strip()
    if text.startswith("unix:"):
        path = text[len("unix:"):].removeprefix("//")
        if not path:
            raise ConfigError(f"bind {text!r}: expected unix:PATH")
        return Address(socket.AF_UNIX, path=path)
    if text.startswith("fd://"):
        try:
            return Address(socket.AF_INET, fd=int(text[len("fd://"):]))
        except ValueError:
            raise ConfigError(f"bind {text!r}: expected fd://N with N a file descriptor number") from None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ConfigError(f"bind {text!r}: expected [IPV6]:PORT")
        return Address(socket.AF_INET6, host=host, port=_port(text, rest[1:] or "8000"))
    if text.count(":") > 1:
        raise ConfigError(f"bind {text!r}: write IPv6 addresses in brackets, as [::1]:8000")
    host, _, port = text.rpartition(":") if ":" in text else (text, "", "8000")
    return Address(socket.AF_INET, host=host or "0.0.0.0", port=_port(text, port))


def _port(text: str, port: str) -> int:
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 <= number <= 65535:
        raise ConfigError(f"bind {text!r}: the port must be a number from 0 to 65535")
    return number


class Listener:
    """A bound, listening socket and the address it was asked for."""

    def __init__(self, address: Address, sock: socket.socket) -> None:
        self.address = address
        self.sock = sock
        # The file we created, removed when we close for good; never one we were handed.
        self.path = sock.getsockname() if sock.family == socket.AF_UNIX and address.fd < 0 else ""

    def url(self, scheme: str = "http") -> str:
        """The real address, with the kernel's port when port 0 was asked for."""
        if self.sock.family == socket.AF_UNIX:
            return f"unix:{self.sock.getsockname()}"
        host, port = self.sock.getsockname()[:2]
        if self.sock.family == socket.AF_INET6:
            host = f"[{host}]"
        return f"{scheme}://{host}:{port}"

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self, unlink: bool = True) -> None:
        """Close (idempotent); `unlink` also removes the unix socket file we created."""
        self.sock.close()
        if unlink and self.path:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            self.path = ""


def _bind(address: Address, backlog: int, reuse_port: bool = False) -> socket.socket:
    if address.family == socket.AF_UNIX:
        remove_stale_unix_socket(address.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: object = address.path
    else:
        try:
            infos = socket.getaddrinfo(address.host, address.port, address.family, socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise BindError(f"cannot bind {address.text}: {exc.strerror}") from None
        family, _, _, _, target = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            # Gunicorn's --reuse-port: several servers (a second master, a blue/green pair)
            # listen on one port and the kernel spreads connections between them.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind(target)  # type: ignore[arg-type]
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        reason = "address already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
        raise BindError(f"cannot bind {address.text}: {reason}") from None
    return sock


def remove_stale_unix_socket(path: str) -> None:
    """A socket file nobody answers on is left by a crashed server and blocks bind: remove it.
    Refuse to touch a live socket (another server) or anything that is not a socket.

    Raises:
        BindError: the path is in use, or is not a socket.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise BindError(f"cannot bind unix:{path}: a file that is not a socket is in the way")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise BindError(f"cannot bind unix:{path}: cannot check the socket there: {exc.strerror}") from None
        os.unlink(path)  # nobody listens: stale
        return
    finally:
        probe.close()
    raise BindError(f"cannot bind unix:{path}: address already in use by a running server")


def _adopt(fd: int, address: Address) -> socket.socket:
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise BindError(f"cannot use {address.text}: {exc.strerror}") from None
    if sock.type != socket.SOCK_STREAM:
        raise BindError(f"cannot use {address.text}: not a stream socket")
    return sock


def systemd_fds(environ: Mapping[str, str]) -> list[int]:
    """File descriptors passed by systemd socket activation, if they are meant for us."""
    if environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    try:
        count = int(environ.get("LISTEN_FDS", "0"))
    except ValueError:
        return []
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count))


def create_listeners(
    binds: Iterable[str], backlog: int, inherited: Mapping[str, int] | None = None, reuse_port: bool = False
) -> list[Listener]:
    """Bind every address once, before any worker is forked.

    Args:
        binds: `--bind` values.
        backlog: listen() backlog.
        inherited: sockets the master already holds, by address text (after a re-exec); they
            are adopted instead of bound again.
        reuse_port: set SO_REUSEPORT on the TCP sockets bound here.

    Raises:
        ConfigError: an address is malformed.
        BindError: an address cannot be bound; sockets bound so far are closed again.
    """
    inherited = dict(inherited or {})
    listeners: list[Listener] = []
    try:
        for text in binds:
            address = parse_address(text)
            if address.text in inherited:
                sock = _adopt(inherited.pop(address.text), address)
            elif address.fd >= 0:
                sock = _adopt(address.fd, address)
            else:
                sock = _bind(address, backlog, reuse_port)
            listeners.append(Listener(address, sock))
    except Exception:
        for listener in listeners:
            listener.close()
        raise
    return listeners


def rebind(current: Sequence[Listener], binds: Iterable[str], backlog: int,
           reuse_port: bool = False) -> list[Listener]:
    """The listeners for a changed `bind`: unchanged addresses keep their socket (it is never
    closed, so nothing queued on it is lost), new ones are bound, dropped ones closed.

    Raises:
        ConfigError, BindError: a new address is malformed or cannot be bound; nothing changed.
    """
    by_text = {listener.address.text: listener for listener in current}
    kept: list[Listener] = []
    fresh: list[Listener] = []
    try:
        for text in binds:
            address = parse_address(text)
            if address.text in by_text:
                kept.append(by_text.pop(address.text))
            else:
                fresh.extend(create_listeners([text], backlog, reuse_port=reuse_port))
    except Exception:
        for listener in fresh:
            listener.close()
        raise
    for listener in by_text.values():
        listener.close()
    order = {listener.address.text: listener for listener in kept + fresh}
    return [order[parse_address(text).text] for text in binds]


def adopt_systemd(fds: Iterable[int]) -> list[Listener]:
    listeners = []
    for fd in fds:
        address = Address(socket.AF_INET, fd=fd)
        listeners.append(Listener(address, _adopt(fd, address)))
    return listeners
