"""The fleet server as an ASGI app (Starlette): its parts, the page, login, and the error shape.

`create_app(config_path, db_path)` builds it; `arbiter.fleet.asgi:create_app()` does the same from
the environment, which is how `arbiter fleet` has an Arbiter master and its uvicorn worker serve
it (dogfood). Every answer carries headers that forbid framing and foreign scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from arbiter.fleet import auth
from arbiter.fleet import config as config_mod
from arbiter.fleet.deploy import Deployer, owner_alive
from arbiter.fleet.errors import FleetError
from arbiter.fleet.fleet import Fleet
from arbiter.fleet.store import Store

log = logging.getLogger("arbiter.fleet")
MAX_BODY = 64 * 1024
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                 b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]
STATIC = {"fleet.js": "text/javascript; charset=utf-8", "fleet.css": "text/css; charset=utf-8",
          "index.html": "text/html; charset=utf-8"}


@dataclass
class Context:
    """Everything a handler needs, built once per process."""

    config: config_mod.FleetConfig
    store: Store
    http: httpx.AsyncClient
    fleet: Fleet
    deployer: Deployer
    limiter: auth.RateLimiter = field(default_factory=auth.RateLimiter)
    activity_file: logging.Logger | None = None

    def record(self, who: str, action: str, node: str, target: str, result: str, detail: str = "") -> None:
        """One line of the activity log (and of Cesi's activity_log file, when configured)."""
        self.store.log_activity(who, action, node, target, result, detail)
        if self.activity_file:
            self.activity_file.info("%s %s %s %s: %s %s", who, action, node, target, result, detail)


Handler = Callable[[Context, Request, auth.Principal], Awaitable[Response]]


def context(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def guarded(role: str) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """A route that needs an account with at least `role` (and, from a browser, a CSRF token)."""
    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            ctx = context(request)
            if not ctx.store.has_accounts():
                raise FleetError("NO_ACCOUNT", "no account exists yet: run `arbiter fleet user add NAME --role admin`")
            principal = auth.authenticate(request, ctx.store)
            principal.require(role)
            return await handler(ctx, request, principal)
        endpoint.__name__ = handler.__name__
        return endpoint
    return wrap


async def json_body(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > MAX_BODY:
        raise FleetError("TOO_LARGE", f"request body over {MAX_BODY} bytes", 413)
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        raise FleetError("BAD_REQUEST", "request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise FleetError("BAD_REQUEST", f"request body must be a JSON object, got {type(data).__name__}")
    return data


# -- the page and the session ----------------------------------------------------------------------

def _static(name: str) -> bytes:
    return resources.files("arbiter.fleet").joinpath("static", name).read_bytes()


async def page(request: Request) -> Response:
    return Response(_static("index.html"), media_type=STATIC["index.html"])


async def static(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in STATIC or name == "index.html":
        raise FleetError("NOT_FOUND", f"no such file: {name}")
    return Response(_static(name), media_type=STATIC[name], headers={"cache-control": "no-cache"})


async def healthz(request: Request) -> Response:
    return Response(b"ok\n", media_type="text/plain")


async def login(request: Request) -> Response:
    """POST {"username", "password"}: a session cookie and the page's CSRF token."""
    ctx = context(request)
    auth.check_browser_post(request, None)  # no session yet: the Origin check still applies
    if not ctx.store.has_accounts():
        raise FleetError("NO_ACCOUNT", "no account exists yet: run `arbiter fleet user add NAME --role admin`")
    body = await json_body(request)
    name, password = body.get("username"), body.get("password")
    if not isinstance(name, str) or not isinstance(password, str) or not name:
        raise FleetError("BAD_ARGUMENTS", "send {\"username\": ..., \"password\": ...}")
    client = request.client.host if request.client else "?"
    keys = (f"ip:{client}", f"user:{name}")
    ctx.limiter.check(*keys)
    account = await asyncio.to_thread(auth.verify_login, ctx.store, name, password)
    if not account:
        ctx.limiter.failed(*keys)
        ctx.record(name, "login", "-", "-", "failed", f"from {client}")
        raise FleetError("UNAUTHORIZED", "wrong username or password")
    ctx.limiter.succeeded(f"user:{name}")
    sid, csrf = ctx.store.new_session(str(account["name"]), auth.SESSION_LIFETIME)
    ctx.record(str(account["name"]), "login", "-", "-", "OK", f"from {client}")
    response = JSONResponse({"user": account["name"], "role": account["role"], "csrf": csrf})
    response.set_cookie(auth.SESSION_COOKIE, sid, max_age=int(auth.SESSION_LIFETIME), httponly=True,
                        samesite="strict", secure=ctx.config.secure_cookies, path="/")
    return response


@guarded("viewer")
async def session(ctx: Context, request: Request, who: auth.Principal) -> Response:
    return JSONResponse({"user": who.name, "role": who.role, "csrf": who.csrf, "via": who.via})


@guarded("viewer")
async def logout(ctx: Context, request: Request, who: auth.Principal) -> Response:
    sid = request.cookies.get(auth.SESSION_COOKIE)
    if sid:
        ctx.store.end_session(sid)
    response = JSONResponse({"result": "logged out"})
    response.delete_cookie(auth.SESSION_COOKIE, path="/", httponly=True, samesite="strict")
    return response


# -- errors and headers -----------------------------------------------------------------------------

async def fleet_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FleetError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
    return JSONResponse(exc.as_json(), status_code=exc.http_status, headers=headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(exc.status_code, "BAD_REQUEST")
    message = f"no such route: {request.url.path}" if exc.status_code == 404 else \
        f"{request.method} is not allowed on {request.url.path}" if exc.status_code == 405 else str(exc.detail)
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=exc.status_code,
                        headers=exc.headers)


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [h for h in SECURITY_HEADERS if h[0] not in names]
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)
        await self.app(scope, receive, with_headers)


# -- building it --------------------------------------------------------------------------------------

def _activity_logger(path: str | None) -> logging.Logger | None:
    if not path:
        return None
    logger = logging.getLogger(f"arbiter.fleet.activity.{path}")
    if not logger.handlers:
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def create_app(config_path: str, db_path: str | None = None) -> Starlette:
    """The fleet app for the config at `config_path` (fleet.toml or cesi.conf.toml).

    Raises:
        ConfigError: the config is wrong (named file, line, key).
    """
    from arbiter.fleet import api, cesi

    config = config_mod.load(config_path)
    store = Store(db_path or config.database)
    http = httpx.AsyncClient(limits=httpx.Limits(max_connections=500, max_keepalive_connections=100),
                             follow_redirects=False, trust_env=False)
    fleet = Fleet(config, http)
    ctx = Context(config, store, http, fleet, Deployer(fleet, store),
                  activity_file=_activity_logger(config.activity_log))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        abandoned = store.abandon_orphan_deploys(owner_alive)
        if abandoned:
            log.warning("%d deploy(s) were cut short by the previous fleet server's exit", abandoned)
        try:
            yield
        finally:
            await ctx.deployer.close()
            await http.aclose()

    routes: list[BaseRoute] = [
        Route("/", page), Route("/static/{name}", static), Route("/healthz", healthz),
        Route("/api/v1/login", login, methods=["POST"]), Route("/api/v1/logout", logout, methods=["POST"]),
        Route("/api/v1/session", session),
        *api.routes(), *cesi.routes(),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={FleetError: fleet_error, HTTPException: http_error})
    app.state.ctx = ctx
    app.add_middleware(SecurityHeaders)
    return app
