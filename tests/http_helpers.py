"""Run a WSGI worker class in a forked child on a kernel-chosen port, and talk raw HTTP to it;
and the WSGI app those tests serve.

The listening socket is bound (127.0.0.1:0) in the test process, so the port is known before
the fork; the child builds the real worker (real Config, real scoreboard slot) and serves until
it is told to stop. `ServedWorker.stop()` (always called by the context manager) sends SIGTERM
to that child only, waits for it with a deadline, SIGKILLs it if it is still there, and reaps it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

from conftest import wait_until as _wait_until

from arbiter import logs
from arbiter.config.settings import Config
from arbiter.web.scoreboard import Scoreboard, SlotState


def wait_until(predicate: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
    """The suite's one polling helper (conftest.py), with this module's default timeout."""
    return _wait_until(predicate, timeout=timeout, interval=0.01, what=what)


class ServedWorker:
    """A worker process serving `app`; `port` is where it listens."""

    def __init__(self, app: Callable[..., Any], worker: str = "sync", family: int = socket.AF_INET,
                 unix_path: str | None = None, **settings: Any) -> None:
        self.board = Scoreboard(slots=4)
        self.slot = self.board.claim(generation=1)
        if unix_path:
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.listener.bind(unix_path)
            self.address: Any = unix_path
        else:
            self.listener = socket.socket(family, socket.SOCK_STREAM)
            self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.listener.bind(("127.0.0.1", 0) if family == socket.AF_INET else ("::1", 0))
            self.address = self.listener.getsockname()[:2]
        self.listener.listen(256)
        self.port = self.address[1] if not unix_path else 0
        self.cfg = Config(**settings)
        self.worker_name = worker
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the child
            self._child(app)
        self.board.bind_pid(self.slot, self.pid)

    def _child(self, app: Callable[..., Any]) -> None:
        code = 0
        try:
            logs.setup(self.cfg)
            from arbiter.web import workers

            cls = workers.load(self.worker_name)
            cls.prepare_process()  # gevent patches here; the test app was imported before, as under preload
            worker = cls(age=1, ppid=os.getppid(), sockets=[self.listener], app=app, cfg=self.cfg,
                         slot=self.slot, generation=1)
            worker.init_process()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 0
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)

    def wait_ready(self, timeout: float = 5.0) -> None:
        wait_until(lambda: self.board.read(self.slot.index).state == SlotState.READY or self.exited(),
                   timeout, what="the worker to be ready")
        assert not self.exited(), "the worker exited during start-up"

    def state(self) -> SlotState:
        return self.board.read(self.slot.index).state

    def requests(self) -> int:
        return self.board.read(self.slot.index).requests

    _status: int | None = None

    def exited(self) -> bool:
        if self._status is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self._status = status
        return self._status is not None

    def exit_code(self) -> int | None:
        return os.waitstatus_to_exitcode(self._status) if self._status is not None else None

    def terminate(self) -> None:
        if not self.exited():
            os.kill(self.pid, signal.SIGTERM)

    def wait_exit(self, timeout: float = 5.0) -> int | None:
        wait_until(self.exited, timeout, what="the worker to exit")
        return self.exit_code()

    def stop(self) -> None:
        try:
            if not self.exited():
                os.kill(self.pid, signal.SIGTERM)
                deadline = time.monotonic() + 3.0
                while not self.exited() and time.monotonic() < deadline:
                    time.sleep(0.01)
            if not self.exited():
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                self._status = 9
        finally:
            self.listener.close()
            self.board.close()

    def connect(self, timeout: float = 5.0) -> socket.socket:
        if isinstance(self.address, str):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(self.address)
            return sock
        return socket.create_connection(self.address, timeout=timeout)


@contextlib.contextmanager
def serve(app: Callable[..., Any], worker: str = "sync", **settings: Any) -> Iterator[ServedWorker]:
    served = ServedWorker(app, worker, **settings)
    try:
        served.wait_ready()
        yield served
    finally:
        served.stop()


# -- raw HTTP on the client side ------------------------------------------------------------------


class Reply:
    """One parsed response: status code, headers (lowercased names), body bytes, raw head."""

    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes, head: bytes) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body
        self.head = head

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name.lower():
                return value
        return None

    def __repr__(self) -> str:
        return f"<Reply {self.status} {self.headers} {self.body[:80]!r}>"


class Client:
    """Reads responses off a raw socket, one at a time, keeping the surplus for the next."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buf += data
        return True

    def read_until(self, marker: bytes) -> bytes:
        while marker not in self.buf:
            if not self._fill():
                raise EOFError(f"connection closed before {marker!r}; got {self.buf!r}")
        head, _, self.buf = self.buf.partition(marker)
        return head + marker

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not self._fill():
                raise EOFError(f"connection closed after {len(self.buf)} of {n} bytes")
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_response(self, method: str = "GET") -> Reply:
        head = self.read_until(b"\r\n\r\n")
        lines = head[:-4].decode("latin-1").split("\r\n")
        _, code, *reason = lines[0].split(" ", 2)
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        reply = Reply(int(code), reason[0] if reason else "", headers, b"", head)
        if method == "HEAD" or reply.status in (204, 304) or reply.status < 200:
            return reply
        length = reply.header("content-length")
        if reply.header("transfer-encoding") == "chunked":
            body = b""
            while True:
                size = int(self.read_until(b"\r\n")[:-2].split(b";")[0], 16)
                if size == 0:
                    self.read_until(b"\r\n")
                    break
                body += self.read_exact(size)
                assert self.read_exact(2) == b"\r\n"
            reply.body = body
        elif length is not None:
            reply.body = self.read_exact(int(length))
        else:
            while self._fill():
                pass
            reply.body, self.buf = self.buf, b""
        return reply

    def at_eof(self, timeout: float = 2.0) -> bool:
        """True if the server closed the connection (after any buffered bytes)."""
        self.sock.settimeout(timeout)
        try:
            return not self.buf and self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


def request(served: ServedWorker, raw: bytes, method: str = "GET", timeout: float = 5.0) -> Reply:
    """Send `raw` on a new connection and read one response."""
    with served.connect(timeout) as sock:
        client = Client(sock)
        client.send(raw)
        return client.read_response(method)


def get(served: ServedWorker, path: str = "/", headers: str = "", timeout: float = 5.0) -> Reply:
    return request(served, f"GET {path} HTTP/1.1\r\nHost: test\r\n{headers}\r\n".encode("latin-1"), timeout=timeout)


# -- the app the worker tests serve ------------------------------------------------------------------
# It runs inside the forked worker and routes on PATH_INFO. Cross-process observations (was
# close() called? has the app started?) go through a file named in the request's X-Mark header.


def _mark(environ: dict[str, Any], text: str) -> None:
    path = environ.get("HTTP_X_MARK")
    if path:
        with open(path, "a") as handle:
            handle.write(text + "\n")


class Closing:
    """A response iterable that records its close(), and can fail or dawdle."""

    def __init__(self, environ: dict[str, Any], chunks: list[bytes], fail_at: int = -1, delay: float = 0.0) -> None:
        self.environ = environ
        self.chunks = chunks
        self.fail_at = fail_at
        self.delay = delay

    def __iter__(self) -> Iterator[bytes]:
        for index, chunk in enumerate(self.chunks):
            if index == self.fail_at:
                raise RuntimeError("boom in the middle of the body")
            if self.delay:
                time.sleep(self.delay)
            yield chunk

    def close(self) -> None:
        _mark(self.environ, "closed")


def _read_body(inp: Any, mode: str) -> bytes:
    if mode == "read":
        return inp.read()
    if mode == "read3":
        parts = []
        while True:
            part = inp.read(3)
            if not part:
                return b"|".join(parts)
            parts.append(part)
    if mode == "readline":
        return b"|".join(iter(inp.readline, b""))
    if mode == "readlines":
        return b"|".join(inp.readlines())
    if mode == "iter":
        return b"|".join(line for line in inp)
    return b""


def app(environ: dict[str, Any], start_response: Any) -> Any:
    path = environ["PATH_INFO"]
    query = environ["QUERY_STRING"]
    plain = [("Content-Type", "text/plain")]
    if path == "/echo":
        body = _read_body(environ["wsgi.input"], query or "read")
        start_response("200 OK", plain + [("Content-Length", str(len(body)))])
        return [body]
    if path.startswith("/environ"):
        keys = {k: v for k, v in environ.items() if isinstance(v, (str, bool, int, tuple))}
        body = json.dumps(keys).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if path == "/ignore-body":
        start_response("200 OK", plain + [("Content-Length", "2")])
        return [b"ok"]
    if path == "/write":
        write = start_response("200 OK", plain)
        write(b"from-write,")
        return [b"from-iterable"]
    if path == "/stream":
        start_response("200 OK", plain)
        return Closing(environ, [b"one,", b"", b"two,", b"three"])
    if path == "/closing":
        start_response("200 OK", plain + [("Content-Length", "3")])
        return Closing(environ, [b"abc"])
    if path == "/fail-before-body":
        start_response("200 OK", plain)
        return Closing(environ, [b"never"], fail_at=0)
    if path == "/fail-mid-body":
        start_response("200 OK", plain)
        return Closing(environ, [b"first", b"second"], fail_at=1)
    if path == "/raise":
        raise ValueError("the app failed")
    if path == "/slow-stream":
        _mark(environ, "started")
        start_response("200 OK", plain)
        return Closing(environ, [b"x" * 65536] * 400, delay=0.01)
    if path == "/sleep":
        _mark(environ, "started")
        time.sleep(float(query or "0.5"))
        start_response("200 OK", plain + [("Content-Length", "5")])
        return [b"slept"]
    if path == "/file":
        return _file(environ, start_response, query)
    if path == "/bad-header":
        start_response("200 OK", [("X-Evil", "a\r\nSet-Cookie: pwned=1")])
        return [b"no"]
    if path == "/bad-header-name":
        start_response("200 OK", [("X Evil", "a")])
        return [b"no"]
    if path == "/str-body":
        start_response("200 OK", plain)
        return ["not bytes"]
    if path == "/bad-status":
        start_response("200\r\nX: y", plain)
        return [b"no"]
    if path == "/exc-info":
        start_response("200 OK", plain)
        try:
            raise KeyError("x")
        except KeyError:
            import sys
            start_response("503 Service Unavailable", plain + [("Content-Length", "4")], sys.exc_info())
        return [b"oops"]
    if path == "/empty":
        start_response("204 No Content", [])
        return []
    start_response("200 OK", plain + [("Content-Length", "5")])
    return [b"hello"]


def _file(environ: dict[str, Any], start_response: Any, query: str) -> Any:
    wrapper = environ["wsgi.file_wrapper"]
    if query == "bytesio":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return wrapper(io.BytesIO(b"0123456789" * 1000), 1000)
    handle = open(environ["HTTP_X_FILE"], "rb")
    handle.seek(int(environ.get("HTTP_X_OFFSET", "0")))
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return wrapper(handle)
