"""`wsgi.input`: the request body, read from the socket on demand while the app runs.

Content-Length and chunked bodies look the same here: llhttp de-chunks, and end of body is
end of file (`wsgi.input_terminated`). Nothing is read before the app asks, so an app that
refuses an upload never waits for it; `Expect: 100-continue` is answered on the first read
that has to wait for the client.
"""

from __future__ import annotations

from collections.abc import Iterator

from arbiter.web.http.connection import Connection
from arbiter.web.http.parser import Request

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Body:
    """A read-only binary stream over one request's body (PEP 3333 `wsgi.input`).

    Raises (from the read methods):
        ClientDisconnected: the client closed, failed or stalled before the body ended.
        RequestError: the body is malformed (bad chunk framing); answered with a 400.
    """

    __slots__ = ("_req", "_conn", "_scanned")

    def __init__(self, req: Request, conn: Connection) -> None:
        self._req = req
        self._conn = conn
        self._scanned = 0  # bytes of the buffer already searched for a newline

    def _fill(self) -> bool:
        """Read more of the body into the buffer; False once the body is complete."""
        req = self._req
        if req.complete:
            return False
        if req.error is not None:
            raise req.error
        if req.expect_continue and not req.continue_sent:
            req.continue_sent = True
            self._conn.send(CONTINUE)
        self._conn.read_more()
        return True

    def read(self, size: int | None = -1) -> bytes:
        buf = self._req.body
        if size is None or size < 0:
            while self._fill():
                pass
            size = len(buf)
        else:
            while len(buf) < size and self._fill():
                pass
        data = bytes(buf[:size])
        del buf[:size]  # cheap: bytearray drops a prefix by moving its start
        self._scanned = 0
        return data

    def readline(self, size: int | None = -1) -> bytes:
        buf = self._req.body
        limit = -1 if size is None else size
        while True:
            end = buf.find(b"\n", self._scanned)
            if end >= 0:
                end += 1
                break
            self._scanned = len(buf)
            if 0 <= limit <= len(buf) or not self._fill():
                end = len(buf)
                break
        if 0 <= limit < end:
            end = limit
        data = bytes(buf[:end])
        del buf[:end]
        self._scanned = 0
        return data

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines: list[bytes] = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def close(self) -> None:
        """Accepted for file-likeness; the server decides what happens to an unread rest."""
