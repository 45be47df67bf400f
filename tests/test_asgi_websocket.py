"""WebSockets under `-k uvicorn`: a FastAPI `@app.websocket` route, driven by the `websockets`
client against a real master; and a reload with a socket left open."""

from __future__ import annotations

import re
import signal
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, wait_until
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _connect(port: int) -> ClientConnection:
    # proxy=None: a proxy from the environment must not stand between the test and 127.0.0.1.
    return connect(f"ws://127.0.0.1:{port}/ws", proxy=None, open_timeout=10, close_timeout=10)


def _pid(greeting: str | bytes) -> int:
    match = re.fullmatch(r"pid=(\d+)", str(greeting))
    assert match, greeting
    return int(match.group(1))


def test_a_websocket_library_is_a_dependency() -> None:
    """`pip install arbiter` must bring one: uvicorn alone does not."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=!~; \[]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]}
    assert names & {"websockets", "wsproto"}, project["dependencies"]


def test_round_trip_ping_and_close(arbiter, tmp_path: Path) -> None:
    marker = tmp_path / "ws.marker"
    master = arbiter(["ws_app:app", "-k", "uvicorn", "-w", "1", "--log-level", "debug"],
                     env={"WS_MARKER": str(marker)})
    [worker] = master.wait_ready(1)
    with _connect(master.port) as ws:
        assert _pid(ws.recv(timeout=10)) == worker
        ws.send("hello")
        assert ws.recv(timeout=10) == "echo:hello"
        ws.send("ünïcode " * 1000)
        assert ws.recv(timeout=10) == "echo:" + "ünïcode " * 1000
        assert ws.ping(b"are you there").wait(10), "no pong"
        ws.close(code=1000, reason="done")
        assert ws.close_code == 1000
    wait_until(lambda: marker.exists() and f"disconnect 1000 {worker}" in marker.read_text(), timeout=10,
               what="the app to see the close")
    assert "No supported WebSocket library" not in master.log()
    assert "Unsupported upgrade request" not in master.log()
    # Even at debug, no handshake header (a cookie, a token) and no message reaches the log.
    assert "sec-websocket-key" not in master.log().lower()
    assert "echo:hello" not in master.log()


def test_hup_closes_an_open_websocket_within_graceful_timeout_and_the_reload_completes(arbiter, tmp_path: Path) -> None:
    marker = tmp_path / "ws.marker"
    graceful = 5.0
    master = arbiter(["ws_app:app", "-k", "uvicorn", "-w", "1", "--graceful-timeout", str(graceful),
                      "--log-level", "debug"], env={"WS_MARKER": str(marker)})
    [old] = master.wait_ready(1)
    with _connect(master.port) as ws:
        assert _pid(ws.recv(timeout=10)) == old
        started = time.monotonic()
        master.signal(signal.SIGHUP)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=graceful + 5)  # the socket is left open: the old worker must end it
        elapsed = time.monotonic() - started
    assert elapsed < graceful, f"the old worker took {elapsed:.1f}s to close the WebSocket"
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012  # service restart
    master.wait_log(r"Reload done: generation", timeout=30)
    [new] = master.wait_workers(lambda pids: len(pids) == 1 and old not in pids)
    with _connect(master.port) as ws:
        assert _pid(ws.recv(timeout=10)) == new
        ws.send("again")
        assert ws.recv(timeout=10) == "echo:again"
    assert f"disconnect 1012 {old}" in marker.read_text()
    assert master.get("/")[0] == 200


def test_request_timeout_leaves_websocket_sessions_alone(arbiter, tmp_path: Path) -> None:
    """--request-timeout bounds HTTP requests; a WebSocket session is not one, whatever its age."""
    master = arbiter(["ws_app:app", "-k", "uvicorn", "-w", "1", "--request-timeout", "0.5"],
                     env={"WS_MARKER": str(tmp_path / "ws.marker")})
    [worker] = master.wait_ready(1)
    with _connect(master.port) as ws:
        assert _pid(ws.recv(timeout=10)) == worker
        # The session must outlive several deadlines (the watcher looks every 0.125 s): the
        # passing of time is what is tested here, so a wait, not a readiness poll.
        time.sleep(2.0)
        ws.send("still here")
        assert ws.recv(timeout=10) == "echo:still here"
    assert "Request timeout" not in master.log()
