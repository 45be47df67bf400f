"""Apps for --request-timeout: a request stuck in a function whose name the stack must show."""
import asyncio
import os
import time
from urllib.parse import parse_qs


def stuck_in_slow_query(seconds):
    time.sleep(seconds)


def app(environ, start_response):
    """WSGI. /stuck sleeps 30 s in stuck_in_slow_query; /sleep?s=N answers after N s; /streamed
    sends its head, then gets stuck; anything else answers at once with the worker's pid."""
    path = environ["PATH_INFO"]
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/stuck":
        stuck_in_slow_query(30)
    elif path == "/sleep":
        time.sleep(float(query.get("s", ["1"])[0]))
    elif path == "/streamed":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"begun\n")
        stuck_in_slow_query(30)
        return [b"never\n"]
    body = f"pid={os.getpid()} path={path}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


async def awaiting_slow_query(seconds):
    await asyncio.sleep(seconds)


async def asgi(scope, receive, send):
    """ASGI, the same paths; /blocking runs a sync function in a thread (as frameworks do)."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path = scope["path"]
    query = parse_qs(scope.get("query_string", b"").decode())
    if path == "/stuck":
        await awaiting_slow_query(30)
    elif path == "/sleep":
        await asyncio.sleep(float(query.get("s", ["1"])[0]))
    elif path == "/blocking":
        await asyncio.get_running_loop().run_in_executor(None, stuck_in_slow_query, 30)
    elif path == "/streamed":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"begun\n", "more_body": True})
        await awaiting_slow_query(30)
        await send({"type": "http.response.body", "body": b"never\n"})
        return
    body = f"pid={os.getpid()} path={path}\n".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _fastapi_app():
    """FastAPI (Starlette's anyio underneath), with a middleware, so cancellation crosses a task
    group: an `async def` endpoint stuck in an await, and a `def` one run in a thread."""
    from fastapi import FastAPI
    from starlette.middleware.base import BaseHTTPMiddleware

    api = FastAPI()

    async def passthrough(request, call_next):
        return await call_next(request)

    api.add_middleware(BaseHTTPMiddleware, dispatch=passthrough)

    @api.get("/stuck")
    async def stuck():
        await awaiting_slow_query(30)
        return {"never": True}

    @api.get("/blocking")
    def blocking():
        stuck_in_slow_query(30)
        return {"never": True}

    @api.get("/")
    async def index():
        return {"pid": os.getpid()}

    return api


fastapi_app = _fastapi_app()
