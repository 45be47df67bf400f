"""--request-timeout end to end: real masters, real workers, real HTTP, requests stuck for 30 s.

Each worker class stops its own overdue request; these tests check what the client gets, what
the error log says (the stack naming the app's function, the request line, the worker's pid),
what becomes of the worker, and what /metrics counts (read with prometheus_client's parser).
"""

from __future__ import annotations

import http.client
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import wait_until
from control_helpers import call
from prometheus_client.parser import text_string_to_metric_families

STUCK_LINE = (r"Request timeout \(pid:{pid}\): GET /stuck HTTP/1\.1 from 127\.0\.0\.1 ran at least [0-9.]+ s, "
              r"over --request-timeout 2")


def timed_get(port: int, path: str, timeout: float = 40.0) -> tuple[int, bytes, float]:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read(), time.monotonic() - started
    finally:
        conn.close()


def finished_get(port: int, path: str) -> tuple[tuple[int, bytes, float], float]:
    """`timed_get`, and when its answer was read in full."""
    result = timed_get(port, path)
    return result, time.monotonic()


def metrics(master: Any) -> dict[str, float]:
    sock = next(a for i, a in enumerate(master.args) if i and master.args[i - 1] == "--control-socket")
    status, _, data = call(sock, "GET", "/metrics")
    assert status == 200
    return {sample.name + repr(sorted(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(data.decode()) for sample in family.samples}


def assert_counted(master: Any, count: float) -> None:
    """The master reads the slots once a housekeeping pass (up to a second after the worker wrote)."""
    wait_until(lambda: metrics(master)["arbiter_request_timeouts_total[]"] == count, timeout=5,
               what=f"arbiter_request_timeouts_total == {count}")


def assert_stuck_request_answered_504_beside_others(master: Any, pid: int) -> None:
    """/stuck gets its 504 within 4 s, while requests on the same worker are served as it
    waits, as it is stopped, and after, all by worker `pid` (a worker that serves on)."""
    with ThreadPoolExecutor(4) as pool:
        stuck = pool.submit(timed_get, master.port, "/stuck")
        during = [pool.submit(timed_get, master.port, "/sleep?s=0.5") for _ in range(3)]
        for future in during:
            status, body, _ = future.result()
            assert status == 200 and pid_of(body) == pid
        status, body, took = stuck.result()
        assert status == 504 and b"Gateway Timeout" in body and took < 4.0, (status, took)
        after = [pool.submit(timed_get, master.port, "/") for _ in range(3)]
        assert all(f.result()[0] == 200 and pid_of(f.result()[1]) == pid for f in after)


def pid_of(body: bytes) -> int:
    match = re.match(rb"pid=(\d+)", body)
    assert match, body
    return int(match.group(1))


def test_sync_answers_504_logs_the_stack_and_is_replaced_at_once(arbiter) -> None:
    master = arbiter(["deadline_app:app", "-k", "sync", "-w", "1", "--request-timeout", "2"])
    [old] = master.wait_ready(1)
    status, body, took = timed_get(master.port, "/stuck")
    assert status == 504 and b"Gateway Timeout" in body
    assert took < 4.0, took
    log = master.wait_log(STUCK_LINE.format(pid=old) + r"; answered 504; the worker exits and is replaced")
    assert log
    text = master.log()
    assert re.search(r'in stuck_in_slow_query\n\s+time\.sleep\(seconds\)', text), text
    assert "(this request)" in text
    [new] = master.wait_workers(lambda pids: len(pids) == 1 and pids[0] != old, timeout=10)
    master.wait_log(rf"Worker \(pid:{old}\) stopped a request at --request-timeout and exited; replacing it")
    status, body, _ = timed_get(master.port, "/")
    assert status == 200 and pid_of(body) == new
    assert_counted(master, 1.0)
    assert metrics(master)["arbiter_worker_restarts_total[('reason', 'request_timeout')]"] == 1.0
    assert not re.search(rf"Worker \(pid:{old}\) (exited|was killed)", master.log())  # not reported as a crash


def test_gthread_answers_504_finishes_its_other_requests_then_is_replaced(arbiter) -> None:
    master = arbiter(["deadline_app:app", "-k", "gthread", "--threads", "4", "-w", "1",
                      "--request-timeout", "2", "--graceful-timeout", "20"])
    [old] = master.wait_ready(1)
    with ThreadPoolExecutor(4) as pool:
        stuck = pool.submit(finished_get, master.port, "/stuck")
        # Two more on the same worker, in flight when the stuck one reaches its deadline (2 s)
        # and done before their own (1.2 + 2 s).
        time.sleep(1.2)
        others = [pool.submit(finished_get, master.port, "/sleep?s=1.6") for _ in range(2)]
        (status, body, took), stuck_done = stuck.result()
        assert status == 504 and took < 4.0, (status, took)
        assert old in master.workers()
        for future in others:
            (status, body, _), done = future.result()
            assert status == 200 and pid_of(body) == old
            assert done > stuck_done  # in flight when the stuck one got its 504, then answered
    master.wait_log(STUCK_LINE.format(pid=old) + r"; answered 504; the worker will be replaced once its other")
    text = master.log()
    assert re.search(r'in stuck_in_slow_query\n\s+time\.sleep\(seconds\)', text), text
    assert re.search(r"Thread arbiter-wsgi\S* \[\d+\] \(this request\):", text), text
    assert len(re.findall(r"Thread arbiter-wsgi\S* \[\d+\]", text)) >= 3, text  # every thread's stack
    [new] = master.wait_workers(lambda pids: pids != [old] and len(pids) == 1, timeout=20)
    assert new != old
    status, body, _ = timed_get(master.port, "/")
    assert status == 200 and pid_of(body) == new
    assert_counted(master, 1.0)
    assert metrics(master)["arbiter_worker_restarts_total[('reason', 'request_timeout')]"] == 1.0


def test_gthread_cuts_a_response_that_had_begun(arbiter) -> None:
    master = arbiter(["deadline_app:app", "-k", "gthread", "--threads", "2", "-w", "1", "--request-timeout", "2"])
    master.wait_ready(1)
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", master.port, timeout=20)
    try:
        conn.request("GET", "/streamed")
        response = conn.getresponse()
        assert response.status == 200
        assert response.read1(100) == b"begun\n"
        try:
            rest = response.read()
        except http.client.IncompleteRead as exc:
            rest = exc.partial
        assert rest == b""
    finally:
        conn.close()
    assert time.monotonic() - started < 4.0
    master.wait_log(r"GET /streamed HTTP/1\.1 .*; connection cut \(the response had begun\)")


def test_requests_within_the_deadline_are_untouched(arbiter) -> None:
    master = arbiter(["deadline_app:app", "-k", "sync", "-w", "1", "--request-timeout", "2"])
    [pid] = master.wait_ready(1)
    for _ in range(3):
        status, body, _ = timed_get(master.port, "/sleep?s=1")
        assert status == 200 and pid_of(body) == pid
    assert master.workers() == [pid]
    assert "Request timeout" not in master.log()
    assert metrics(master)["arbiter_request_timeouts_total[]"] == 0.0


# -- uvicorn ------------------------------------------------------------------------------------


def test_uvicorn_cancels_the_task_answers_504_and_keeps_serving(arbiter) -> None:
    master = arbiter(["deadline_app:asgi", "-k", "uvicorn", "-w", "1", "--request-timeout", "2"])
    [pid] = master.wait_ready(1)
    assert_stuck_request_answered_504_beside_others(master, pid)
    master.wait_log(STUCK_LINE.format(pid=pid) + r"; answered 504; the worker goes on serving")
    text = master.log()
    assert re.search(r"in awaiting_slow_query\n\s+await asyncio\.sleep\(seconds\)", text), text
    assert "Exception in ASGI application" not in text and " 500 " not in text
    assert master.workers() == [pid]
    assert_counted(master, 1.0)


@pytest.mark.parametrize("path, where", [("/stuck", r"in stuck\n\s+await awaiting_slow_query\(30\)"),
                                         ("/blocking", r"in blocking\n\s+stuck_in_slow_query\(30\)")])
def test_uvicorn_fastapi_endpoint_gets_its_504_without_a_traceback(arbiter, path: str, where: str) -> None:
    """Through FastAPI and a BaseHTTPMiddleware (anyio task groups between uvicorn and the
    endpoint): the 504, the endpoint in the log, no "Exception in ASGI application"."""
    master = arbiter(["deadline_app:fastapi_app", "-k", "uvicorn", "-w", "1", "--request-timeout", "1"])
    [pid] = master.wait_ready(1)
    status, body, took = timed_get(master.port, path)
    assert status == 504 and b"Gateway Timeout" in body and took < 3.0, (status, body, took)
    assert timed_get(master.port, "/")[0] == 200
    master.wait_log(rf"Request timeout \(pid:{pid}\): GET {path} HTTP/1\.1 .*; answered 504")
    text = master.log()
    assert re.search(where, text), text
    assert "Exception in ASGI application" not in text and "Traceback" not in text, text
    assert master.workers() == [pid]


def test_uvicorn_access_log_shows_the_504_the_watcher_sent(arbiter) -> None:
    """The watcher answers through uvicorn's cycle, not through the access log's wrapper: the
    line must still say 504, and a served request beside it its own 200."""
    master = arbiter(["deadline_app:asgi", "-k", "uvicorn", "-w", "1", "--request-timeout", "1",
                      "--access-logfile", "-", "--access-logformat", '"%(r)s" %(s)s'])
    [pid] = master.wait_ready(1)
    status, _, _ = timed_get(master.port, "/stuck")
    assert status == 504
    assert timed_get(master.port, "/")[0] == 200
    master.wait_log(r'"GET /stuck HTTP/1\.1" 504')
    master.wait_log(r'"GET / HTTP/1\.1" 200')
    assert master.workers() == [pid]


def test_uvicorn_sync_endpoint_in_a_thread_gets_its_504_and_its_thread_in_the_log(arbiter) -> None:
    master = arbiter(["deadline_app:asgi", "-k", "uvicorn", "-w", "1", "--request-timeout", "2"])
    [pid] = master.wait_ready(1)
    status, _, took = timed_get(master.port, "/blocking")
    assert status == 504 and took < 4.0
    master.wait_log(r"GET /blocking HTTP/1\.1 from 127\.0\.0\.1 ran at least [0-9.]+ s, "
                    r"over --request-timeout 2; answered 504")
    text = master.log()
    assert "Other threads (a sync endpoint run in a thread keeps running)" in text
    assert re.search(r"in stuck_in_slow_query\n\s+time\.sleep\(seconds\)", text), text
    status, body, _ = timed_get(master.port, "/")
    assert status == 200 and pid_of(body) == pid


def test_uvicorn_cuts_a_response_that_had_begun_without_a_traceback(arbiter) -> None:
    master = arbiter(["deadline_app:asgi", "-k", "uvicorn", "-w", "1", "--request-timeout", "2"])
    [pid] = master.wait_ready(1)
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", master.port, timeout=20)
    try:
        conn.request("GET", "/streamed")
        response = conn.getresponse()
        assert response.status == 200 and response.read1(100) == b"begun\n"
        try:
            response.read()
            complete = True
        except http.client.IncompleteRead:
            complete = False
        assert not complete
    finally:
        conn.close()
    assert time.monotonic() - started < 4.0
    master.wait_log(r"GET /streamed HTTP/1\.1 .*; connection cut \(the response had begun\)")
    assert "Exception in ASGI application" not in master.log()
    assert master.workers() == [pid]


# -- the race between the app and the deadline, on a real socket pair ---------------------------


def _in_flight(timeout: float = 30.0, one: bool = False, threads: bool = True) -> tuple[Any, Any, socket.socket]:
    """A request in flight on one end of a real socket pair, as a worker's handler begins it."""
    from arbiter.config.settings import Config
    from arbiter.web.http.connection import Connection, ListenerInfo
    from arbiter.web.http.deadlines import Deadlines, OneDeadline
    from arbiter.web.http.parser import Limits, Request
    from arbiter.web.http.response import Response

    ours, client = socket.socketpair()
    ours.setblocking(False)
    conn = Connection(ours, None, ListenerInfo(ours, "x", "80", True), Limits.from_config(Config()), 10.0, False)
    req = Request()
    req.method, req.uri = "GET", "/stuck"
    resp = Response(conn, req, True, None)
    deadlines = OneDeadline(timeout) if one else Deadlines(timeout, connections=lambda: [conn], threads=threads)
    deadlines.begin(resp)
    return deadlines, resp, client


def _overdue(deadlines: Any, timeout: float = 30.0) -> list[Any]:
    """The watcher's looks, never early, then once the request is due. The sync worker's kind
    knows when its request began; the table counts from the look that first saw each request."""
    from arbiter.web.http.deadlines import OneDeadline

    if isinstance(deadlines, OneDeadline):
        started = deadlines._started
        assert deadlines.until_due(started) == timeout  # the watcher sleeps until then
        assert deadlines.overdue(started + timeout - 0.01) == []
        assert deadlines.until_due(started + timeout + 0.01) == 0
        # + 0.01: (t + timeout) - t can come out a hair under `timeout` in floating point.
        return deadlines.overdue(started + timeout + 0.01)  # type: ignore[no-any-return]
    now = time.monotonic()
    assert deadlines.overdue(now) == []  # first sight
    assert deadlines.overdue(now + timeout - 0.01) == []  # never early
    return deadlines.overdue(now + timeout + 0.01)  # type: ignore[no-any-return]


def test_the_sync_watcher_sleeps_until_the_request_in_flight_is_due() -> None:
    """One wake-up per deadline, not four a second: with nothing in flight, a whole timeout
    (a request that starts meanwhile is due later still); else until that request's deadline."""
    deadlines, resp, client = _in_flight(timeout=10.0, one=True)
    try:
        started = deadlines._started
        assert deadlines.until_due(started + 4) == pytest.approx(6)
        deadlines.end(resp)
        assert deadlines.until_due(started + 4) == 10
        assert deadlines.overdue(started + 100) == []
    finally:
        resp.conn.close()
        client.close()


def _read_all(client: socket.socket) -> bytes:
    received = b""
    while chunk := client.recv(4096):
        received += chunk
    return received


KINDS = [pytest.param({}, id="table"), pytest.param({"one": True}, id="one-at-a-time"),
         pytest.param({"threads": False}, id="greenlets")]


@pytest.mark.parametrize("kind", KINDS)
def test_an_expired_request_is_answered_504_once_and_the_app_can_no_longer_send(kind: dict[str, bool]) -> None:
    from arbiter.web.http.errors import ClientDisconnected

    deadlines, resp, client = _in_flight(**kind)
    try:
        [entry] = _overdue(deadlines)
        assert entry.resp is resp and entry.request_line == "GET /stuck HTTP/1.1" and entry.ran >= 30
        assert deadlines.expire(entry) == "answered 504"
        if kind.get("threads", True):
            # Fenced: what the app's thread sends now fails, and never reaches the client.
            with pytest.raises(ClientDisconnected):
                resp.conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        received = _read_all(client)  # the 504, then end of stream
        assert received.startswith(b"HTTP/1.1 504 Gateway Timeout\r\n") and b"Connection: close" in received
        assert received.count(b"HTTP/1.1") == 1
        assert deadlines.overdue(time.monotonic() + 120) == []  # expired once, no longer watched
        assert deadlines.end(resp) == "504"  # the worker learns its response was taken
    finally:
        resp.conn.close()
        client.close()


@pytest.mark.parametrize("kind", KINDS)
def test_a_response_already_begun_is_cut_not_answered_twice(kind: dict[str, bool]) -> None:
    deadlines, resp, client = _in_flight(**kind)
    try:
        resp.headers_sent = True  # the app's head goes out first
        resp.conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nbeg")
        [entry] = _overdue(deadlines)
        assert deadlines.expire(entry) == "connection cut (the response had begun)"
        assert _read_all(client) == b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nbeg"  # no 504 after it
        assert deadlines.end(resp) == ""  # cut: not kept alive
    finally:
        resp.conn.close()
        client.close()


@pytest.mark.parametrize("kind", KINDS)
def test_a_request_that_ends_before_its_watcher_acts_is_left_alone(kind: dict[str, bool]) -> None:
    """The watcher saw it overdue, then the request ended before the watcher took it: nothing
    is sent, the connection stays open, and the worker carries on (no 504, no exit)."""
    deadlines, resp, client = _in_flight(**kind)
    try:
        [entry] = _overdue(deadlines)
        resp.conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        assert deadlines.end(resp) is None  # ended in time, as far as it knows
        assert deadlines.expire(entry) is None  # the watcher comes late: nothing done
        client.setblocking(False)
        assert client.recv(4096) == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        with pytest.raises(BlockingIOError):
            client.recv(4096)  # no 504 and no end of stream: the connection is still open
    finally:
        resp.conn.close()
        client.close()


def test_a_new_request_is_not_timed_from_an_earlier_one_at_the_same_address() -> None:
    """Ids of objects are reused: a request that begins where an ended one lived (same id) is
    timed from its own first sight, not the earlier one's."""
    from arbiter.web.http.response import Response

    deadlines, resp, client = _in_flight()
    try:
        now = time.monotonic()
        assert deadlines.overdue(now) == []
        deadlines.end(resp)
        newer = Response(resp.conn, resp.req, True, None)
        deadlines.begin(newer)
        deadlines._seen[id(newer)] = (resp, now)  # as if `resp` had been seen at newer's address
        assert deadlines.overdue(now + 20) == []  # first sight of `newer`
        assert deadlines.overdue(now + 49) == []
        assert [e.resp for e in deadlines.overdue(now + 50.5)] == [newer]
    finally:
        resp.conn.close()
        client.close()


def test_requests_in_flight_are_marked_on_their_connection_only_while_they_run() -> None:
    deadlines, resp, client = _in_flight()
    try:
        assert resp.conn.answering is resp and resp.conn.runner is not None
        assert deadlines.end(resp) is None
        assert resp.conn.answering is None
        now = time.monotonic()
        assert deadlines.overdue(now) == [] and deadlines.overdue(now + 60) == []
    finally:
        resp.conn.close()
        client.close()


# -- gevent -------------------------------------------------------------------------------------


def test_gevent_kills_the_greenlet_answers_504_and_keeps_serving(arbiter) -> None:
    master = arbiter(["deadline_app:app", "-k", "gevent", "-w", "1", "--request-timeout", "2"])
    [pid] = master.wait_ready(1)
    assert_stuck_request_answered_504_beside_others(master, pid)
    master.wait_log(STUCK_LINE.format(pid=pid) + r"; answered 504; the worker goes on serving")
    text = master.log()
    assert re.search(r"\(this request\):\n(.*\n)*?.*in stuck_in_slow_query\n\s+time\.sleep\(seconds\)", text), text
    assert master.workers() == [pid]
    assert_counted(master, 1.0)
