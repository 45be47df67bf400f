"""Moving from Cesi: its cesi.conf.toml as it is, against a real supervisord, its first admin, its
SQLite file and its activity log file, and its API shape for scripts."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fleet_helpers import FleetServer, start_fleet, supervisord  # noqa: F401  (fixture)

pytest.importorskip("starlette")


def test_cesi_conf_runs_as_it_is(arbiter, supervisord, tmp_path: Path) -> None:
    sup = supervisord()
    config = tmp_path / "cesi.conf.toml"
    config.write_text(textwrap.dedent(f'''
        [cesi]
        database = "sqlite:///users.db"
        activity_log = "activity.log"
        admin_username = "boss"
        admin_password = "not the default one"

        [[nodes]]
        name = "box-1"
        environment = "prod"
        username = "{sup.username}"
        password = "{sup.password}"
        host = "127.0.0.1"
        port = "{sup.port}"
    '''))
    server: FleetServer = start_fleet(arbiter, config)
    assert "Made the first admin account 'boss'" in server.master.log()
    assert (tmp_path / "users.db").exists()
    cesi = server.client()
    assert cesi.post("/api/v2/auth/login/", json={"username": "boss", "password": "not the default one"}).json() == {
        "status": "success", "message": "Valid username/password"}
    node = cesi.get("/api/v2/nodes/box-1/").json()["node"]
    assert node["connected"] and node["host"] == "127.0.0.1" and node["port"] == str(sup.port)
    assert "password" not in node
    csrf = cesi.get("/api/v1/session").json()["csrf"]
    pid = sup.rpc().supervisor.getProcessInfo("worker")["pid"]
    done = cesi.post("/api/v1/nodes/box-1/processes/worker/restart", headers={"X-CSRF-Token": csrf, "Origin": server.url})
    assert done.status_code == 200, done.text
    assert sup.rpc().supervisor.getProcessInfo("worker")["pid"] != pid
    lines = (tmp_path / "activity.log").read_text()
    assert "boss restart box-1 worker: OK" in lines and "boss login" in lines
    assert sup.password not in lines
