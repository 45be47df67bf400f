"""The dashboard: one static page (static/dashboard.html: inline script and style, no external
asset) over the JSON API.

It polls /v1/status every second and shows what is failing first (a health card and a "needs
attention" list), then the web workers (each with "replace": a fresh worker boots, then this one
drains) and the programs (start, stop, restart, log), and follows the chosen program's stdout or
stderr live through the chunked follow stream. State changes are POSTs carrying the CSRF token
this module writes into the page. The page is sent with a nonce-based Content-Security-Policy,
so no script but its own ever runs in it.
Over TCP with a token, `/login?token=...` sets a session cookie derived from the token.
"""

from __future__ import annotations

import hmac
import secrets
from importlib import resources

from arbiter.control.backend import ControlError
from arbiter.control.connection import HttpConnection, Request
from arbiter.control.security import SESSION_COOKIE, Guard, session_value

# The page (markup, style and script in one file, so one nonce covers them) is read once.
PAGE = resources.files("arbiter.control").joinpath("static/dashboard.html").read_text(encoding="utf-8")


class Dashboard:
    def __init__(self, csrf_token: str, guard: Guard) -> None:
        self._csrf, self._guard = csrf_token, guard

    def page(self, conn: HttpConnection, request: Request, params: dict[str, str]) -> None:
        nonce = secrets.token_urlsafe(16)
        body = PAGE.replace("@CSRF@", self._csrf).replace("@NONCE@", nonce).encode()
        policy = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
                  "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
        conn.respond(200, body, "text/html; charset=utf-8", [("Content-Security-Policy", policy)])

    def login(self, conn: HttpConnection, request: Request, params: dict[str, str]) -> None:
        """`/login?token=T`: trade the token for a session cookie, then go to the dashboard."""
        token = self._guard.token
        given = request.query.get("token", "")
        if token and not hmac.compare_digest(given.encode(), token.encode()):
            raise ControlError("UNAUTHORIZED", "wrong or missing token")
        headers = [("Location", "/")]
        secret = self._guard.credentials.session_secret
        if secret and (token or request.context.get("bearer")):
            headers.append(("Set-Cookie", f"{SESSION_COOKIE}={session_value(secret)}; HttpOnly; "
                                          "SameSite=Strict; Path=/"))
        conn.respond(303, b"", "text/plain", headers)
