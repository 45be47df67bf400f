"""Worker features beyond the core protocol: TLS, unix sockets, the access log, hooks, connection
limits, head timeouts, max_requests and stopping with requests queued."""

from __future__ import annotations

import json
import re
import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from arbiter.web.scoreboard import SlotState
from http_helpers import Client, ServedWorker, app, get, serve, wait_until


def test_unix_socket_peer_has_no_address(tmp_path: Path) -> None:
    served = ServedWorker(app, "sync", unix_path=str(tmp_path / "s.sock"))
    try:
        served.wait_ready()
        env = json.loads(get(served, "/environ").body)
        assert env["REMOTE_ADDR"] == "" and env["SERVER_NAME"] == str(tmp_path / "s.sock")
    finally:
        served.stop()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
@pytest.mark.parametrize("kind", ["sync", "gthread", "gevent"])
def test_tls(tmp_path: Path, kind: str) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=localhost"],
        check=True, capture_output=True,
    )
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with serve(app, kind, certfile=str(cert), keyfile=str(key)) as served:
        with context.wrap_socket(served.connect(), server_hostname="localhost") as sock:
            client = Client(sock)
            for _ in range(2):  # keep-alive over TLS
                client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
                assert client.read_response().body == b"abc"
            client.send(b"GET /environ HTTP/1.1\r\nHost: t\r\n\r\n")
            assert json.loads(client.read_response().body)["wsgi.url_scheme"] == "https"
        # A client that never completes its handshake does not block the others.
        with served.connect() as stalled:
            stalled.send(b"\x16\x03\x01")
            with context.wrap_socket(served.connect(), server_hostname="localhost") as sock:
                client = Client(sock)
                client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
                assert client.read_response().body == b"hello"


def test_access_log_in_gunicorn_format(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    fmt = '%(h)s %(l)s %(u)s "%(r)s" %(s)s %(b)s %(m)s %(U)s %(q)s %(H)s %(B)s %(p)s %({x-h}i)s %({content-type}o)s %({request_method}e)s %(nope)s'
    with serve(app, "sync", accesslog=str(log), access_log_format=fmt) as served:
        auth = "Authorization: Basic dXNlcjpwYXNz\r\nX-H: \"quoted\"\r\n"
        get(served, "/echo?q=1", auth)
        wait_until(lambda: log.exists() and log.read_text(), what="an access log line")
        line = log.read_text().strip()
        expected = (
            rf'127.0.0.1 - user "GET /echo\?q=1 HTTP/1.1" 200 - GET /echo q=1 HTTP/1.1 0 <{served.pid}> '
            r'\\"quoted\\" text/plain GET -'
        )
        assert re.fullmatch(expected, line), line
        get(served, "/")
        wait_until(lambda: len(log.read_text().splitlines()) == 2, what="a second line")
        assert " 200 5 " in log.read_text().splitlines()[1]


def test_default_access_log_format(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    with serve(app, "gthread", accesslog=str(log)) as served:
        get(served, "/", "Referer: http://r/\r\nUser-Agent: tester\r\n")
        wait_until(lambda: log.exists() and log.read_text(), what="an access log line")
        line = log.read_text().strip()
        assert re.fullmatch(r'127\.0\.0\.1 - - \[.+\] "GET / HTTP/1\.1" 200 5 "http://r/" "tester"', line), line


def _pre(worker: Any, req: Any) -> None:
    with open(dict(req.headers)["X-MARK"], "a") as handle:
        handle.write(f"pre {req.method} {req.path} {req.query} {req.version}\n")


def _post(worker: Any, req: Any, environ: dict[str, Any], resp: Any) -> None:
    with open(environ["HTTP_X_MARK"], "a") as handle:
        handle.write(f"post {resp.status} {resp.status_code} {resp.sent}\n")


def test_pre_and_post_request_hooks(tmp_path: Path) -> None:
    mark = tmp_path / "mark"
    with serve(app, "sync", pre_request=_pre, post_request=_post) as served:
        get(served, "/?a=b", f"X-Mark: {mark}\r\n")
        wait_until(lambda: mark.exists() and len(mark.read_text().splitlines()) == 2, what="both hooks")
        assert mark.read_text().splitlines() == ["pre GET / a=b (1, 1)", "post 200 OK 200 5"]


@pytest.mark.parametrize("kind", ["sync", "gevent"])
def test_worker_connections_limit(tmp_path: Path, kind: str) -> None:
    with serve(app, kind, worker_connections=2, keepalive=10) as served:
        first, second = served.connect(), served.connect()
        for sock in (first, second):
            client = Client(sock)
            client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            assert client.read_response().status == 200
        third = served.connect()  # the kernel completes it; the worker does not take it yet
        third.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        third.settimeout(0.5)
        with pytest.raises(socket.timeout):
            third.recv(1)
        first.close()
        third.settimeout(5)
        assert Client(third).read_response().body == b"hello"
        second.close()
        third.close()


def test_incomplete_head_is_cut_off_after_the_head_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("arbiter.web.workers.sync.MIN_HEAD_TIMEOUT", 0.5)  # inherited by the fork
    with serve(app, "sync", keepalive=0.2) as served, served.connect() as sock:
        sock.sendall(b"GET / HTTP/1.1\r\n")
        started = time.monotonic()
        assert Client(sock).at_eof(timeout=5)
        assert 0.3 < time.monotonic() - started < 3


def test_max_requests_asks_for_retirement_and_keeps_serving() -> None:
    with serve(app, "gthread", max_requests=2) as served:
        assert get(served).status == 200
        assert served.state() == SlotState.READY
        assert get(served).status == 200
        wait_until(lambda: served.state() == SlotState.RETIRING, what="RETIRING")
        assert get(served).status == 200  # until the master drains it
        wait_until(lambda: served.requests() == 3, what="three requests counted")


def test_sync_stop_answers_a_request_already_waiting(tmp_path: Path) -> None:
    mark = tmp_path / "mark"
    with serve(app, "sync", graceful_timeout=5) as served:
        busy, waiting = served.connect(), served.connect()
        waiting.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        assert Client(waiting).read_response().status == 200  # now an idle keep-alive connection
        busy.sendall(f"GET /sleep?0.5 HTTP/1.1\r\nHost: t\r\nX-Mark: {mark}\r\n\r\n".encode())
        wait_until(lambda: mark.exists(), what="the app to start")
        waiting.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")  # sent while the worker is busy
        served.terminate()
        assert Client(busy).read_response().body == b"slept"
        reply = Client(waiting).read_response()
        assert reply.body == b"hello" and reply.header("connection") == "close"
        assert served.wait_exit() == 0
        busy.close()
        waiting.close()


def test_gthread_graceful_timeout_leaves_a_stuck_request(tmp_path: Path) -> None:
    mark = tmp_path / "mark"
    with serve(app, "gthread", graceful_timeout=0.3) as served, served.connect() as sock:
        sock.sendall(f"GET /sleep?30 HTTP/1.1\r\nHost: t\r\nX-Mark: {mark}\r\n\r\n".encode())
        wait_until(lambda: mark.exists(), what="the app to start")
        started = time.monotonic()
        served.terminate()
        assert served.wait_exit(timeout=5) == 0
        assert time.monotonic() - started < 3
