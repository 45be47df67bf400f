"""A WSGI app for the guards' tests: /leak keeps 20 MB more each call (touched, so the pages are
really this worker's own), /sleep?s=N answers after N seconds, anything else at once. Every
answer starts with `pid=` so a test knows which worker answered."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

_kept: list[bytearray] = []


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    if path == "/leak":
        _kept.append(bytearray(os.urandom(1024)) * (20 * 1024))  # 20 MiB, every page written
    elif path == "/sleep":
        seconds = float(parse_qs(environ.get("QUERY_STRING", "")).get("s", ["0.5"])[0])
        time.sleep(seconds)
    body = f"pid={os.getpid()} kept={len(_kept) * 20}MiB\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
