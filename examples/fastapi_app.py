"""A FastAPI app: `arbiter examples.fastapi_app:app -w 4` (ASGI, so the uvicorn worker)."""

import asyncio
import os

from fastapi import FastAPI

app = FastAPI(title="arbiter example")


@app.get("/")
async def index() -> dict:
    return {"hello": "world", "pid": os.getpid()}


@app.get("/slow")
async def slow(seconds: float = 1.0) -> dict:
    await asyncio.sleep(seconds)
    return {"slept": seconds, "pid": os.getpid()}
