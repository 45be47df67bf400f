"""A FastAPI app with a WebSocket route, for the uvicorn worker's WebSocket tests.

/ws greets with the worker's pid, then echoes text; when the client goes, the close code the
app saw is appended to the file named by $WS_MARKER, so a test can see the app's side.
"""
import os

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

app = FastAPI()


@app.get("/")
def index() -> dict[str, int]:
    return {"pid": os.getpid()}


@app.websocket("/ws")
async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(f"pid={os.getpid()}")
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_text(f"echo:{text}")
    except WebSocketDisconnect as exc:
        marker = os.environ.get("WS_MARKER")
        if marker:
            with open(marker, "a") as handle:
                handle.write(f"disconnect {exc.code} {os.getpid()}\n")
