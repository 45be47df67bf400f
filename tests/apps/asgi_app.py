"""ASGI test app. /sleep?s=N awaits; /block blocks the event loop (a hung worker); /headers
reads the whole body, then answers the request's headers as the app saw them, as JSON."""
import asyncio
import json
import os
import time
from urllib.parse import parse_qs

STARTED = []


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                STARTED.append(os.getpid())
                marker = os.environ.get("LIFESPAN_MARKER")
                if marker:
                    with open(marker, "a") as handle:
                        handle.write(f"startup {os.getpid()}\n")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                marker = os.environ.get("LIFESPAN_MARKER")
                if marker:
                    with open(marker, "a") as handle:
                        handle.write(f"shutdown {os.getpid()}\n")
                await send({"type": "lifespan.shutdown.complete"})
                return
    query = parse_qs(scope.get("query_string", b"").decode())
    path = scope["path"]
    if path == "/sleep":
        await asyncio.sleep(float(query.get("s", ["1"])[0]))
    elif path == "/block":
        time.sleep(3600)  # blocks the whole event loop: the worker stops heartbeating
    elif path == "/headers":
        # The body first: chunked trailers arrive after it, so any trailer that leaked into the
        # request's headers is there by the time they are read.
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        seen = {"headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
                "http_version": scope["http_version"], "body": size}
        body = json.dumps(seen).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
        return
    body = f"pid={os.getpid()} path={path}\n".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
