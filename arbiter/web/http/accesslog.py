"""Access log lines in Gunicorn's format (`access_log_format` with Gunicorn's atoms).

| atom | meaning                         | atom        | meaning                               |
|------|---------------------------------|-------------|---------------------------------------|
| h    | remote address                  | b / B       | body bytes sent ('-' / 0 when none)   |
| l    | '-'                             | f           | Referer                               |
| u    | user name (HTTP Basic auth)     | a           | User-Agent                            |
| t    | date, Apache format             | T / D / M   | request time: s / microseconds / ms   |
| r    | request line                    | L           | request time, decimal seconds         |
| s    | status code                     | p           | process id, as `<pid>`                |
| m    | request method                  | {name}i     | request header                        |
| U    | URL path, no query              | {name}o     | response header                       |
| q    | query string                    | {name}e     | environ variable                      |
| H    | protocol                        |             |                                       |

Atoms are computed only when the format asks for them: the line is `format % atoms`, and
`atoms` is a dict that works an atom out the first time it is looked up. As in Gunicorn,
an unknown atom reads '-', and double quotes in values are escaped.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import time
from collections.abc import Mapping
from typing import Any, Protocol


class RequestHead(Protocol):
    """What the atoms read of a request: its headers as (NAME, value) pairs (a WSGI worker's
    parsed request, or the ASGI access middleware's view of a scope)."""

    headers: list[tuple[str, str]]


class _Atoms(dict):  # type: ignore[type-arg]
    __slots__ = ("_req", "_resp", "_environ", "_duration")

    def __init__(self, req: RequestHead, resp: Any, environ: Mapping[str, Any], duration: float) -> None:
        super().__init__()
        self._req = req
        self._resp = resp
        self._environ = environ
        self._duration = duration

    def __missing__(self, key: str) -> Any:
        value = self._atom(key)
        if isinstance(value, str):
            value = value.replace('"', '\\"')
        self[key] = value
        return value

    def _atom(self, key: str) -> Any:
        environ, req, resp = self._environ, self._req, self._resp
        simple = _SIMPLE.get(key)
        if simple is not None:
            return simple(self)
        if len(key) > 3 and key[0] == "{" and key[-2] == "}":
            name, kind = key[1:-2].lower(), key[-1]
            if kind == "i":
                return _find(req.headers, name)
            if kind == "o":
                return _find(resp.headers, name)
            if kind == "e":
                for env_key, value in environ.items():
                    if env_key.lower() == name:
                        return value
        return "-"

    # The atoms, each a method so that only the ones in the format cost anything.
    def h(self) -> str:
        return self._environ.get("REMOTE_ADDR") or "-"

    def u(self) -> str:
        return _basic_user(self._environ.get("HTTP_AUTHORIZATION")) or "-"

    def t(self) -> str:
        return time.strftime("[%d/%b/%Y:%H:%M:%S %z]")

    def r(self) -> str:
        env = self._environ
        return f"{env.get('REQUEST_METHOD')} {env.get('RAW_URI')} {env.get('SERVER_PROTOCOL')}"

    def s(self) -> str:
        status = self._resp.status or ""
        return status.split(None, 1)[0] if status else "-"

    def b(self) -> str:
        return str(self._resp.sent) if self._resp.sent else "-"

    def B(self) -> int:  # noqa: N802 - Gunicorn's atom name
        return int(self._resp.sent)

    def T(self) -> int:  # noqa: N802
        return int(self._duration)

    def D(self) -> int:  # noqa: N802
        return int(self._duration * 1_000_000)

    def M(self) -> int:  # noqa: N802
        return int(self._duration * 1000)

    def L(self) -> str:  # noqa: N802
        return f"{self._duration:.6f}"


_SIMPLE: dict[str, Any] = {
    "h": _Atoms.h,
    "l": lambda atoms: "-",
    "u": _Atoms.u,
    "t": _Atoms.t,
    "r": _Atoms.r,
    "s": _Atoms.s,
    "m": lambda atoms: atoms._environ.get("REQUEST_METHOD") or "-",
    "U": lambda atoms: atoms._environ.get("PATH_INFO") or "-",
    "q": lambda atoms: atoms._environ.get("QUERY_STRING", "-"),
    "H": lambda atoms: atoms._environ.get("SERVER_PROTOCOL") or "-",
    "b": _Atoms.b,
    "B": _Atoms.B,
    "f": lambda atoms: atoms._environ.get("HTTP_REFERER", "-"),
    "a": lambda atoms: atoms._environ.get("HTTP_USER_AGENT", "-"),
    "T": _Atoms.T,
    "D": _Atoms.D,
    "M": _Atoms.M,
    "L": _Atoms.L,
    "p": lambda atoms: f"<{os.getpid()}>",
}


def _find(headers: Any, name: str) -> str:
    for key, value in headers or ():
        if key.lower() == name:
            return str(value)
    return "-"


def _basic_user(header: str | None) -> str | None:
    if not header or not header[:6].lower() == "basic ":
        return None
    try:
        decoded = base64.b64decode(header[6:].strip().encode("ascii"), validate=True)
        return decoded.split(b":", 1)[0].decode("utf-8")
    except (ValueError, binascii.Error, UnicodeError):
        return None


class AccessLog:
    """Writes one line per request to the `arbiter.access` logger."""

    def __init__(self, fmt: str, logger: logging.Logger | None = None) -> None:
        self.fmt = fmt
        self.logger = logger or logging.getLogger("arbiter.access")

    def format(self, req: RequestHead, resp: Any, environ: Mapping[str, Any], duration: float) -> str:
        try:
            return self.fmt % _Atoms(req, resp, environ, duration)
        except (TypeError, ValueError, KeyError) as exc:
            return f"bad access_log_format {self.fmt!r}: {exc}"

    def log(self, req: RequestHead, resp: Any, environ: Mapping[str, Any], duration: float) -> None:
        """`duration` is the request time in seconds."""
        self.logger.info(self.format(req, resp, environ, duration))
