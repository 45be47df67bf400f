"""WSGI app that says how its worker's cyclic collector stands: whether it is on, and whether an
object this module built at import is frozen (outside the collector's generations)."""
import gc
import os

BUILT_AT_IMPORT = [object()]  # a container, so the collector tracks it


def app(environ, start_response):
    frozen = not any(obj is BUILT_AT_IMPORT for obj in gc.get_objects())
    body = f"pid={os.getpid()} enabled={gc.isenabled()} frozen={frozen}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
