"""Every way a node can fail shows as what it is, within the deadline, beside the nodes that work:
a wrong token (auth_failed), a wrong supervisord password (auth_failed), an answer that is not
the API's (error), a host that accepts and never answers, and a closed port (unreachable)."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleet_helpers import (  # noqa: F401  (fixture)
    Supervisord, add_token, add_user, start_fleet, start_node, supervisord, write_fleet_config)

pytest.importorskip("starlette")


class Garbage(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802
        body = b"<html>this is a web page, not the control API</html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def garbage_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_each_failure_shows_as_itself_within_the_deadline(arbiter, supervisord, garbage_server: int,
                                                           tmp_path: Path) -> None:
    good = start_node(arbiter, tmp_path, "good")
    wrong_token = start_node(arbiter, tmp_path, "wrong-token")
    wrong_token.token_file.write_text("not-the-token\n")  # the master read its token at start
    sup = supervisord()
    bad_sup = Supervisord(tmp_path, name="bad-sup")
    bad_sup.port, bad_sup.password = sup.port, "wrong password"
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(16)  # connections complete in the kernel's backlog; no answer ever comes
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
    raw = "".join(
        f'[[nodes]]\nname = "{name}"\nurl = "http://127.0.0.1:{port}"\ntoken_file = "{good.token_file}"\n'
        for name, port in (("garbage", garbage_server), ("hung", hung.getsockname()[1]), ("closed", closed_port)))
    config = write_fleet_config(tmp_path, [good, wrong_token], [("sup", sup), ("bad-sup", bad_sup)],
                                extra="deadline = 1.0", raw_nodes=raw)
    add_user(config, "vic", "viewer")
    good.master.wait_ready(1)
    server = start_fleet(arbiter, config)
    token = add_token(config, "vic")
    try:
        with server.client(token) as api:
            for _ in range(2):  # the second time with warm connections to the good nodes
                start = time.monotonic()
                nodes = {n["name"]: n for n in api.get("/api/v1/nodes").json()["nodes"]}
                took = time.monotonic() - start
                assert took < 1.0 + 1.0, took
            assert {name: n["state"] for name, n in nodes.items()} == {
                "good": "up", "wrong-token": "auth_failed", "sup": "up", "bad-sup": "auth_failed",
                "garbage": "error", "hung": "unreachable", "closed": "unreachable"}
            assert "not JSON" in nodes["garbage"]["error"]
            assert "no answer" in nodes["hung"]["error"] and "cannot connect" in nodes["closed"]["error"]
            assert all(nodes[n]["since"] for n in ("wrong-token", "garbage", "hung", "closed"))
            assert nodes["good"]["processes"] and nodes["sup"]["processes"]
            failing = api.get("/api/v1/nodes", params={"state": "unreachable"}).json()["nodes"]
            assert sorted(n["name"] for n in failing) == ["closed", "hung"]
            refused = api.post("/api/v1/nodes/wrong-token/processes/ticker/restart")
            assert refused.status_code == 403  # a viewer: refused before the node is asked
    finally:
        hung.close()
