"""The `uvicorn` worker refuses what the `sync` worker refuses, end to end through a real master.

Gunicorn's three request limits keep their meaning under `-k uvicorn`, the smuggling corpus
(tests/http_corpus.py) gets the statuses the sync worker answers, an endless header cannot grow
the worker, and chunked trailers never reach the app. Where the sync worker's parser decides a
case (the limit boundaries), the expected status is asked of that parser, in this process, so the
two worker classes cannot drift apart.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import Arbiter, wait_until
from http_corpus import LLHTTP_REFUSES, LLHTTP_STATUS, WRAPPER_REFUSES
from http_helpers import Client

from arbiter.web.http.parser import Limits, RequestParser

LIMITED = ("--limit-request-line", "100", "--limit-request-fields", "5", "--limit-request-field-size", "100")


def _start(tmp_path: Path, *extra: str) -> Arbiter:
    master = Arbiter(["asgi_app:app", "-k", "uvicorn", "-w", "1", "-b", "127.0.0.1:0",
                      "--control-socket", str(tmp_path / "control.sock"), "--log-level", "debug", *extra],
                     tmp_path)
    try:
        master.wait_ready(1)
    except BaseException:
        master.cleanup()
        raise
    return master


@pytest.fixture(scope="module")
def default_master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arbiter]:
    master = _start(tmp_path_factory.mktemp("default"))
    yield master
    master.cleanup()


@pytest.fixture(scope="module")
def limited_master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arbiter]:
    master = _start(tmp_path_factory.mktemp("limited"), *LIMITED)
    yield master
    master.cleanup()


@pytest.fixture(scope="module")
def unlimited_master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Arbiter]:
    master = _start(tmp_path_factory.mktemp("zero"), "--limit-request-line", "0", "--limit-request-fields", "0",
                    "--limit-request-field-size", "0")
    yield master
    master.cleanup()


def exchange(master: Arbiter, raw: bytes, count: int = 1, timeout: float = 10.0) -> list[int | None]:
    """Send `raw` on a new connection; the statuses of up to `count` responses (None: closed)."""
    statuses: list[int | None] = []
    with socket.create_connection(("127.0.0.1", master.port), timeout=timeout) as sock:
        client = Client(sock)
        try:
            sock.sendall(raw)
        except OSError:
            pass  # refused and closed before all of it went out: the answer may still be there
        for _ in range(count):
            try:
                statuses.append(client.read_response().status)
            except (EOFError, ConnectionResetError):
                statuses.append(None)
                break
    return statuses


def sync_status(raw: bytes, limits: Limits) -> int:
    """What the sync worker's parser makes of `raw`: its refusal's status, or 200.

    A refusal inside a body (a chunked trailer) reaches the app that reads the body, so such
    cases go to /headers, which reads it."""
    parser = RequestParser(limits)
    parser.feed(raw)
    if parser.error is not None:
        return parser.error.status
    assert parser.ready, f"incomplete request in the test: {raw[:80]!r}"
    body_error = parser.ready[-1].error
    return body_error.status if body_error is not None else 200


# -- the smuggling corpus -------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(LLHTTP_REFUSES))
def test_corpus_refused_by_llhttp(default_master: Arbiter, name: str) -> None:
    [status] = exchange(default_master, LLHTTP_REFUSES[name])
    if name in LLHTTP_STATUS:
        assert status == LLHTTP_STATUS[name], name
    else:
        assert status is not None and 400 <= status < 600, f"{name}: {status}"


@pytest.mark.parametrize("name", sorted(WRAPPER_REFUSES))
def test_corpus_refused_like_sync(default_master: Arbiter, name: str) -> None:
    raw, expected = WRAPPER_REFUSES[name]
    assert exchange(default_master, raw) == [expected], name


def test_a_refusal_closes_the_connection_after_earlier_pipelined_requests_are_answered(default_master: Arbiter) -> None:
    good = b"GET /sleep?s=0.2 HTTP/1.1\r\nHost: x\r\n\r\n"
    bad = b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"
    assert exchange(default_master, good + good + bad + good, count=4) == [200, 200, 400, None]


def test_a_bad_body_behind_a_pipelined_request_is_refused_in_order(default_master: Arbiter) -> None:
    good = b"GET /sleep?s=0.2 HTTP/1.1\r\nHost: x\r\n\r\n"
    bad_trailer = (b"POST /headers HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"1\r\na\r\n0\r\nHost: evil.example.com\r\n\r\n")
    assert exchange(default_master, good + bad_trailer + good, count=3) == [200, 400, None]


# -- Gunicorn's limits ------------------------------------------------------------------------------


def test_the_issue_cases_are_refused_with_the_sync_statuses(limited_master: Arbiter) -> None:
    long_line = b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    many = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(50)) + b"\r\n"
    big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 5000 + b"\r\n\r\n"
    assert exchange(limited_master, long_line) == [414]
    assert exchange(limited_master, many) == [431]
    assert exchange(limited_master, big) == [431]
    assert exchange(limited_master, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == [200]


def test_a_websocket_handshake_gets_the_same_limits(limited_master: Arbiter) -> None:
    handshake = (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")
    assert exchange(limited_master, handshake + b"X-One-Too-Many: 1\r\n\r\n") == [431]


def _boundary_cases() -> dict[str, bytes]:
    cases = {}
    for length in range(96, 104):  # the request line, CRLF not counted
        target = b"/" + b"a" * (length - len(b"GET  HTTP/1.1") - 1)
        cases[f"request line of {length}"] = b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    for length in range(94, 104):  # one field line, CRLF not counted
        value = b"v" * (length - len(b"X-Big: "))
        cases[f"field line of {length}"] = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + value + b"\r\n\r\n"
    for count in range(3, 8):
        fields = b"Host: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(count - 1))
        cases[f"{count} fields"] = b"GET / HTTP/1.1\r\n" + fields + b"\r\n"
    trailer = b"X-T: " + b"t" * 80 + b"\r\n"
    cases["3 trailers"] = (b"POST /headers HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"1\r\na\r\n0\r\n" + trailer * 3 + b"\r\n")
    cases["a long trailer"] = (b"POST /headers HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                               b"1\r\na\r\n0\r\nX-T: " + b"t" * 200 + b"\r\n\r\n")
    cases["5 trailers"] = (b"POST /headers HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"1\r\na\r\n0\r\n" + trailer * 5 + b"\r\n")
    return cases


BOUNDARIES = _boundary_cases()


@pytest.mark.parametrize("name", list(BOUNDARIES))
def test_limit_boundaries_match_the_sync_parser(limited_master: Arbiter, name: str) -> None:
    raw = BOUNDARIES[name]
    expected = sync_status(raw, Limits(100, 5, 100))
    assert exchange(limited_master, raw) == [expected], name


ZERO_CASES = {
    "a 20 KB request line": b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "a 10 KB field": b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 10000 + b"\r\n\r\n",
    "200 fields": b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(199)) + b"\r\n",
}


@pytest.mark.parametrize("name", list(ZERO_CASES))
def test_limits_of_zero_mean_what_they_mean_for_sync(unlimited_master: Arbiter, name: str) -> None:
    raw = ZERO_CASES[name]
    assert exchange(unlimited_master, raw) == [sync_status(raw, Limits(0, 0, 0))], name


def _rss(pid: int) -> int:
    return psutil.Process(pid).memory_info().rss


@pytest.mark.parametrize("which", ["limited", "default"])
def test_an_endless_header_is_refused_early_and_the_worker_stays_small(request: pytest.FixtureRequest,
                                                                       which: str) -> None:
    master: Arbiter = request.getfixturevalue(f"{which}_master")
    [pid] = master.workers()
    assert exchange(master, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == [200]
    before = _rss(pid)
    total = 64 << 20
    piece = b"a" * (256 << 10)
    sent = [0]

    def send_all(sock: socket.socket) -> None:
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ")
            while sent[0] < total:
                sock.sendall(piece)
                sent[0] += len(piece)
        except OSError:
            pass  # the worker refused and closed: what this test wants

    with socket.create_connection(("127.0.0.1", master.port), timeout=30) as sock:
        sender = threading.Thread(target=send_all, args=(sock,), daemon=True)
        sender.start()
        reply = Client(sock).read_response()
        sender.join(30)
    after = _rss(pid)
    assert reply.status == 431
    assert sent[0] < 32 << 20, f"the worker accepted {sent[0] >> 20} MiB of one header"
    assert after - before < 16 << 20, f"worker RSS grew from {before >> 20} MiB to {after >> 20} MiB"
    assert master.workers() == [pid]
    assert exchange(master, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == [200]


# -- trailers --------------------------------------------------------------------------------------


def _chunked(trailers: bytes) -> bytes:
    return (b"POST /headers HTTP/1.1\r\nHost: good.example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n" + trailers + b"\r\n")


def test_chunked_trailers_never_reach_the_apps_headers(default_master: Arbiter) -> None:
    with socket.create_connection(("127.0.0.1", default_master.port), timeout=10) as sock:
        client = Client(sock)
        sock.sendall(_chunked(b"X-Trailer: sneaky\r\nX-Other: also\r\n"))
        reply = client.read_response()
    assert reply.status == 200
    seen = json.loads(reply.body)
    assert seen["body"] == 5
    names = [name for name, _ in seen["headers"]]
    assert "x-trailer" not in names and "x-other" not in names
    assert names.count("host") == 1


def test_bodies_and_100_continue_still_work(default_master: Arbiter) -> None:
    with socket.create_connection(("127.0.0.1", default_master.port), timeout=10) as sock:
        client = Client(sock)
        sock.sendall(b"POST /headers HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        assert client.read_until(b"\r\n\r\n").startswith(b"HTTP/1.1 100 ")
        sock.sendall(b"hello")
        first = client.read_response()
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in [b"a" * 70000, b"b" * 3]) + b"0\r\n\r\n"
        sock.sendall(b"POST /headers HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks)
        second = client.read_response()
    assert (first.status, json.loads(first.body)["body"]) == (200, 5)
    assert (second.status, json.loads(second.body)["body"]) == (200, 70003)


def test_a_host_header_in_trailers_is_refused(default_master: Arbiter) -> None:
    assert exchange(default_master, _chunked(b"Host: evil.example.com\r\n")) == [400]


def test_refusals_are_logged_at_debug_without_uvicorns_warning(default_master: Arbiter) -> None:
    exchange(default_master, b"GET / HTTP/2.0\r\n\r\n")
    wait_until(lambda: "Invalid request from" in default_master.log(), timeout=5)
    assert "Invalid HTTP request received" not in default_master.log()
