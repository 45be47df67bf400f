"""Raw WSGI hello world. The body names the serving process (`pid=1234`) for the replacement test."""

import os


def app(environ, start_response):
    body = f"Hello, World! pid={os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
