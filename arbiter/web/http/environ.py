"""The PEP 3333 environ of a request, and which peers may speak for the client.

Per listening socket, everything constant is computed once (`base_environ`); a request copies
that dict and adds its own keys. Proxy headers (X-Forwarded-For, Gunicorn's secure scheme
headers, a SCRIPT_NAME header) change the environ only when the peer is trusted: its address is
in `forwarded_allow_ips` (addresses or networks, `*` for all), or it is a unix socket peer,
as in Gunicorn.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from typing import Any
from urllib.parse import unquote_to_bytes

from arbiter import __version__
from arbiter.web.http.connection import Connection, ListenerInfo
from arbiter.web.http.errors import RequestError, bad_request
from arbiter.web.http.parser import Request

SERVER_SOFTWARE = f"arbiter/{__version__}"
# Gunicorn's secure_scheme_headers: header -> the value that means https.
SECURE_SCHEME_HEADERS = {
    "HTTP_X_FORWARDED_PROTOCOL": "ssl",
    "HTTP_X_FORWARDED_PROTO": "https",
    "HTTP_X_FORWARDED_SSL": "on",
}
_TRUST_CACHE_CAP = 4096

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Trust:
    """Decides whether a peer address may set proxy headers."""

    def __init__(self, allowed: tuple[str, ...] | list[str]) -> None:
        self.everyone = "*" in allowed
        self._addresses: set[str] = set()
        self._networks: list[Network] = []
        for item in allowed:
            item = item.strip()
            if not item or item == "*":
                continue
            try:
                if "/" in item:
                    self._networks.append(ipaddress.ip_network(item, strict=False))
                else:
                    self._addresses.add(str(ipaddress.ip_address(item)))
            except ValueError:
                self._addresses.add(item)  # kept verbatim; it can only match itself
        self._cache: dict[str, bool] = {}

    def trusts(self, addr: str) -> bool:
        """`addr` is REMOTE_ADDR; "" is a unix socket peer."""
        if self.everyone or not addr:
            return True
        known = self._cache.get(addr)
        if known is None:
            known = self._decide(addr)
            if len(self._cache) < _TRUST_CACHE_CAP:
                self._cache[addr] = known
        return known

    def _decide(self, addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr.partition("%")[0])
        except ValueError:
            return addr in self._addresses
        candidates = [ip]
        mapped = getattr(ip, "ipv4_mapped", None)
        if mapped is not None:
            candidates.append(mapped)  # ::ffff:10.0.0.1 is 10.0.0.1 on a dual-stack socket
        for candidate in candidates:
            if str(candidate) in self._addresses:
                return True
            if any(candidate in net for net in self._networks if net.version == candidate.version):
                return True
        return False


def base_environ(listener: ListenerInfo, url_scheme: str, multithread: bool, file_wrapper: Any) -> dict[str, Any]:
    """The keys every request on `listener` shares."""
    return {
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": url_scheme,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": multithread,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": file_wrapper,
        "wsgi.input_terminated": True,
        "SERVER_SOFTWARE": SERVER_SOFTWARE,
        "SERVER_NAME": listener.server_name,
        "SERVER_PORT": listener.server_port,
        # As Gunicorn: a mount point may be given to the whole server in the environment.
        "SCRIPT_NAME": os.environ.get("SCRIPT_NAME", ""),
    }


def build_environ(base: dict[str, Any], conn: Connection, req: Request, trust: Trust) -> dict[str, Any]:
    """The environ of `req`, without `wsgi.input` (the caller adds it).

    Raises:
        RequestError: contradictory proxy scheme headers (400), or a path outside SCRIPT_NAME (404).
    """
    environ = base.copy()
    environ.update(req.env)
    environ["REQUEST_METHOD"] = req.method
    environ["RAW_URI"] = req.uri
    environ["QUERY_STRING"] = req.query
    environ["SERVER_PROTOCOL"] = req.protocol
    environ["REMOTE_ADDR"] = conn.remote_addr
    environ["REMOTE_PORT"] = conn.remote_port
    path = req.path
    # PEP 3333: PATH_INFO is the decoded path, its bytes carried as latin-1 code points.
    path_info = unquote_to_bytes(path).decode("latin-1") if "%" in path else path
    if req.proxied and conn.trusted:
        _apply_proxy_headers(environ, req, trust)
    script_name = environ["SCRIPT_NAME"]
    if script_name:
        script_name = script_name.rstrip("/")
        if path_info == script_name or path_info.startswith(script_name + "/"):
            path_info = path_info[len(script_name):]
        else:
            raise RequestError(404, "Not Found", f"the path is not under SCRIPT_NAME {script_name!r}")
        environ["SCRIPT_NAME"] = script_name
    environ["PATH_INFO"] = path_info
    return environ


def _apply_proxy_headers(environ: dict[str, Any], req: Request, trust: Trust) -> None:
    forwarded_for = environ.get("HTTP_X_FORWARDED_FOR")
    if forwarded_for:
        client = _client_from_forwarded_for(forwarded_for, trust)
        if client:
            environ["REMOTE_ADDR"] = client
            environ["REMOTE_PORT"] = "0"  # the client's port is not forwarded (as Uvicorn)
    scheme = None
    for key, secure_value in SECURE_SCHEME_HEADERS.items():
        value = environ.get(key)
        if value is None:
            continue
        this = "https" if value.strip().lower() == secure_value else "http"
        if scheme is not None and this != scheme:
            raise bad_request("contradictory secure scheme headers")
        scheme = this
    if scheme is not None:
        environ["wsgi.url_scheme"] = scheme
    if req.script_name is not None:
        environ["SCRIPT_NAME"] = req.script_name


def _client_from_forwarded_for(value: str, trust: Trust) -> str:
    """The nearest address that is not one of our trusted proxies, reading from the right.

    Each proxy appends the address it received the request from; entries left of the first
    untrusted one were written by that untrusted client and prove nothing.
    """
    hops = [hop.strip() for hop in value.split(",")]
    hops = [hop for hop in hops if hop]
    for hop in reversed(hops):
        if not trust.trusts(hop):
            return hop
    return hops[0] if hops else ""
