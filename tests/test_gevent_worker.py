"""The gevent worker end to end, under a real master: concurrency, reloads, smuggling, hung hubs.

The HTTP behaviour shared with sync (keep-alive, pipelining, bodies, limits, TLS, draining) is
run against gevent too in test_wsgi_worker.py and test_http_worker_extras.py.
"""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import signal
import socket
import time
from pathlib import Path

import psutil
import pytest
from conftest import http_get, wait_until
from http_corpus import LLHTTP_REFUSES, WORKER_KILLERS, WRAPPER_REFUSES
from http_helpers import Client, app, get, serve
from load import Load

from arbiter.web.scoreboard import SlotState

pytest.importorskip("gevent")

GEVENT = ["gevent_app:app", "-k", "gevent", "--log-level", "debug"]


def _burst(port: int, count: int, path: str = "/sleep?s=1") -> tuple[list[int], float]:
    """`count` requests at once, each on its own connection; their statuses and the wall time."""
    def one(_: int) -> int:
        try:
            return http_get(port, path, timeout=30)[0]
        except OSError as exc:
            return -1 if not isinstance(exc, socket.timeout) else -2

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(count) as pool:
        statuses = list(pool.map(one, range(count)))
    return statuses, time.monotonic() - started


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=10)
        self.unix_path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def _open_connections(control: Path) -> int:
    """Connections the workers hold, as their scoreboard slots say (through the control API)."""
    conn = _UnixHTTPConnection(control)
    try:
        conn.request("GET", "/v1/status")
        status = json.loads(conn.getresponse().read())
    finally:
        conn.close()
    return sum(worker["connections"] for worker in status["workers"])


def test_app_is_imported_into_a_patched_worker(arbiter):
    master = arbiter([*GEVENT, "-w", "1"])
    workers = master.wait_ready(1)
    assert b"patched=True" in master.get("/patched")[1]
    assert "Using worker: gevent" in master.log()
    # The master never loads gevent at all (its C extensions would show in its memory map).
    assert any("gevent" in m.path for m in psutil.Process(workers[0]).memory_maps())
    assert not any("gevent" in m.path for m in psutil.Process(master.pid).memory_maps())


def test_200_concurrent_one_second_requests_and_hups_fail_nothing(arbiter, tmp_path):
    master = arbiter([*GEVENT, "-w", "2", "--worker-connections", "1000"])
    master.wait_ready(2)
    statuses, elapsed = _burst(master.port, 200)
    assert statuses == [200] * 200
    # Serialised, 200 one-second requests on 2 workers would take 100 s.
    assert elapsed < 4, f"200 concurrent 1 s requests took {elapsed:.1f} s"

    control = tmp_path / "control-0.sock"
    with Load(master.port, keepalive=4, fresh=2, slow=2, slow_path="/sleep?s=0.5") as load:
        load.wait_for_requests(50)
        for round_ in range(1, 3):
            before = set(master.workers())
            with concurrent.futures.ThreadPoolExecutor(1) as side:
                burst = side.submit(_burst, master.port, 200, "/sleep?s=2")
                # HUP while the burst is in flight: the old workers must finish it.
                wait_until(lambda: _open_connections(control) >= 150, timeout=20, interval=0.02,
                           what="the burst in flight")
                master.signal(signal.SIGHUP)
                master.wait_log(r"Reload done: generation", count=round_, timeout=30)
                statuses, _ = burst.result(timeout=60)
            assert statuses == [200] * 200, f"round {round_}: {sorted(set(statuses))}"
            after = master.wait_workers(lambda w: len(w) == 2)
            assert not before & set(after), f"round {round_}: old workers still running"
            load.wait_for_requests(50)
        result = load.stop()
    assert result.failures == [], result.failures[:10]


def test_max_requests_recycles_without_failures(arbiter):
    master = arbiter([*GEVENT, "-w", "2", "--max-requests", "300", "--max-requests-jitter", "50"])
    original = set(master.wait_ready(2))
    with Load(master.port, keepalive=4, fresh=2, slow=1, slow_path="/sleep?s=0.2") as load:
        master.wait_log(r"Max requests reached", count=2, timeout=60)
        master.wait_workers(lambda w: len(w) == 2 and not original & set(w), timeout=30)
        load.wait_for_requests(100)
        result = load.stop()
    assert result.failures == [], result.failures[:10]


def test_sleeping_greenlets_are_not_a_hang_but_a_spinning_one_is(arbiter):
    master = arbiter([*GEVENT, "-w", "2", "-t", "2"])
    before = master.wait_ready(2)
    # Longer than --timeout, but waiting in a patched sleep: the hub runs, the heartbeat goes on.
    assert master.get("/sleep?s=3", timeout=10)[0] == 200
    assert "WORKER TIMEOUT" not in master.log()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(_swallow, lambda: http_get(master.port, "/spin", timeout=15))
        match = master.wait_log(r"WORKER TIMEOUT \(pid:(\d+)\)", timeout=15)[0]
    assert int(match.group(1)) in before
    after = master.wait_workers(lambda w: len(w) == 2 and set(w) != set(before), what="the hung worker replaced")
    assert len(set(after) & set(before)) == 1
    assert master.get("/")[0] == 200


def _swallow(call):
    try:
        call()
    except OSError:
        pass


# -- smuggling: whatever sync refuses, gevent refuses, with the same status ------------------------


def _status_of(port: int, data: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        reply = b""
        while b"\r\n" not in reply:
            chunk = sock.recv(4096)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 "), f"no status line for {data!r}: {reply!r}"
    return int(reply.split()[1])


def test_the_smuggling_corpus_gets_the_same_answers_from_gevent_and_sync(arbiter):
    sync = arbiter(["gevent_app:app", "-k", "sync", "-w", "1"])
    gevent = arbiter([*GEVENT, "-w", "1"])
    sync.wait_ready(1)
    gevent.wait_ready(1)
    vectors = {**LLHTTP_REFUSES, **WORKER_KILLERS, **{name: data for name, (data, _status) in WRAPPER_REFUSES.items()}}
    for name, data in sorted(vectors.items()):
        expected = _status_of(sync.port, data)
        assert 400 <= expected < 600, f"{name}: sync answered {expected}"
        if name in WRAPPER_REFUSES:
            assert expected == WRAPPER_REFUSES[name][1], name
        assert _status_of(gevent.port, data) == expected, name
    assert gevent.get("/")[0] == 200


# -- one worker, forked by the test (http_helpers.serve): timeouts and the stop -------------------


def test_incomplete_head_is_cut_off_after_the_head_timeout(monkeypatch):
    monkeypatch.setattr("arbiter.web.workers.gevent.MIN_HEAD_TIMEOUT", 0.5)  # inherited by the fork
    with serve(app, "gevent", keepalive=0.2) as served, served.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")
        started = time.monotonic()
        assert Client(sock).at_eof(timeout=5)
        assert 0.3 < time.monotonic() - started < 3


def test_silent_connection_gets_only_the_keepalive_grace_when_stopping():
    # Accepted, never a byte: normally it may stay max(keepalive, 10 s); a stop shortens that to
    # `keepalive`, as in the sync worker, so the worker does not wait 10 s to exit.
    with serve(app, "gevent", keepalive=0.3, graceful_timeout=30) as served, served.connect() as sock:
        assert get(served).status == 200  # the silent connection has been accepted by now
        started = time.monotonic()
        served.terminate()
        assert Client(sock).at_eof(timeout=8)
        assert served.wait_exit(timeout=8) == 0
        assert time.monotonic() - started < 5


def test_max_requests_asks_for_retirement_and_keeps_serving():
    with serve(app, "gevent", max_requests=2) as served:
        assert get(served).status == 200
        assert served.state() == SlotState.READY
        assert get(served).status == 200
        wait_until(lambda: served.state() == SlotState.RETIRING, what="RETIRING")
        assert get(served).status == 200  # until the master drains it
        wait_until(lambda: served.requests() == 3, what="three requests counted")


def test_graceful_timeout_leaves_a_stuck_request(tmp_path):
    mark = tmp_path / "mark"
    with serve(app, "gevent", graceful_timeout=0.3) as served, served.connect() as sock:
        sock.sendall(f"GET /sleep?30 HTTP/1.1\r\nHost: t\r\nX-Mark: {mark}\r\n\r\n".encode())
        wait_until(lambda: mark.exists(), what="the app to start")
        started = time.monotonic()
        served.terminate()
        assert served.wait_exit(timeout=5) == 0
        assert time.monotonic() - started < 3


def test_many_slow_requests_run_at_once_in_one_worker():
    with serve(app, "gevent", worker_connections=100) as served:
        socks = [served.connect() for _ in range(50)]
        try:
            for sock in socks:
                sock.sendall(b"GET /sleep?1 HTTP/1.1\r\nHost: t\r\n\r\n")
            started = time.monotonic()
            assert [Client(sock).read_response().body for sock in socks] == [b"slept"] * 50
            assert time.monotonic() - started < 5  # one after the other: 50 s
        finally:
            for sock in socks:
                sock.close()
