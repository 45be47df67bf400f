"""Log reads, follow streams (appends, truncation, rotation) and clears, over the unix socket."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from arbiter.control.records import ClearArgs

from arbiter.control.backend import ControlError
from arbiter.control.logs import LogFollower, read_range, tail
from control_helpers import (  # noqa: F401  (fixtures)
    ServerLoop, call, jcall, make_loop, served, wait_until)


def test_read_ranges(served: ServerLoop) -> None:
    log = Path(served.backend.programs[0]["stdout_logfile"])
    log.write_bytes(b"0123456789" * 10)
    status, headers, data = call(served.unix_path, "GET", "/v1/logs/ticker/stdout?offset=10&length=5")
    assert (status, data) == (200, b"01234")
    assert (headers["x-log-offset"], headers["x-log-next-offset"], headers["x-log-size"]) == ("10", "15", "100")
    status, headers, data = call(served.unix_path, "GET", "/v1/logs/ticker/stdout?offset=-3")
    assert data == b"789" and headers["x-log-next-offset"] == "100"
    _, _, data = call(served.unix_path, "GET", "/v1/logs/ticker/stdout")  # default: the last 1600 bytes
    assert data == log.read_bytes()
    status, body = jcall(served.unix_path, "GET", "/v1/logs/ticker/stdout?offset=95&format=json")
    assert body == {"data": "56789", "offset": 95, "next_offset": 100, "size": 100}
    _, _, data = call(served.unix_path, "GET", "/v1/logs/ticker/stdout?offset=500")
    assert data == b""
    for query in ("offset=-3&length=2", "length=-1", "offset=abc"):
        status, body = jcall(served.unix_path, "GET", f"/v1/logs/ticker/stdout?{query}")
        assert status == 400 and body["error"]["code"] == "BAD_ARGUMENTS", query
    _, _, data = call(served.unix_path, "GET", "/v1/logs/ticker/stderr")
    assert data == b"ticker stderr line 1\n"
    _, _, data = call(served.unix_path, "GET", "/v1/logs/master")
    assert data == b"master started\n"
    status, body = jcall(served.unix_path, "GET", "/v1/logs/ghost/stdout")
    assert status == 404 and body["error"]["code"] == "BAD_NAME"
    status, body = jcall(served.unix_path, "GET", "/v1/logs/ticker/stdin")
    assert status == 404 and body["error"]["code"] == "NOT_FOUND"
    served.backend.log_paths_enabled = False
    status, body = jcall(served.unix_path, "GET", "/v1/logs/ticker/stdout")
    assert status == 404 and body["error"]["code"] == "NO_FILE"


def test_log_functions_follow_supervisor_rules(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    path.write_bytes(b"abcdefghij")
    assert read_range(str(path), 2, 3).data == b"cde"
    assert read_range(str(path), 0, 0).data == b"abcdefghij"
    assert read_range(str(path), -4, 0).data == b"ghij"
    assert read_range(str(path), -40, 0).data == b"abcdefghij"
    with pytest.raises(ControlError) as info:
        read_range(str(tmp_path / "missing.log"), 0, 0)
    assert info.value.code == "NO_FILE"
    assert tail(str(path), 0, 4) == (b"ghij", 10, True)   # grew past offset+length: overflow
    assert tail(str(path), 8, 4) == (b"ghij", 10, False)  # Supervisor: the last `length` bytes
    assert tail(str(path), 10, 4) == (b"", 10, False)


def test_follower_sees_appends_truncation_and_rotation(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_bytes(b"old line\n")
    follower = LogFollower(str(path), -5)
    assert follower.poll() == b"line\n"
    assert follower.poll() == b""
    with open(path, "ab") as f:
        f.write(b"more\n")
    assert follower.poll() == b"more\n"
    path.write_bytes(b"new\n")  # truncated in place and rewritten shorter
    assert follower.poll() == b"new\n"
    with open(path, "ab") as f:
        f.write(b"last words\n")
    os.rename(path, tmp_path / "app.log.1")  # rotated: the old file is read to its end first
    assert follower.poll() == b"last words\n"
    assert follower.poll() == b""  # no new file yet
    path.write_bytes(b"fresh\n")
    assert follower.poll() == b"fresh\n"
    follower.close()


def _stream(path: str, target: str) -> tuple[socket.socket, list[bytes]]:
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(5)
    sock.connect(path)
    sock.sendall(f"GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    return sock, []


def _read_until(sock: socket.socket, received: list[bytes], needle: bytes) -> bytes:
    def found() -> bool:
        if needle in b"".join(received):
            return True
        received.append(sock.recv(65536))
        return False
    wait_until(found, timeout=10, what=f"{needle!r} in the stream")
    return b"".join(received)


def test_follow_streams_what_is_appended(served: ServerLoop) -> None:
    log = Path(served.backend.programs[0]["stdout_logfile"])
    sock, received = _stream(served.unix_path, "/v1/logs/ticker/stdout?follow=1")
    with sock:
        head = _read_until(sock, received, b"line 1\n")
        assert head.startswith(b"HTTP/1.1 200 ") and b"transfer-encoding: chunked" in head.lower()
        with open(log, "ab") as f:
            f.write(b"appended later\n")
        _read_until(sock, received, b"appended later\n")
        log.write_bytes(b"")  # a clear (truncation), then new output
        with open(log, "ab") as f:
            f.write(b"after the clear\n")
        _read_until(sock, received, b"after the clear\n")
        os.rename(log, str(log) + ".1")
        log.write_bytes(b"in the new file\n")
        _read_until(sock, received, b"in the new file\n")
        assert len(served.server._follows) == 1
    wait_until(lambda: not served.server._follows, what="the follow ended with its client")


def test_follow_the_master_log_and_supervisor_logtail(served: ServerLoop) -> None:
    master_log = served.backend.tmp / "master.log"
    sock, received = _stream(served.unix_path, "/v1/logs/master?follow=1&offset=0")
    with sock:
        _read_until(sock, received, b"master started\n")
        with open(master_log, "ab") as f:
            f.write(b"worker booted\n")
        _read_until(sock, received, b"worker booted\n")
    sock, received = _stream(served.unix_path, "/logtail/pool:pool_0/stderr")
    with sock:
        _read_until(sock, received, b"pool_0 stderr line 1\n")
    sock, received = _stream(served.unix_path, "/mainlogtail")
    with sock:
        _read_until(sock, received, b"worker booted\n")


def test_follow_of_a_missing_file_is_404(served: ServerLoop) -> None:
    os.unlink(served.backend.programs[1]["stdout_logfile"])
    status, body = jcall(served.unix_path, "GET", "/v1/logs/pool:pool_0/stdout?follow=1")
    assert status == 404 and body["error"]["code"] == "NO_FILE"


def test_clear_logs_is_a_command(served: ServerLoop) -> None:
    backend = served.backend
    status, body = jcall(served.unix_path, "POST", "/v1/logs/ticker/clear")
    assert status == 200 and body["result"][0]["status"] == "OK"
    assert backend.commands[-1].args == ClearArgs(("ticker",), ("stdout", "stderr"))
    assert Path(backend.programs[0]["stdout_logfile"]).read_bytes() == b""
    jcall(served.unix_path, "POST", "/v1/logs/pool:pool_1/stderr/clear")
    assert backend.commands[-1].args == ClearArgs(("pool:pool_1",), ("stderr",))
    jcall(served.unix_path, "POST", "/v1/logs/master/clear")
    assert backend.commands[-1].args == ClearArgs(("master",), ("stdout",))
    assert (backend.tmp / "master.log").read_bytes() == b""
    status, body = jcall(served.unix_path, "POST", "/v1/logs/ghost/clear")
    assert status == 404 and body["error"]["code"] == "BAD_NAME"


def test_a_slow_follower_does_not_cost_memory(served: ServerLoop) -> None:
    log = Path(served.backend.programs[0]["stdout_logfile"])
    log.write_bytes(b"z" * (8 << 20))
    sock = socket.socket(socket.AF_UNIX)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(served.unix_path)
    sock.sendall(b"GET /v1/logs/ticker/stdout?follow=1&offset=0 HTTP/1.1\r\nHost: localhost\r\n\r\n")
    with sock:  # and reads nothing: the server stops reading the file once its buffer is full
        limit = served.server.limits.stream_buffer
        conn = wait_until(lambda: next(iter(served.server._follows), None), what="the follow")
        wait_until(lambda: conn.pending_output >= limit, what="the stream buffer full")
        position = served.server._follows[conn].position
        assert position < (8 << 20) and conn.pending_output <= limit + 4 * (64 << 10)
        served.server.tick()
        assert served.server._follows[conn].position == position
    assert json.loads(call(served.unix_path, "GET", "/v1/status")[2])["master"]
