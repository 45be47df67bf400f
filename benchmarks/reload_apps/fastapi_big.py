"""FastAPI app building ~80 MB of Python objects (130,000 records) at import, for memory_bench (--preload).

`CATALOG` is a lookup table of small records (dicts, tuples, strings, floats, ints): the kind of
reference data an app loads once at startup and then only reads. `GET /` looks one record up and
answers with the serving pid (JSON `"pid": N`), through a pydantic response model. `GET /gc` runs
one full `gc.collect()` in the worker that serves it (memory_bench uses it to show what a full
collection, which CPython runs by itself only now and then, does to the shared pages).
"""

import gc
import os
import random

from fastapi import FastAPI
from pydantic import BaseModel

SIZE = int(os.environ.get("BIG_APP_RECORDS", "130000"))
CATALOG = {
    f"sku-{i:07d}": {"id": i, "name": f"item {i}", "price": i * 0.01, "tags": (f"t{i % 97}", f"c{i % 13}")}
    for i in range(SIZE)
}
KEYS = list(CATALOG)

app = FastAPI()


class Item(BaseModel):
    pid: int
    sku: str
    name: str
    price: float


@app.get("/", response_model=Item)
def index() -> Item:
    sku = random.choice(KEYS)
    record = CATALOG[sku]
    return Item(pid=os.getpid(), sku=sku, name=record["name"], price=record["price"])


@app.get("/gc")
def collect() -> dict:
    return {"pid": os.getpid(), "collected": gc.collect()}
