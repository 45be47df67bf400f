"""The HTTP client `arbiter ctl` uses: JSON over a unix socket (or TCP with a bearer token).

Also finds the socket: `-s PATH`, else the one a `-c` config file names (`[supervisorctl]
serverurl=unix://...` or `[unix_http_server] file=...` of a supervisord.conf, or the key
`control_socket` of an arbiter.toml; relative paths are relative to the file), else
`$ARBITER_SOCKET`, else `./arbiter.sock`.
"""

from __future__ import annotations

import configparser
import errno
import http.client
import json
import os
import socket
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

from arbiter.errors import ArbiterError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_SOCKET = "arbiter.sock"
# Exit statuses, as supervisorctl's (LSB init script codes; `status` uses 3 and 4).
EXIT_GENERIC, EXIT_INVALID_ARGS, EXIT_STATUS_NOT_RUNNING, EXIT_STATUS_UNKNOWN = 1, 2, 3, 4
EXIT_REFUSED, EXIT_NOT_RUNNING = 4, 7


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
        super().__init__(message, EXIT_NOT_RUNNING if errno_ == errno.ENOENT else EXIT_REFUSED)
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
        self.where = url if url else f"unix://{socket_path}"

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
        try:
            conn.request(method, path, body=data, headers=headers)
            return conn, conn.getresponse()
        except (ConnectionError, FileNotFoundError, socket.timeout, http.client.HTTPException, OSError) as exc:
            conn.close()
            number = getattr(exc, "errno", None)
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise Unreachable(f"{self.where}: {reason}", number) from None

    def request(self, method: str, path: str, body: Any = None, timeout: float | None = -1.0) -> tuple[int, dict[str, str], bytes]:
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
            raise ApiError(error.get("code", f"HTTP_{status}"), error.get("message", data.decode(errors="replace")), status)
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


def quote_name(name: str) -> str:
    return quote(name, safe=":*")


def socket_from_config(path: str) -> str | None:
    """The control socket a config file names, or None.

    Raises:
        ArbiterError: the file cannot be read or parsed (the message names it).
    """
    here = os.path.dirname(os.path.abspath(path))
    try:
        if path.endswith(".toml"):
            with open(path, "rb") as f:
                value = tomllib.load(f).get("control_socket")
            return os.path.join(here, value) if value else None
        parser = configparser.RawConfigParser(strict=False)
        if not parser.read(path):
            raise ArbiterError(f"{path}: cannot read the config file", EXIT_INVALID_ARGS)
    except (OSError, ValueError, configparser.Error) as exc:
        raise ArbiterError(f"{path}: cannot read the config file: {exc}", EXIT_INVALID_ARGS) from None

    def expand(value: str) -> str:
        value = value.replace("%(here)s", here)
        for key, env in os.environ.items():
            value = value.replace(f"%(ENV_{key})s", env)
        return os.path.join(here, value)

    url = parser.get("supervisorctl", "serverurl") if parser.has_option("supervisorctl", "serverurl") else ""
    if url.startswith("unix://"):
        return expand(url[len("unix://"):])
    if parser.has_option("unix_http_server", "file") and parser.get("unix_http_server", "file"):
        return expand(parser.get("unix_http_server", "file"))
    return None


def resolve_socket(option: str | None, config: str | None) -> str:
    """-s/--socket, else what -c's config file names, else $ARBITER_SOCKET, else ./arbiter.sock."""
    if option:
        return option
    if config:
        found = socket_from_config(config)
        if found:
            return found
        raise ArbiterError(f"{config}: names no control socket ([supervisorctl] serverurl=unix://..., "
                           "[unix_http_server] file=..., or control_socket in an arbiter.toml)", EXIT_INVALID_ARGS)
    return os.environ.get("ARBITER_SOCKET") or DEFAULT_SOCKET
