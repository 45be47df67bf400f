"""Gunicorn's request-path flags on real masters: --statsd-host (packets received by a UDP
socket the test holds), --root-path, --no-sendfile."""

from __future__ import annotations

import contextlib
import json
import re
import socket

import pytest
from conftest import wait_until


@pytest.fixture
def receiver():
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    yield sock
    sock.close()


def _packets(sock: socket.socket, seen: list[str]) -> list[str]:
    with contextlib.suppress(BlockingIOError):
        while True:
            seen.append(sock.recv(65536).decode())
    return seen


@pytest.mark.parametrize("app, kind", [("compat_app:wsgi", "sync"), ("compat_app:wsgi", "gthread"),
                                       ("compat_app:asgi", "uvicorn")])
def test_statsd_metrics_with_gunicorns_names(arbiter, receiver, app, kind):
    host = f"127.0.0.1:{receiver.getsockname()[1]}"
    master = arbiter([app, "-k", kind, "-w", "2", "--statsd-host", host, "--statsd-prefix", "shop",
                      "--dogstatsd-tags", "env:test,team:web"])
    master.wait_ready(2)
    for path in ("/a", "/b", "/status"):
        master.get(path)
    seen: list[str] = []
    tags = "|#env:test,team:web"

    def has(pattern: str) -> bool:
        return any(re.fullmatch(pattern, packet) for packet in _packets(receiver, seen))

    wait_until(lambda: has(rf"shop\.gunicorn\.workers:2\|g{re.escape(tags)}"), 10, what="the workers gauge")
    wait_until(lambda: sum(bool(re.fullmatch(rf"shop\.gunicorn\.requests:1\|c\|@1\.0{re.escape(tags)}", p))
                           for p in _packets(receiver, seen)) >= 3, 10, what="three request counts")
    assert has(rf"shop\.gunicorn\.request\.status\.200:1\|c\|@1\.0{re.escape(tags)}")
    assert has(rf"shop\.gunicorn\.request\.status\.404:1\|c\|@1\.0{re.escape(tags)}")
    assert has(rf"shop\.gunicorn\.request\.duration:\d+(\.\d+)?\|ms{re.escape(tags)}")


def test_statsd_never_blocks_without_a_listener(arbiter, receiver):
    port = receiver.getsockname()[1]
    receiver.close()  # nobody listens: sends fail at once (ECONNREFUSED) and are dropped
    master = arbiter(["compat_app:wsgi", "--statsd-host", f"127.0.0.1:{port}"])
    master.wait_ready(1)
    assert all(master.get("/x")[0] == 200 for _ in range(20))


def test_statsd_log_counter(arbiter, receiver):
    host = f"127.0.0.1:{receiver.getsockname()[1]}"
    # An ignored flag logs one warning at start: counted as gunicorn.log.warning.
    master = arbiter(["compat_app:wsgi", "--statsd-host", host, "--worker-tmp-dir", "/dev/shm"])
    master.wait_ready(1)
    seen: list[str] = []
    wait_until(lambda: "gunicorn.log.warning:1|c|@1.0" in _packets(receiver, seen), 10, what="the warning count")


@pytest.mark.parametrize("kind", ["sync", "gthread"])
def test_root_path_is_script_name_for_wsgi(arbiter, kind):
    master = arbiter(["compat_app:wsgi", "-k", kind, "--root-path", "/shop"])
    master.wait_ready(1)
    status, body = master.get("/shop/cart")
    assert status == 200
    env = json.loads(body)
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/shop", "/cart")


def test_root_path_for_asgi(arbiter):
    master = arbiter(["compat_app:asgi", "--root-path", "/shop"])
    master.wait_ready(1)
    status, body = master.get("/shop/cart")
    assert status == 200 and json.loads(body)["root_path"] == "/shop"


@pytest.mark.parametrize("flags, reads", [([], 0), (["--no-sendfile"], 1)])
def test_no_sendfile_iterates_the_file(arbiter, tmp_path, flags, reads):
    sent, log = tmp_path / "payload.bin", tmp_path / "reads.log"
    sent.write_bytes(b"x" * 100_000)
    master = arbiter(["compat_app:wsgi", *flags], env={"SENT_FILE": str(sent), "READ_LOG": str(log)})
    master.wait_ready(1)
    status, body = master.get("/file")
    assert status == 200 and body == b"x" * 100_000
    count = len(log.read_text().splitlines()) if log.exists() else 0
    assert (count > 0) == bool(reads), count


def test_backlog_metric_counts_waiting_connections(arbiter, receiver):
    host = f"127.0.0.1:{receiver.getsockname()[1]}"
    master = arbiter(["wsgi_app:application", "--statsd-host", host, "--enable-backlog-metric"])
    master.wait_ready(1)
    busy = socket.create_connection(("127.0.0.1", master.port), timeout=10)
    waiting: list[socket.socket] = []
    seen: list[str] = []

    def three_queued() -> bool:
        # While the one sync worker sleeps in the app, new connections wait in the accept queue
        # (one more per poll, in case the worker took the first ones before it slept).
        if len(waiting) < 8:
            waiting.append(socket.create_connection(("127.0.0.1", master.port), timeout=10))
        return any(re.fullmatch(r"gunicorn\.backlog:[3-9]\|g", p) for p in _packets(receiver, seen))

    try:
        busy.sendall(b"GET /sleep?s=5 HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(three_queued, 10, interval=0.2, what="a backlog of 3")
    finally:
        busy.close()
        for sock in waiting:
            sock.close()
