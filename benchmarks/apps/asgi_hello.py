"""Raw ASGI hello world (no lifespan handling needed). The body names the serving process (`pid=1234`)."""

import os


async def app(scope, receive, send):
    if scope["type"] != "http":
        # lifespan: accept startup and shutdown so every server runs it the same way.
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = f"Hello, World! pid={os.getpid()}\n".encode()
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})
