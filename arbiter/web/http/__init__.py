"""The HTTP/1.x layer of the WSGI workers.

Modules, one job each:
- `parser`: request parsing on httptools (llhttp) with Gunicorn's limits, pipelining-aware;
- `rules`: what a request must be beyond llhttp's checks, and the status of each refusal;
- `connection`: a client socket, its parser, and bounded-time I/O while an app runs;
- `body`: `wsgi.input`, read from the socket on demand (Content-Length or chunked);
- `environ`: the PEP 3333 environ, and which peers may set proxy headers;
- `response`: `start_response` / `write()`, header validation, framing, bytes on the wire;
- `wsgi`: one request end to end (app call, close(), hooks, errors), and `wsgi.file_wrapper`;
- `accesslog`: Gunicorn's access log format;
- `errors`: the exceptions the layer raises.

The worker classes that drive it live in `arbiter.web.workers.sync` and `arbiter.web.workers.gthread`.
"""

from __future__ import annotations

from arbiter.web.http.errors import ClientDisconnected, InvalidResponse, RequestError
from arbiter.web.http.parser import Limits, Request, RequestParser

__all__ = ["ClientDisconnected", "InvalidResponse", "Limits", "Request", "RequestError", "RequestParser"]
