"""Who is asking, and may they: passwords, login rate limits, sessions, API tokens, CSRF, roles.

- Passwords: the standard library's `hashlib.scrypt` (memory-hard; n=2**14, r=8, p=1: 16 MiB
  and some tens of milliseconds per try), so no native dependency is needed.
- A browser holds a session id in an HttpOnly, SameSite=Strict cookie. Every POST it makes must
  carry the session's CSRF token in `X-CSRF-Token`, and its `Origin`, when sent, must be ours.
- A script sends `Authorization: Bearer TOKEN` (`arbiter fleet token add USER`): no cookie is
  involved, so no page elsewhere can make the browser send it, and no CSRF token is needed.
- Roles are ordered: viewer (read), operator (act on processes, deploy), admin (accounts).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from arbiter.fleet.errors import FleetError
from arbiter.fleet.store import ROLES, Store

if TYPE_CHECKING:  # the CLI's account commands need no web framework
    from starlette.requests import Request

SESSION_COOKIE = "fleet_session"
SESSION_LIFETIME = 12 * 3600.0
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 14, 8, 1


def hash_password(password: str) -> str:
    if len(password) < 8:
        raise FleetError("BAD_ARGUMENTS", "a password needs at least 8 characters")
    salt = os.urandom(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    encode = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${encode(salt).decode()}${encode(key).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(base64.b64decode(key)), maxmem=256 * 1024 * 1024)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(key))


# A hash to check against when the account does not exist, so that a wrong name costs the
# same time as a wrong password (no account enumeration by timing).
_DUMMY = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="


class RateLimiter:
    """At most `limit` failed logins per `window` seconds, per client address and per account."""

    def __init__(self, limit: int = 5, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.clock = limit, window, clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str) -> deque[float]:
        now = self.clock()
        failures = self._failures.setdefault(key, deque())
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures

    def check(self, *keys: str) -> None:
        for key in keys:
            failures = self._recent(key)
            if len(failures) >= self.limit:
                wait = int(failures[0] + self.window - self.clock()) + 1
                raise FleetError("TOO_MANY_ATTEMPTS", f"too many failed logins; try again in {wait} s")

    def failed(self, *keys: str) -> None:
        for key in keys:
            self._recent(key).append(self.clock())
        if len(self._failures) > 10000:  # forget the quiet ones; bound the memory a flood can take
            for key in [k for k, v in self._failures.items() if not v]:
                del self._failures[key]

    def succeeded(self, account_key: str) -> None:
        self._failures.pop(account_key, None)


def verify_login(store: Store, name: str, password: str) -> dict[str, object] | None:
    """The account, if `password` is its password (slow on purpose: scrypt)."""
    account = store.account(name)
    ok = check_password(password, str(account["password"]) if account else _DUMMY)
    return account if ok and account else None


@dataclass(frozen=True)
class Principal:
    name: str
    role: str
    via: str  # "session" or "token"
    csrf: str = ""

    def require(self, role: str) -> None:
        if ROLES.index(self.role) < ROLES.index(role):
            raise FleetError("FORBIDDEN", f"{self.name} is a {self.role}; this needs the {role} role")


def _same_origin(request: Request, origin: str) -> bool:
    parts = urlsplit(origin)
    return origin != "null" and parts.scheme in ("http", "https") \
        and parts.netloc.lower() == request.headers.get("host", "").lower()


def authenticate(request: Request, store: Store) -> Principal:
    """The caller, by bearer token or session cookie; for a browser's POST, also its CSRF token
    and Origin. Raises FleetError 401/403."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        account = store.token_account(value.strip())
        if not account:
            raise FleetError("UNAUTHORIZED", "unknown API token")
        return Principal(str(account["name"]), str(account["role"]), "token")
    sid = request.cookies.get(SESSION_COOKIE)
    session = store.session(sid) if sid else None
    if not session:
        raise FleetError("UNAUTHORIZED", "log in first, or send 'Authorization: Bearer <token>'")
    principal = Principal(str(session["name"]), str(session["role"]), "session", str(session["csrf"]))
    if request.method not in ("GET", "HEAD"):
        check_browser_post(request, principal.csrf)
    return principal


def check_browser_post(request: Request, csrf: str | None) -> None:
    """A state change from a browser: its Origin must be ours, and (once logged in) it must carry
    the page's CSRF token."""
    origin = request.headers.get("origin")
    if origin is not None and not _same_origin(request, origin):
        raise FleetError("CSRF_FAILED", f"cross-origin request from {origin!r} refused")
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise FleetError("CSRF_FAILED", "cross-site request refused")
    if csrf is not None and not hmac.compare_digest(request.headers.get("x-csrf-token", "").encode(), csrf.encode()):
        raise FleetError("CSRF_FAILED", "missing or wrong X-CSRF-Token (reload the page)")
