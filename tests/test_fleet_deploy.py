"""Rolling deploys across hosts through the fleet server, with real masters under real load."""

from __future__ import annotations

import textwrap
from pathlib import Path

import httpx
import pytest

from conftest import wait_until
from fleet_helpers import add_token, add_user, fleet_cli, start_fleet, start_node, write_fleet_config
from load import Load

pytest.importorskip("starlette")

APP = textwrap.dedent('''
    import os
    VERSION = "v1"
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = f"pid={os.getpid()} {VERSION}".encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
''')


def _nodes(arbiter, tmp_path: Path, count: int, workers: int) -> list:
    nodes = []
    for i in range(1, count + 1):
        app_dir = tmp_path / f"app-{i}"
        app_dir.mkdir()
        (app_dir / "deployed_app.py").write_text(APP)
        nodes.append(start_node(arbiter, tmp_path, f"web-{i}", app="deployed_app:app", workers=workers,
                                programs="", chdir=app_dir))
    for node in nodes:
        node.master.wait_ready(workers)
    return nodes


def _version(node) -> str:
    return node.master.get("/")[1].decode().split()[-1]


def _wait_deploy(api: httpx.Client, deploy_id: str, timeout: float = 120) -> dict:
    return wait_until(lambda: (d := api.get(f"/api/v1/deploys/{deploy_id}").json())["state"] != "running" and d,
                      timeout=timeout, interval=0.2, what=f"deploy {deploy_id}")


def test_rolling_deploy_under_load_fails_no_request(arbiter, tmp_path: Path) -> None:
    nodes = _nodes(arbiter, tmp_path, 2, workers=2)
    config = write_fleet_config(tmp_path, nodes)
    add_user(config, "ops", "operator")
    server = start_fleet(arbiter, config)
    token = add_token(config, "ops")
    loads = [Load(node.master.port, keepalive=3, fresh=1, slow=0).__enter__() for node in nodes]
    try:
        for load in loads:
            load.wait_for_requests(30)
        for i, node in enumerate(nodes, 1):
            (tmp_path / f"app-{i}" / "deployed_app.py").write_text(APP.replace("v1", "v2"))
        with server.client(token) as api:
            response = api.post("/api/v1/environments/production/reload", json={"batch": 1})
            assert response.status_code == 202, response.text
            deploy_id = response.json()["id"]
            second = api.post("/api/v1/environments/production/reload")
            assert second.status_code == 409 and second.json()["error"]["code"] == "DEPLOY_RUNNING"
            record = _wait_deploy(api, deploy_id)
            assert record["state"] == "done", record
            assert [n["state"] for n in record["nodes"]] == ["done", "done"]
            first, second_node = record["nodes"]
            assert first["finished"] <= second_node["started"]  # one at a time
            for load in loads:
                load.wait_for_requests(30)
            activity = api.get("/api/v1/activity").json()["activity"]
            assert activity[0]["action"] == "deploy" and activity[0]["result"] == "OK"
    finally:
        results = [load.stop() for load in loads]
    for result in results:
        assert result.failures == [], result.failures[:10]
        assert result.ok > 50
    assert [_version(node) for node in nodes] == ["v2", "v2"]


def test_a_broken_node_stops_the_deploy_there(arbiter, tmp_path: Path) -> None:
    nodes = _nodes(arbiter, tmp_path, 3, workers=1)
    config = write_fleet_config(tmp_path, nodes)
    add_user(config, "ops", "operator")
    server = start_fleet(arbiter, config)
    token = add_token(config, "ops")
    (tmp_path / "app-1" / "deployed_app.py").write_text(APP.replace("v1", "v2"))
    (tmp_path / "app-2" / "deployed_app.py").write_text("raise ImportError('a broken deploy')\n")
    (tmp_path / "app-3" / "deployed_app.py").write_text(APP.replace("v1", "v2"))
    result = fleet_cli(["reload", "production", "--url", server.url], env={"FLEET_TOKEN": token}, timeout=180)
    assert result.returncode != 0, result.stdout
    assert "web-1: done" in result.stdout and "web-2: failed" in result.stdout, result.stdout
    assert "web-3: skipped" in result.stdout
    assert [_version(node) for node in nodes] == ["v2", "v1", "v1"]  # web-3 untouched
    with server.client(token) as api:
        record = api.get("/api/v1/deploys").json()["deploys"][0]
    assert record["state"] == "failed" and record["error"].startswith("stopped at web-2:")
    assert "RELOAD" in record["nodes"][1]["error"].upper() or "failed" in record["nodes"][1]["error"]

    # The record lives in the database: a restarted fleet server still has it.
    server.master.cleanup()
    again = start_fleet(arbiter, config)
    with again.client(token) as api:
        assert api.get(f"/api/v1/deploys/{record['id']}").json()["nodes"] == record["nodes"]


def test_a_deploy_cut_short_by_the_fleet_servers_exit_is_marked_interrupted(arbiter, tmp_path: Path) -> None:
    nodes = _nodes(arbiter, tmp_path, 1, workers=1)
    config = write_fleet_config(tmp_path, nodes)
    add_user(config, "ops", "operator")
    server = start_fleet(arbiter, config)
    token = add_token(config, "ops")
    # The new code takes a while to import, so the node's reload is still going when we pull the plug.
    (tmp_path / "app-1" / "deployed_app.py").write_text("import time\ntime.sleep(6)\n" + APP.replace("v1", "v2"))
    with server.client(token) as api:
        deploy_id = api.post("/api/v1/environments/production/reload").json()["id"]
        wait_until(lambda: api.get(f"/api/v1/deploys/{deploy_id}").json()["nodes"][0]["state"] == "reloading")
    server.master.cleanup()  # SIGKILL: no chance to write anything more
    again = start_fleet(arbiter, config)
    with again.client(token) as api:
        record = api.get(f"/api/v1/deploys/{deploy_id}").json()
        assert record["state"] == "interrupted" and "stopped during this deploy" in record["error"]
        assert api.post("/api/v1/environments/production/reload").status_code == 202  # no longer blocked
