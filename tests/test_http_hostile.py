"""Hostile request heads against a real master and its sync / gthread worker: no input kills a worker.

Each hostile request goes on a connection of its own and must get a 4xx answer and a closed
connection; meanwhile a neighbour on a kept-alive connection to the same worker sends ordinary
requests, and every one of them must succeed, served by the same worker process throughout.
"""

from __future__ import annotations

import http.client
import socket

import pytest

from http_corpus import WORKER_KILLERS

NEIGHBOUR_REQUESTS_PER_LINE = 3


def _send_raw(port: int, data: bytes) -> bytes:
    """Send `data` on a fresh connection and read until the server closes it."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        reply = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            reply += chunk
    return reply


def _pid_of(body: bytes) -> int:
    return int(body.split()[0].split(b"=")[1])  # wsgi_app answers "pid=N path=/..."


@pytest.mark.parametrize("kind", ["sync", "gthread"])
def test_no_request_line_kills_the_worker_and_its_neighbour_is_served(arbiter, kind: str) -> None:
    threads = ["--threads", "2"] if kind == "gthread" else []  # sync with threads > 1 is gthread
    master = arbiter(["wsgi_app:app", "-w", "1", "-k", kind, *threads])
    [pid] = master.wait_ready(1)
    neighbour = http.client.HTTPConnection("127.0.0.1", master.port, timeout=5)
    served = []
    try:
        for name, data in WORKER_KILLERS.items():
            reply = _send_raw(master.port, data)
            assert reply.startswith(b"HTTP/1.1 400 "), (name, reply)
            for _ in range(NEIGHBOUR_REQUESTS_PER_LINE):
                neighbour.request("GET", "/neighbour")
                response = neighbour.getresponse()
                assert response.status == 200, name
                served.append(_pid_of(response.read()))
    finally:
        neighbour.close()
    assert set(served) == {pid}
    assert master.workers() == [pid]
    assert f"Worker (pid:{pid})" not in master.log()
