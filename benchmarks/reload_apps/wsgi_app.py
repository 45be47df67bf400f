"""Raw WSGI app for reload_bench: `/` answers `pid=N`, `/sleep?s=0.3` answers after sleeping."""

import os
import time
from urllib.parse import parse_qs


def app(environ, start_response):
    if environ.get("PATH_INFO") == "/sleep":
        seconds = float(parse_qs(environ.get("QUERY_STRING", "")).get("s", ["0.3"])[0])
        time.sleep(min(seconds, 5.0))
    body = f"Hello, World! pid={os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
