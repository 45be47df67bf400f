"""Raw ASGI app for reload_bench: `/` answers `pid=N`, `/sleep?s=0.3` answers after sleeping.

Lifespan is accepted (startup/shutdown) so every server runs it the same way.
"""

import asyncio
import os
from urllib.parse import parse_qs


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] == "/sleep":
        seconds = float(parse_qs(scope["query_string"].decode()).get("s", ["0.3"])[0])
        await asyncio.sleep(min(seconds, 5.0))
    body = f"Hello, World! pid={os.getpid()}\n".encode()
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})
