"""The JSON API over a real unix socket, served by a real selector loop on a FakeBackend."""

from __future__ import annotations

import json
import socket
import time

from arbiter.control.records import ProcessArgs
from control_helpers import (  # noqa: F401  (fixtures)
    FakeBackend, Limits, ServerLoop, UnixConn, call, jcall, make_loop, served, wait_until)


def test_status_and_name_filter(served: ServerLoop) -> None:
    status, body = jcall(served.unix_path, "GET", "/v1/status")
    assert status == 200
    assert body["master"]["state"] == "RUNNING" and body["master"]["rss"] > 0  # added from /proc
    assert [w["state"] for w in body["workers"]] == ["READY", "READY"]
    assert [p["name"] for p in body["programs"]] == ["ticker", "pool_0", "pool_1", "idle", "broken"]
    _, body = jcall(served.unix_path, "GET", "/v1/status?name=pool:*")
    assert [p["name"] for p in body["programs"]] == ["pool_0", "pool_1"]
    _, body = jcall(served.unix_path, "GET", "/v1/status?name=ticker,pool:pool_1")
    assert [p["name"] for p in body["programs"]] == ["ticker", "pool_1"]
    status, body = jcall(served.unix_path, "GET", "/v1/status?name=nope")
    assert status == 404 and body["error"]["code"] == "BAD_NAME"


def test_single_process_commands_wait_for_the_master(served: ServerLoop) -> None:
    path, backend = served.unix_path, served.backend
    status, body = jcall(path, "POST", "/v1/processes/ticker/stop", {})
    assert status == 200 and body["result"][0]["status"] == "OK"
    # wait=True (the default): the answer came only once the fake master reached STOPPED
    assert jcall(path, "GET", "/v1/status?name=ticker")[1]["programs"][0]["state"] == "STOPPED"
    assert backend.commands[-1].name == "stop" and backend.commands[-1].args == ProcessArgs(("ticker",), wait=True)
    status, body = jcall(path, "POST", "/v1/processes/ticker/stop")
    assert status == 409 and body["error"]["code"] == "NOT_RUNNING"
    status, body = jcall(path, "POST", "/v1/processes/ticker/start", {"wait": False})
    assert status == 200
    assert backend.commands[-1].args == ProcessArgs(("ticker",), wait=False)
    wait_until(lambda: backend.programs[0]["state"] == "RUNNING", what="ticker running")
    status, body = jcall(path, "POST", "/v1/processes/ticker/start")
    assert status == 409 and body["error"]["code"] == "ALREADY_STARTED"
    status, body = jcall(path, "POST", "/v1/processes/broken/start")
    assert status == 500 and body["error"]["code"] == "SPAWN_ERROR"
    status, body = jcall(path, "POST", "/v1/processes/pool:pool_0/restart")
    assert status == 200 and backend.commands[-1].args.names == ("pool:pool_0",)
    status, body = jcall(path, "POST", "/v1/processes/pool:pool_1/signal", {"signal": "SIGUSR1"})
    assert status == 200 and backend.signals == [("pool:pool_1", "USR1")]
    status, body = jcall(path, "POST", "/v1/processes/pool:pool_1/signal", {"signal": "NOPE"})
    assert status == 400 and body["error"]["code"] == "BAD_SIGNAL"
    status, body = jcall(path, "POST", "/v1/processes/nope/start")
    assert status == 404 and body["error"]["code"] == "BAD_NAME"


def test_many_processes_commands(served: ServerLoop) -> None:
    path, backend = served.unix_path, served.backend
    status, body = jcall(path, "POST", "/v1/stop", {"names": ["pool:*", "idle"]})
    assert status == 200
    assert [(r["name"], r["status"]) for r in body["result"]] == [
        ("pool_0", "OK"), ("pool_1", "OK"), ("idle", "NOT_RUNNING")]
    status, body = jcall(path, "POST", "/v1/start", {"names": ["all"], "wait": False})
    assert status == 200 and {r["status"] for r in body["result"]} == {"OK", "ALREADY_STARTED", "SPAWN_ERROR"}
    status, body = jcall(path, "POST", "/v1/restart", {"names": ["ticker"]})
    assert status == 200 and backend.commands[-1].name == "restart"
    status, body = jcall(path, "POST", "/v1/signal", {"names": ["ticker"], "signal": 1})
    assert status == 200 and backend.signals[-1] == ("ticker", "HUP")
    for bad in ({}, {"names": []}, {"names": ""}, {"names": [1]}):
        status, body = jcall(path, "POST", "/v1/start", bad)
        assert status == 400 and body["error"]["code"] == "BAD_ARGUMENTS", bad
    status, body = jcall(path, "POST", "/v1/stop", {"names": ["ticker", "ghost"]})
    assert status == 404 and "ghost" in body["error"]["message"]


def test_reload_scale_and_configuration_commands(served: ServerLoop) -> None:
    path, backend = served.unix_path, served.backend
    status, body = jcall(path, "POST", "/v1/reload", {})
    assert status == 200 and body["result"]["state"] == "in progress"
    wait_until(lambda: backend.master["reload"]["state"] == "done", what="reload done")
    status, body = jcall(path, "POST", "/v1/reload", {"wait": True})
    assert status == 200 and body["result"]["state"] == "done" and backend.master["generation"] == 3
    backend.reload_fails = True
    status, body = jcall(path, "POST", "/v1/reload", {"wait": True})
    assert status == 500 and body["error"]["code"] == "RELOAD_FAILED"
    for spec, target in (("+2", 4), ("-1", 3), ("=5", 5), (2, 2)):
        status, body = jcall(path, "POST", "/v1/scale", {"spec": spec})
        assert status == 200 and body["result"] == {"workers_target": target}
    for bad in ("x", "+", "*3", None, True):
        status, body = jcall(path, "POST", "/v1/scale", {"spec": bad})
        assert status == 400 and body["error"]["code"] == "BAD_ARGUMENTS"
    assert jcall(path, "POST", "/v1/reread")[1]["result"] == {"added": ["extra"], "changed": [], "removed": []}
    assert jcall(path, "POST", "/v1/add", {"names": ["extra"]})[0] == 200
    status, body = jcall(path, "POST", "/v1/add", {"names": ["extra"]})
    assert status == 409 and body["error"]["code"] == "ALREADY_ADDED"
    status, body = jcall(path, "POST", "/v1/remove", {"names": ["ticker"]})
    assert status == 409 and body["error"]["code"] == "STILL_RUNNING"
    assert jcall(path, "POST", "/v1/remove", {"names": ["extra"]})[0] == 200
    assert jcall(path, "POST", "/v1/update", {})[1]["result"]["added"] == ["extra"]
    assert jcall(path, "POST", "/v1/add", {})[0] == 400
    status, body = jcall(path, "POST", "/v1/shutdown")
    assert status == 200 and backend.master["state"] == "STOPPING"


def test_errors_leave_the_server_answering(served: ServerLoop) -> None:
    path = served.unix_path
    conn = UnixConn(path)
    conn.request("POST", "/v1/start", body=b"{not json", headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 400 and json.loads(response.read())["error"]["code"] == "BAD_REQUEST"
    conn.request("GET", "/v1/status")  # same keep-alive connection
    response = conn.getresponse()
    assert response.status == 200 and json.loads(response.read())["master"]
    conn.request("POST", "/v1/start", body=b"[1, 2]")
    response = conn.getresponse()
    assert response.status == 400 and b"JSON object" in response.read()
    conn.close()
    status, body = jcall(path, "GET", "/v2/nothing")
    assert status == 404 and body["error"]["code"] == "NOT_FOUND"
    status, headers, data = call(path, "GET", "/v1/reload")
    assert status == 405 and headers["allow"] == "POST" and json.loads(data)["error"]["code"] == "METHOD_NOT_ALLOWED"
    status, headers, data = call(path, "DELETE", "/v1/status")
    assert status == 405 and headers["allow"] == "GET, HEAD"
    status, headers, data = call(path, "HEAD", "/v1/status")
    assert status == 200 and data == b"" and int(headers["content-length"]) > 0
    assert jcall(path, "GET", "/v1/status")[0] == 200


def test_oversized_bodies_get_413(make_loop) -> None:
    loop = make_loop(limits=Limits(max_body=1000))
    status, _, data = call(loop.unix_path, "POST", "/v1/start", raw=b"x" * 5000)
    assert status == 413 and json.loads(data)["error"]["code"] == "TOO_LARGE"
    # chunked: no Content-Length up front, the limit is enforced as the body arrives
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(loop.unix_path)
        sock.sendall(b"POST /v1/start HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(3):
            sock.sendall(b"200\r\n" + b"y" * 512 + b"\r\n")
        answer = _read_all(sock)
    assert answer.startswith(b"HTTP/1.1 413 ") and b"connection: close" in answer.lower()
    assert jcall(loop.unix_path, "GET", "/v1/status")[0] == 200


def _read_all(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def test_malformed_requests_and_pipelining(served: ServerLoop) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(served.unix_path)
        sock.sendall(b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\n\r\n"
                     b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = _read_all(sock)
    assert answer.count(b"HTTP/1.1 200 ") == 2 and answer.endswith(b"ok\n")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(served.unix_path)
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert _read_all(sock).startswith(b"HTTP/1.1 400 ")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(served.unix_path)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n")
        assert _read_all(sock).startswith(b"HTTP/1.1 431 ")
    assert jcall(served.unix_path, "GET", "/v1/status")[0] == 200


def test_slow_and_idle_clients_are_dropped(make_loop) -> None:
    loop = make_loop(limits=Limits(request_timeout=0.3, idle_timeout=0.3))
    with socket.socket(socket.AF_UNIX) as slow:
        slow.settimeout(5)
        slow.connect(loop.unix_path)
        slow.sendall(b"GET /v1/status HTTP/1.1\r\nHost: loc")  # and never the rest
        assert _read_all(slow).startswith(b"HTTP/1.1 408 ")
    with socket.socket(socket.AF_UNIX) as idle:
        idle.settimeout(5)
        idle.connect(loop.unix_path)
        started = time.monotonic()
        assert _read_all(idle) == b""  # closed by the server, with nothing to say
        assert time.monotonic() - started < 3
    assert not loop.server._connections or wait_until(lambda: not loop.server._connections)


def test_a_client_that_leaves_before_the_answer(make_loop, tmp_path) -> None:
    backend = FakeBackend(tmp_path)
    backend.hold_replies = True
    loop = make_loop(backend)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(loop.unix_path)
        sock.sendall(b"POST /v1/reload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n{}")
        wait_until(lambda: backend.commands, what="the command submitted")
    wait_until(lambda: not loop.server._connections, what="the connection dropped")
    backend.commands[0].reply({"late": True})  # nobody waits: dropped, and nothing breaks
    backend.commands[0].fail(Exception("twice"))  # type: ignore[arg-type]
    backend.hold_replies = False
    assert jcall(loop.unix_path, "GET", "/v1/status")[0] == 200


def test_a_backend_that_raises_costs_one_answer(served: ServerLoop) -> None:
    def broken(command: object) -> None:
        raise RuntimeError("bug in the master")

    served.backend.submit = broken  # type: ignore[method-assign]
    status, body = jcall(served.unix_path, "POST", "/v1/reload", {})
    assert status == 500 and body["error"]["code"] == "INTERNAL"
    assert jcall(served.unix_path, "GET", "/v1/status")[0] == 200
