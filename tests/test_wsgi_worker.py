"""The sync, gthread and gevent workers, end to end: a forked worker on 127.0.0.1:0, raw HTTP bytes."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
from http_corpus import LLHTTP_REFUSES, LLHTTP_STATUS, WRAPPER_REFUSES
from http_helpers import Client, app, get, request, serve, wait_until

from arbiter.web.scoreboard import SlotState

WORKERS = ["sync", "gthread", "gevent"]


@pytest.fixture(params=WORKERS)
def worker(request: pytest.FixtureRequest):
    with serve(app, request.param, threads=4) as served:
        yield served


@pytest.fixture(scope="module", params=WORKERS)
def shared_worker(request: pytest.FixtureRequest):
    """One worker of each class for the refusal corpora (a hundred-odd inputs): every test
    there leaves it serving and checks that it does, so sharing it only makes that check
    stronger (a refusal that broke the worker fails the next test too)."""
    with serve(app, request.param, threads=4) as served:
        yield served


def marks(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


# -- connections ------------------------------------------------------------------------------------


def test_keep_alive_serves_several_requests_on_one_connection(worker) -> None:
    with worker.connect() as sock:
        client = Client(sock)
        ports = set()
        for _ in range(3):
            client.send(b"GET /environ HTTP/1.1\r\nHost: t\r\n\r\n")
            reply = client.read_response()
            assert reply.status == 200 and reply.header("connection") is None
            ports.add(json.loads(reply.body)["REMOTE_PORT"])
        assert ports == {str(sock.getsockname()[1])}


def test_pipelined_requests_are_answered_in_order(worker) -> None:
    with worker.connect() as sock:
        client = Client(sock)
        client.send(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nfirst"
            b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n"
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nthird\r\n0\r\n\r\n"
            b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        bodies = [client.read_response().body for _ in range(4)]
        assert bodies == [b"first", b"one,two,three", b"third", b"hello"]
        assert client.at_eof()


def test_connection_close_is_honoured(worker) -> None:
    with worker.connect() as sock:
        client = Client(sock)
        client.send(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        reply = client.read_response()
        assert reply.header("connection") == "close" and reply.body == b"hello"
        assert client.at_eof()


def test_http10_keep_alive_only_when_asked(worker) -> None:
    with worker.connect() as sock:
        client = Client(sock)
        client.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        reply = client.read_response()
        assert reply.head.startswith(b"HTTP/1.0 200 OK\r\n") and reply.header("connection") == "keep-alive"
        client.send(b"GET /stream HTTP/1.0\r\n\r\n")
        reply = client.read_response()  # no length known: HTTP/1.0 ends the body by closing
        assert reply.body == b"one,two,three" and reply.header("transfer-encoding") is None
        assert reply.header("connection") == "close"


def test_idle_keep_alive_connection_is_closed_after_keepalive() -> None:
    with serve(app, "sync", keepalive=0.3) as served, served.connect() as sock:
        client = Client(sock)
        client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert client.read_response().status == 200
        started = time.monotonic()
        assert client.at_eof(timeout=3.0)
        assert 0.2 < time.monotonic() - started < 2.0


# -- request bodies ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["read", "read3", "readline", "readlines", "iter"])
def test_content_length_body_through_wsgi_input(worker, mode: str) -> None:
    body = b"line one\nline two\nlast"
    reply = request(worker, b"POST /echo?%s HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n%s" % (
        mode.encode(), len(body), body))
    expected = {
        "read": body,
        "read3": b"|".join(body[i:i + 3] for i in range(0, len(body), 3)),
    }.get(mode, b"line one\n|line two\n|last")
    assert reply.body == expected


def test_chunked_body_arriving_slowly_is_streamed(worker) -> None:
    with worker.connect() as sock:
        client = Client(sock)
        client.send(b"POST /echo?readline HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        for piece in (b"4\r\nab\nc\r\n", b"3\r\nd\ne\r\n", b"0\r\n\r\n"):
            time.sleep(0.05)
            client.send(piece)
        assert client.read_response().body == b"ab\n|cd\n|e"


def test_expect_100_continue_is_answered_when_the_app_reads(worker) -> None:
    with worker.connect() as sock:
        client = Client(sock)
        client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        assert client.read_until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        client.send(b"data")
        reply = client.read_response()
        assert reply.body == b"data" and reply.header("connection") is None


def test_expect_100_continue_without_reading_closes_instead(worker) -> None:
    with worker.connect() as sock:
        client = Client(sock)
        client.send(b"POST /ignore-body HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n")
        reply = client.read_response()
        assert reply.status == 200 and reply.header("connection") == "close"


def test_unread_body_is_dropped_and_the_connection_kept(worker) -> None:
    with worker.connect() as sock:
        client = Client(sock)
        client.send(b"POST /ignore-body HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n01234")
        assert client.read_response().header("connection") is None
        client.send(b"56789GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert client.read_response().body == b"hello"


def test_huge_unread_body_closes_the_connection(worker) -> None:
    with worker.connect() as sock:
        client = Client(sock)
        client.send(b"POST /ignore-body HTTP/1.1\r\nHost: t\r\nContent-Length: 100000000\r\n\r\nxx")
        assert client.read_response().header("connection") == "close"


# -- responses ----------------------------------------------------------------------------------------


def test_head_sends_no_body_but_keeps_content_length(worker) -> None:
    with worker.connect() as sock:
        client = Client(sock)
        client.send(b"HEAD / HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n")
        head = client.read_response("HEAD")
        assert head.header("content-length") == "5" and head.body == b""
        assert client.read_response().body == b"hello"  # the next response starts right after


def test_write_callable_and_chunked_framing(worker) -> None:
    reply = get(worker, "/write")
    assert reply.header("transfer-encoding") == "chunked" and reply.body == b"from-write,from-iterable"


def test_headers_wait_for_the_first_non_empty_chunk_and_date_server_are_added(worker) -> None:
    reply = get(worker, "/stream")
    assert reply.body == b"one,two,three"
    assert reply.header("server") == "arbiter" and reply.header("date", ).endswith("GMT")


def test_204_has_no_body_and_no_framing(worker) -> None:
    with worker.connect() as sock:
        client = Client(sock)
        client.send(b"GET /empty HTTP/1.1\r\nHost: t\r\n\r\nGET / HTTP/1.1\r\nHost: t\r\n\r\n")
        reply = client.read_response()
        assert reply.status == 204 and reply.header("transfer-encoding") is None
        assert client.read_response().body == b"hello"


def test_start_response_exc_info_replaces_unsent_headers(worker) -> None:
    reply = get(worker, "/exc-info")
    assert reply.status == 503 and reply.body == b"oops"


def test_file_wrapper_uses_the_file_from_its_position(worker, tmp_path: Path) -> None:
    data = bytes(range(256)) * 1000
    path = tmp_path / "blob"
    path.write_bytes(data)
    reply = get(worker, "/file", f"X-File: {path}\r\nX-Offset: 1000\r\n")
    assert reply.header("content-length") == str(len(data) - 1000) and reply.body == data[1000:]
    reply = get(worker, "/file?bytesio")  # no fileno: iterated in blocks instead
    assert reply.body == b"0123456789" * 1000


@pytest.mark.parametrize("path", ["/bad-header", "/bad-header-name", "/bad-status", "/str-body"])
def test_invalid_response_head_becomes_500_never_a_split_response(worker, path: str) -> None:
    reply = get(worker, path)
    assert reply.status == 500 and b"pwned" not in reply.head and reply.header("connection") == "close"
    assert get(worker).body == b"hello"


# -- close() is always called -------------------------------------------------------------------------


@pytest.mark.parametrize("path,status", [("/closing", 200), ("/stream", 200), ("/fail-before-body", 500)])
def test_close_is_called(worker, tmp_path: Path, path: str, status: int) -> None:
    mark = tmp_path / "mark"
    assert get(worker, path, f"X-Mark: {mark}\r\n").status == status
    wait_until(lambda: marks(mark) == ["closed"], what="close()")


def test_app_failing_mid_body_cuts_the_response_and_closes(worker, tmp_path: Path) -> None:
    mark = tmp_path / "mark"
    with worker.connect() as sock:
        client = Client(sock)
        client.send(f"GET /fail-mid-body HTTP/1.1\r\nHost: t\r\nX-Mark: {mark}\r\n\r\n".encode())
        head = client.read_until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK") and b"chunked" in head
        with pytest.raises(EOFError):
            client.read_until(b"0\r\n\r\n")  # never the terminating chunk: the client sees the cut
    wait_until(lambda: marks(mark) == ["closed"], what="close()")
    assert get(worker).body == b"hello"


def test_close_is_called_when_the_client_disconnects(worker, tmp_path: Path) -> None:
    mark = tmp_path / "mark"
    sock = worker.connect()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(f"GET /slow-stream HTTP/1.1\r\nHost: t\r\nX-Mark: {mark}\r\n\r\n".encode())
    wait_until(lambda: "started" in marks(mark), what="the app to start")
    sock.recv(1024)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()  # with linger 0: a reset, as a client that vanished
    wait_until(lambda: "closed" in marks(mark), timeout=10, what="close() after the disconnect")
    assert get(worker).body == b"hello"


def test_app_exception_gives_500_and_the_worker_goes_on(worker) -> None:
    reply = get(worker, "/raise")
    assert reply.status == 500 and reply.header("connection") == "close"
    assert get(worker).status == 200


# -- malformed requests -------------------------------------------------------------------------------

MALFORMED = {
    "CL and TE": (
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    "duplicate CL": (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\nabcd", 400),
    "conflicting CL": (b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd", 400),
    "unknown coding": (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    "chunked not last": (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400),
    "gzip, chunked": (b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
    "long line": (b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: t\r\n\r\n", 414),
    "many fields": (b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"\r\n", 431),
    "large field": (b"GET / HTTP/1.1\r\nX-Big: " + b"v" * 9000 + b"\r\n\r\n", 431),
    "NUL in header": (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", 400),
    "bare CR in header": (b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", 400),
    "invalid method": (b"G(T / HTTP/1.1\r\n\r\n", 400),
    "invalid version": (b"GET / HTTP/1.7\r\n\r\n", 400),
    "HTTP/2.0 version": (b"GET / HTTP/2.0\r\n\r\n", 400),
    "obs-fold": (b"GET / HTTP/1.1\r\nX: a\r\n  b\r\n\r\n", 400),
    "bad chunk": (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_request_gets_4xx_then_close_and_the_worker_serves_on(shared_worker, name: str) -> None:
    worker = shared_worker
    data, status = MALFORMED[name]
    with worker.connect() as sock:
        client = Client(sock)
        client.send(data)
        reply = client.read_response()
        assert reply.status == status, reply
        assert reply.header("connection") == "close" and reply.body
        assert client.at_eof()
    assert get(worker).body == b"hello"


# The shared smuggling corpus (tests/http_corpus.py), end to end: exact statuses where it has them.
CORPUS = {**{name: (data, LLHTTP_STATUS.get(name)) for name, data in LLHTTP_REFUSES.items()}, **WRAPPER_REFUSES}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_smuggling_corpus_is_refused_then_close_and_the_worker_serves_on(shared_worker, name: str) -> None:
    worker = shared_worker
    data, status = CORPUS[name]
    with worker.connect() as sock:
        client = Client(sock)
        client.send(data)
        reply = client.read_response()
        assert reply.status == status if status else 400 <= reply.status < 600, reply
        assert reply.header("connection") == "close"
        assert client.at_eof()
    assert get(worker).body == b"hello"


# -- slow clients, proxies, concurrency, stopping -----------------------------------------------------


def test_forty_slow_heads_do_not_delay_a_normal_request(worker) -> None:
    slow = [worker.connect() for _ in range(40)]
    stop = threading.Event()

    def trickle() -> None:
        for byte in b"GET / HTTP/1.1\r\nHost: slow\r\nX-Pad: " + b"p" * 100:
            for sock in slow:
                sock.send(bytes([byte]))
            if stop.wait(0.1):
                return

    thread = threading.Thread(target=trickle)
    thread.start()
    try:
        time.sleep(0.3)  # let the trickle get going: the head of every slow client is now partial
        for _ in range(3):
            started = time.monotonic()
            assert get(worker, timeout=2).body == b"hello"
            assert time.monotonic() - started < 1.0
    finally:
        stop.set()
        thread.join()
        for sock in slow:
            sock.close()


@pytest.mark.parametrize("allow,expected_addr,expected_scheme", [
    ("127.0.0.1", "203.0.113.7", "https"),
    ("10.9.9.9", "127.0.0.1", "http"),
])
def test_forwarded_headers_only_from_trusted_peers(allow: str, expected_addr: str, expected_scheme: str) -> None:
    with serve(app, "sync", forwarded_allow_ips=(allow,)) as served:
        reply = get(served, "/environ", "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n")
        environ = json.loads(reply.body)
        assert environ["REMOTE_ADDR"] == expected_addr
        assert environ["wsgi.url_scheme"] == expected_scheme
        assert environ["HTTP_X_FORWARDED_FOR"] == "203.0.113.7"


def test_gthread_runs_two_slow_requests_at_once() -> None:
    with serve(app, "gthread", threads=2) as served:
        replies = []
        started = time.monotonic()
        threads = [threading.Thread(target=lambda: replies.append(get(served, "/sleep", timeout=5))) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [r.body for r in replies] == [b"slept", b"slept"]
        assert time.monotonic() - started < 0.95  # two 0.5 s requests: 1 s or more if serialised


def test_environ_is_complete(worker) -> None:
    reply = get(worker, "/environ/a%2Fb%C3%A9?x=%20y", "Content-Type: text/x\r\nX-Dup: 1\r\nX-Dup: 2\r\n")
    env = json.loads(reply.body)
    assert env["REQUEST_METHOD"] == "GET" and env["SCRIPT_NAME"] == ""
    assert env["PATH_INFO"] == "/environ/a/b\u00c3\u00a9"  # percent-decoded bytes as latin-1
    assert env["RAW_URI"] == "/environ/a%2Fb%C3%A9?x=%20y" and env["QUERY_STRING"] == "x=%20y"
    assert env["CONTENT_TYPE"] == "text/x" and env["HTTP_X_DUP"] == "1,2" and env["HTTP_HOST"] == "test"
    assert env["SERVER_NAME"] == "127.0.0.1" and env["SERVER_PORT"] == str(worker.port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1" and env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["wsgi.version"] == [1, 0] and env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multiprocess"] is True and env["wsgi.run_once"] is False
    assert env["wsgi.input_terminated"] is True
    assert env["wsgi.multithread"] is (worker.worker_name in ("gthread", "gevent"))


@pytest.mark.parametrize("kind", WORKERS)
def test_graceful_stop_finishes_the_request_in_flight(kind: str, tmp_path: Path) -> None:
    mark = tmp_path / "mark"
    with serve(app, kind, graceful_timeout=5, keepalive=1) as served:
        idle = served.connect()
        idle_client = Client(idle)
        idle_client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert idle_client.read_response().header("connection") is None  # kept alive, now idle
        with served.connect() as sock:
            client = Client(sock)
            client.send(f"GET /sleep?0.5 HTTP/1.1\r\nHost: t\r\nX-Mark: {mark}\r\n\r\n".encode())
            wait_until(lambda: "started" in marks(mark), what="the app to start")
            served.terminate()
            wait_until(lambda: served.state() == SlotState.DRAINING, what="DRAINING")
            # A request that arrives on an idle connection while draining is answered, not cut.
            idle_client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            reply = idle_client.read_response()
            assert reply.body == b"hello" and reply.header("connection") == "close"
            assert idle_client.at_eof()
            reply = client.read_response()
            assert reply.body == b"slept" and reply.header("connection") == "close"
        idle.close()
        assert served.wait_exit() == 0


@pytest.mark.parametrize("kind", WORKERS)
def test_draining_worker_closes_idle_connections_after_their_keepalive(kind: str) -> None:
    with serve(app, kind, graceful_timeout=10, keepalive=0.5) as served, served.connect() as sock:
        client = Client(sock)
        client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert client.read_response().status == 200
        started = time.monotonic()
        served.terminate()
        assert client.at_eof(timeout=5)
        assert served.wait_exit() == 0
        assert time.monotonic() - started < 3  # the keep-alive grace, not the graceful timeout
