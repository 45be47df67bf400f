"""An app built by a factory: `factory_app:create_app()`."""
import os

CALLS = []


def create_app():
    CALLS.append(os.getpid())

    def app(environ, start_response):
        body = f"factory calls={len(CALLS)} pid={os.getpid()}\n".encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]

    return app
