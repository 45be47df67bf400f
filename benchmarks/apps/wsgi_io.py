"""WSGI app that waits 10 ms on I/O per request, as one that calls a slow backend would.

The wait is a blocking socket read with a 10 ms timeout on a UDP socket nobody sends to: the
standard library's blocking call, which a gevent worker's monkey-patching turns into a wait on the
hub (the request's greenlet parks, the others run). A socket per request, because gevent lets only
one greenlet wait on a socket at a time. The body names the serving process (`pid=1234`).
"""

import os
import socket

WAIT = 0.010


def app(environ, start_response):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(WAIT)
        try:
            sock.recv(1)
        except TimeoutError:
            pass
    body = f"Hello, World! pid={os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
