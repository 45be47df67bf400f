"""FastAPI hello world. The JSON body names the serving process (`{"pid": 1234, ...}`)."""

import os

from fastapi import FastAPI

app = FastAPI()


@app.get("/")
async def hello() -> dict[str, object]:
    return {"message": "Hello, World!", "pid": os.getpid()}
