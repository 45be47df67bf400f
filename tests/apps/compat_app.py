"""Apps for the Gunicorn-flag tests. `wsgi`: /env shows what the server set, /file sends a file
through wsgi.file_wrapper and notes in $READ_LOG each read() (none when sendfile(2) sent it).
`asgi`: the scope's root_path, path and client."""
import io
import json
import os


class _TrackedFile(io.FileIO):
    def read(self, size=-1):
        with open(os.environ["READ_LOG"], "a") as log:
            log.write("read\n")
        return super().read(size)


def wsgi(environ, start_response):
    if environ["PATH_INFO"].endswith("/file"):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](_TrackedFile(os.environ["SENT_FILE"], "r"))
    if environ["PATH_INFO"].endswith("/status"):
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    body = json.dumps({key: environ.get(key) for key in ("SCRIPT_NAME", "PATH_INFO", "REMOTE_ADDR",
                                                          "REMOTE_PORT")}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    body = json.dumps({"root_path": scope.get("root_path"), "path": scope["path"],
                       "client": list(scope.get("client") or [])}).encode()
    status = 404 if scope["path"].endswith("/status") else 200
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
