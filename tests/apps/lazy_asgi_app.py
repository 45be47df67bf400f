"""ASGI app with lifespan and lazy state, for reforking with the uvicorn worker.

Lifespan startup records the pid it ran in (and makes a per-loop object, as a DB pool would);
the first request builds a table and records which pid built it. Answers:
`pid=P startup=S built_by=B loop_ok=1`. /sleep waits half a second first.
"""
import asyncio
import os

state = {"startup": 0, "built_by": 0, "loop": None}
_table = None


async def app(scope, receive, send):
    global _table
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                state["startup"] = os.getpid()
                state["loop"] = asyncio.get_running_loop()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                state["loop"] = None
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] == "/sleep":
        await asyncio.sleep(0.5)
    if _table is None:
        _table = [os.urandom(64 * 1024) for _ in range(160)]  # 10 MB
        state["built_by"] = os.getpid()
    loop_ok = int(state["loop"] is asyncio.get_running_loop())
    body = f"pid={os.getpid()} startup={state['startup']} built_by={state['built_by']} loop_ok={loop_ok}\n".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
