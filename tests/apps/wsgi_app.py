"""WSGI test app. /sleep?s=N sleeps; /hang never returns (a hung sync worker)."""
import os
import time
from urllib.parse import parse_qs


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/sleep":
        time.sleep(float(query.get("s", ["1"])[0]))
    elif path == "/hang":
        while True:
            time.sleep(3600)
    body = f"pid={os.getpid()} path={path}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


application = app
