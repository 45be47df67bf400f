"""A small load client for zero-downtime tests: it records every request that does not succeed.

Keep-alive clients reuse one connection (the case a draining worker must not cut), fresh
clients open a connection per request, slow clients send requests that take a while. Traffic
goes to 127.0.0.1 only, and every client stops by itself after `max_seconds`.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field


@dataclass
class LoadResult:
    ok: int = 0
    failures: list[str] = field(default_factory=list)
    pids: set[int] = field(default_factory=set)


class Load:
    def __init__(self, port: int, keepalive: int = 4, fresh: int = 2, slow: int = 1,
                 slow_path: str = "/sleep?s=0.5", max_seconds: float = 90.0) -> None:
        self.port = port
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_seconds
        plan = [(self._keepalive, "/")] * keepalive + [(self._fresh, "/")] * fresh + [(self._keepalive, slow_path)] * slow
        self._threads = [threading.Thread(target=target, args=(path,), daemon=True) for target, path in plan]

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> LoadResult:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)
        return self.result

    def wait_for_requests(self, count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        start = self.result.ok
        while self.result.ok - start < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"load made no progress: {self.result.ok - start} ok, failures {self.result.failures[:5]}")
            time.sleep(0.02)

    def _running(self) -> bool:
        return not self._stop.is_set() and time.monotonic() < self._deadline

    def _record(self, status: int | None, body: bytes, error: str = "") -> None:
        with self._lock:
            if status == 200:
                self.result.ok += 1
                if body.startswith(b"pid="):
                    self.result.pids.add(int(body.split()[0][4:]))
            else:
                self.result.failures.append(error or f"HTTP {status}: {body[:80]!r}")

    def _keepalive(self, path: str) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while self._running():
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                body = response.read()
                self._record(response.status, body)
                if response.will_close:
                    conn.close()  # the server said Connection: close; next request reconnects
            except (OSError, http.client.HTTPException) as exc:
                self._record(None, b"", f"{type(exc).__name__}: {exc}")
                conn.close()
        conn.close()

    def _fresh(self, path: str) -> None:
        while self._running():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                conn.request("GET", path, headers={"Connection": "close"})
                response = conn.getresponse()
                self._record(response.status, response.read())
            except (OSError, http.client.HTTPException) as exc:
                self._record(None, b"", f"{type(exc).__name__}: {exc}")
            finally:
                conn.close()
