"""WSGI app for the gevent worker tests.

/sleep?s=N waits N seconds in `time.sleep` (patched: other requests go on); /spin never yields
(a hub blocked by CPU-bound code); /patched says whether the process was already patched when
this module was imported.
"""
import os
import time
from urllib.parse import parse_qs

from gevent import monkey

PATCHED_AT_IMPORT = all(monkey.is_module_patched(name) for name in ("socket", "time", "select", "ssl", "threading"))


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/sleep":
        time.sleep(float(query.get("s", ["1"])[0]))
    elif path == "/spin":
        while True:
            pass
    elif path == "/patched":
        path = f"patched={PATCHED_AT_IMPORT}"
    body = f"pid={os.getpid()} path={path}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
