"""WSGI test app that writes a file (`/?path=...`), to show the mode files made by an app get."""
from urllib.parse import parse_qs


def app(environ, start_response):
    path = parse_qs(environ.get("QUERY_STRING", ""))["path"][0]
    with open(path, "w") as handle:
        handle.write("written by the app\n")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\n"]
