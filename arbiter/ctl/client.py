"""The HTTP client `arbiter ctl` uses: JSON over a unix socket (or TCP with a bearer token).

Also finds the socket (`resolve_socket`): `-s PATH`, else where the master started with the
`-c` config file made it (the config read by the master's own loader, the path computed by the
master's own rule), else `$ARBITER_SOCKET`, else the master's rule without a file.
"""

from __future__ import annotations

import base64
import errno
import http.client
import json
import os
import socket
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from arbiter.errors import ArbiterError, ConfigError

DEFAULT_SOCKET = "arbiter.sock"
# Exit statuses, as supervisorctl's (LSB init script codes; `status` uses 3 and 4).
EXIT_GENERIC, EXIT_INVALID_ARGS, EXIT_STATUS_NOT_RUNNING, EXIT_STATUS_UNKNOWN = 1, 2, 3, 4
EXIT_REFUSED, EXIT_NOT_RUNNING = 4, 7
POINTERS = "-s PATH, -c CONFIG (the file the master was started with), or $ARBITER_SOCKET"


class UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over a unix socket; the Host header says "localhost"."""

    def __init__(self, path: str, timeout: float | None = None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Unreachable(ArbiterError):
    """No server answers at the address: the message says where, and why."""

    def __init__(self, message: str, errno_: int | None) -> None:
        super().__init__(f"{message}\n(is the master running? point arbiter ctl at it with {POINTERS})",
                         EXIT_NOT_RUNNING if errno_ == errno.ENOENT else EXIT_REFUSED)
        self.reason = message
        self.errno = errno_


class ApiError(ArbiterError):
    """The server answered with an error: `code` is its stable error code."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(f"{code}: {message}", EXIT_GENERIC)
        self.code, self.message, self.status = code, message, status


class ControlClient:
    """One server address; each call opens a connection (ctl makes few, and they are local)."""

    def __init__(self, *, socket_path: str | None = None, url: str | None = None, token: str | None = None,
                 timeout: float | None = 30.0) -> None:
        self.socket_path, self.url, self.token, self.timeout = socket_path, url, token, timeout
        # Never show a password that came inside the URL.
        self.where = _without_password(url) if url else f"unix://{socket_path}"

    def _connection(self, timeout: float | None) -> http.client.HTTPConnection:
        if self.url:
            parts = urlsplit(self.url)
            return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
        return UnixHTTPConnection(self.socket_path or DEFAULT_SOCKET, timeout=timeout)

    def open(self, method: str, path: str, body: Any = None,
             timeout: float | None = -1.0) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send a request and return the connection and its response, unread.

        Raises:
            Unreachable: nothing listens there (or it vanished mid-request).
        """
        conn = self._connection(self.timeout if timeout == -1.0 else timeout)
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        elif self.url and urlsplit(self.url).username is not None:
            # http://NAME:SECRET@HOST:PORT: a supervisord.conf's [inet_http_server] pair, as Basic auth.
            parts = urlsplit(self.url)
            pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        try:
            conn.request(method, path, body=data, headers=headers)
            return conn, conn.getresponse()
        except (TimeoutError, ConnectionError, FileNotFoundError, http.client.HTTPException, OSError) as exc:
            conn.close()
            number = getattr(exc, "errno", None)
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise Unreachable(f"{self.where}: {reason}", number) from None

    def request(self, method: str, path: str, body: Any = None,
                timeout: float | None = -1.0) -> tuple[int, dict[str, str], bytes]:
        conn, response = self.open(method, path, body, timeout)
        try:
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def call(self, method: str, path: str, body: Any = None, timeout: float | None = -1.0) -> Any:
        """A JSON request; the decoded answer, with `{"result": x}` unwrapped to x.

        Raises:
            ApiError: the server answered an error; Unreachable.
        """
        status, headers, data = self.request(method, path, body, timeout)
        try:
            value = json.loads(data) if data.strip() else None
        except ValueError:
            value = None
        if status >= 400:
            error = value.get("error", {}) if isinstance(value, dict) else {}
            message = error.get("message", data.decode(errors="replace"))
            raise ApiError(error.get("code", f"HTTP_{status}"), message, status)
        if isinstance(value, dict) and set(value) == {"result"}:
            return value["result"]
        return value

    def stream(self, path: str) -> Iterator[bytes]:
        """The body of a never-ending (follow) response, as it arrives."""
        conn, response = self.open("GET", path, timeout=None)
        try:
            if response.status >= 400:
                data = response.read()
                try:
                    error = json.loads(data).get("error", {})
                except ValueError:
                    error = {}
                raise ApiError(error.get("code", f"HTTP_{response.status}"), error.get("message", ""), response.status)
            while True:
                chunk = response.read1(65536)
                if not chunk:
                    return
                yield chunk
        finally:
            conn.close()


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=f"{parts.username}:***@{parts.hostname}:{parts.port}").geturl()


def quote_name(name: str) -> str:
    return quote(name, safe=":*")


def socket_from_config(path: str | None, environ: Mapping[str, str], cwd: str) -> str:
    """The control socket the master would make with config file `path` (None: no file) and
    environment `environ`: the same loader and the same rule (`arbiter.control.location`).

    Raises:
        ArbiterError: the file cannot be read, or it turns the socket off (exit 2).
    """
    from arbiter.config import loader
    from arbiter.control.location import control_socket_path

    cli = {"config": loader.Value(path, "option -c")} if path else {}
    try:
        cfg = loader.build(cli, environ)
    except ConfigError as exc:
        raise ArbiterError(f"cannot read the master's configuration: {exc}", EXIT_INVALID_ARGS) from None
    found = control_socket_path(cfg, cwd)
    if found is None:
        where = path or "the environment (ARBITER_CONTROL_SOCKET)"
        raise ArbiterError(f"{where} turns the control socket off (control_socket = none); "
                           "use --url http://HOST:PORT with a token instead", EXIT_INVALID_ARGS)
    return found


def resolve_socket(option: str | None, config: str | None, environ: Mapping[str, str] | None = None,
                   cwd: str | None = None) -> str:
    """Where the master's socket is; the first that applies wins:

    1. `-s PATH`;
    2. `-c FILE`: read as the master reads it (with the `ARBITER_*` variables over the file,
       as for the master, so `$ARBITER_CONTROL_SOCKET` beats the file's key);
    3. `$ARBITER_SOCKET` (a client-only variable);
    4. the master's rule with no file: `$ARBITER_CONTROL_SOCKET`, else beside
       `$ARBITER_PIDFILE`, else `./arbiter.sock` (`$ARBITER_CONFIG` names a file as -c does).
    """
    environ = os.environ if environ is None else environ
    cwd = os.getcwd() if cwd is None else cwd
    if option:
        return option
    if config:
        return socket_from_config(config, environ, cwd)
    if environ.get("ARBITER_SOCKET"):
        return environ["ARBITER_SOCKET"]
    return socket_from_config(None, environ, cwd)
