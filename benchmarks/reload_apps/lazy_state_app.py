"""WSGI app whose state is built on first use, not at import, for memory_bench's reforking rows.

The first request builds what real apps build lazily: a cache of rendered pages (bytes blobs,
LAZY_BLOB_MB megabytes) and a lookup table of small records (dicts of strings and numbers,
LAZY_RECORDS of them). `--preload` cannot share any of it: the master never runs a request. Every
answer reads one blob and one record and says which pid served it (JSON `"pid": N`); `GET /gc`
runs one full `gc.collect()` in the worker that serves it.
"""

import gc
import json
import os
import random

BLOB_MB = int(os.environ.get("LAZY_BLOB_MB", "32"))
RECORDS = int(os.environ.get("LAZY_RECORDS", "100000"))
_pages: list[bytes] | None = None
_records: dict[str, dict] | None = None


def _state() -> tuple[list[bytes], dict[str, dict], list[str]]:
    global _pages, _records, _keys
    if _pages is None:
        _pages = [os.urandom(64 * 1024) for _ in range(BLOB_MB * 16)]
        _records = {f"sku-{i:07d}": {"id": i, "name": f"item {i}", "price": i * 0.01} for i in range(RECORDS)}
        _keys = list(_records)
    return _pages, _records, _keys


def app(environ, start_response):
    pages, records, keys = _state()
    if environ["PATH_INFO"] == "/gc":
        body = json.dumps({"pid": os.getpid(), "collected": gc.collect()}).encode()
    else:
        sku = random.choice(keys)
        page = random.choice(pages)
        body = json.dumps({"pid": os.getpid(), "sku": sku, "name": records[sku]["name"], "byte": page[0]}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


application = app
