"""The fleet server end to end: three real Arbiter masters with TCP control and tokens, one real
supervisord with [inet_http_server], and `arbiter fleet` serving the API, all on loopback."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from conftest import wait_dead, wait_until
from fleet_helpers import (  # noqa: F401  (fixtures)
    PASSWORD, FleetServer, Node, add_token, add_user, fleet_cli, start_fleet, start_node, supervisord, wait_node_state,
    write_fleet_config)

pytest.importorskip("starlette")
pytest.importorskip("httpx")


@pytest.fixture
def fleet(arbiter, supervisord, tmp_path: Path) -> tuple[FleetServer, list[Node], object]:
    nodes = [start_node(arbiter, tmp_path, f"web-{i}") for i in range(1, 4)]
    sup = supervisord()
    config = write_fleet_config(tmp_path, nodes, [("old-box", sup)],
                                environments={"web-3": "staging"}, extra="deadline = 2.0")
    add_user(config, "alice", "operator")
    add_user(config, "vic", "viewer")
    for node in nodes:
        node.master.wait_ready(1)
    return start_fleet(arbiter, config), nodes, sup


def test_lists_every_node_and_restarts_on_the_right_one_only(fleet) -> None:
    server, nodes, sup = fleet
    token = add_token(server.config, "alice")
    with server.client(token) as api:
        listed = api.get("/api/v1/nodes").json()["nodes"]
        assert [n["name"] for n in listed] == ["web-1", "web-2", "web-3", "old-box"]
        assert {n["name"]: n["state"] for n in listed} == dict.fromkeys(["web-1", "web-2", "web-3", "old-box"], "up")
        assert {n["kind"] for n in listed} == {"arbiter", "supervisor"}
        web1 = listed[0]
        assert {(p["group"], p["name"]) for p in web1["processes"] if p["kind"] == "program"} == {
            ("ticker", "ticker"), ("pool", "pool_0"), ("pool", "pool_1")}
        assert [p["state"] for p in web1["processes"] if p["kind"] == "worker"] == ["READY"]
        old = listed[3]
        assert {p["name"]: p["state"] for p in old["processes"]} == {"legacy": "RUNNING", "worker": "RUNNING"}
        assert all(p["pid"] for p in old["processes"])
        text = str(listed)
        assert sup.password not in text and all(n.token_file.read_text().strip() not in text for n in nodes)

        before = {n.name: n.program_pid("ticker") for n in nodes}
        response = api.post("/api/v1/nodes/web-2/processes/ticker/restart")
        assert response.status_code == 200, response.text
        after = {n.name: n.program_pid("ticker") for n in nodes}
        assert after["web-2"] != before["web-2"]
        assert after["web-1"] == before["web-1"] and after["web-3"] == before["web-3"]

        # A group on the supervisord, by its XML-RPC.
        legacy_pid = sup.rpc().supervisor.getProcessInfo("legacy")["pid"]
        assert api.post("/api/v1/nodes/old-box/processes/legacy/restart").status_code == 200
        assert sup.rpc().supervisor.getProcessInfo("legacy")["pid"] != legacy_pid

        entries = api.get("/api/v1/activity").json()["activity"]
        assert entries[1]["account"] == "alice" and entries[1]["action"] == "restart"
        assert (entries[1]["node"], entries[1]["target"], entries[1]["result"]) == ("web-2", "ticker", "OK")
        assert (entries[0]["node"], entries[0]["target"]) == ("old-box", "legacy")

        # A whole environment, one group.
        pool_before = {n.name: n.program_pid("pool_0") for n in nodes}
        result = api.post("/api/v1/environments/production/restart", json={"group": "pool"}).json()["result"]
        assert sorted(r["node"] for r in result) == ["web-1", "web-2"] and all(r["ok"] for r in result)
        pool_after = {n.name: n.program_pid("pool_0") for n in nodes}
        assert pool_after["web-3"] == pool_before["web-3"]
        assert pool_after["web-1"] != pool_before["web-1"] and pool_after["web-2"] != pool_before["web-2"]

        # Errors keep the node API's shape.
        missing = api.post("/api/v1/nodes/web-1/processes/nope/start")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "BAD_NAME"
        assert api.get("/api/v1/nodes/nowhere/processes").json()["error"]["code"] == "BAD_NAME"
        assert api.post("/api/v1/nodes/old-box/reload").json()["error"]["code"] == "NOT_SUPPORTED"
    log = server.master.log()
    assert token not in log and sup.password not in log
    assert all(n.token_file.read_text().strip() not in log for n in nodes)


def test_roles_csrf_and_origin(fleet) -> None:
    server, nodes, _ = fleet
    pid = nodes[0].program_pid("ticker")
    viewer, _ = server.login("vic")
    refused = viewer.post("/api/v1/nodes/web-1/processes/ticker/restart",
                          headers={"X-CSRF-Token": viewer.get("/api/v1/session").json()["csrf"]})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "FORBIDDEN"
    assert viewer.get("/api/v1/nodes").status_code == 200

    browser, csrf = server.login("alice")
    no_token = browser.post("/api/v1/nodes/web-1/processes/ticker/restart", headers={"Origin": server.url})
    assert no_token.status_code == 403 and no_token.json()["error"]["code"] == "CSRF_FAILED"
    foreign = browser.post("/api/v1/nodes/web-1/processes/ticker/restart",
                           headers={"Origin": "http://evil.example", "X-CSRF-Token": csrf})
    assert foreign.status_code == 403
    cross_site = browser.post("/api/v1/nodes/web-1/processes/ticker/stop",
                              headers={"Sec-Fetch-Site": "cross-site", "X-CSRF-Token": csrf})
    assert cross_site.status_code == 403
    assert nodes[0].program_pid("ticker") == pid  # nothing changed
    assert browser.post("/api/v1/nodes/web-1/processes/ticker/restart",
                        headers={"Origin": server.url, "X-CSRF-Token": csrf}).status_code == 200
    assert nodes[0].program_pid("ticker") != pid

    anonymous = server.client()
    assert anonymous.get("/api/v1/nodes").status_code == 401
    assert anonymous.get("/metrics").status_code == 401
    assert anonymous.post("/api/v1/login", json={"username": "alice", "password": "wrong"},
                          headers={"Origin": "http://evil.example"}).status_code == 403
    cookie = browser.cookies.jar
    set_cookie = [c for c in cookie if c.name == "fleet_session"][0]
    assert set_cookie.has_nonstandard_attr("HttpOnly") and set_cookie._rest.get("SameSite", "").lower() == "strict"
    # Cesi's GET actions are refused, naming the POST route.
    get_action = browser.get("/api/v2/nodes/web-1/processes/ticker/stop/")
    assert get_action.status_code == 405 and "POST /api/v1/nodes/web-1/processes/ticker/stop" in get_action.text
    assert nodes[0].program_pid("ticker") != pid

    # Cesi's login and read routes, in Cesi's shape, without node passwords.
    cesi = server.client()
    login = cesi.post("/api/v2/auth/login/", json={"username": "vic", "password": "correct horse battery"})
    assert login.json() == {"status": "success", "message": "Valid username/password"}
    listed = cesi.get("/api/v2/nodes/").json()
    assert listed["status"] == "success"
    old = [n for n in listed["nodes"] if n["name"] == "old-box"][0]
    assert old["connected"] is True and "password" not in old and "username" not in old
    assert {p["name"]: (p["statename"], p["state"]) for p in old["processes"]} == {
        "legacy": ("RUNNING", 20), "worker": ("RUNNING", 20)}
    one = cesi.get("/api/v2/nodes/web-1/processes/").json()
    assert one["status"] == "success" and any(p["name"] == "ticker" for p in one["processes"])


def test_login_is_rate_limited(fleet) -> None:
    server, _, _ = fleet
    client = server.client()
    codes = [client.post("/api/v1/login", json={"username": "vic", "password": f"wrong-{i}"}).status_code
             for i in range(6)]
    assert codes[:5] == [401] * 5 and codes[5] == 429
    # Even the right password waits out the window now.
    assert client.post("/api/v1/login", json={"username": "vic", "password": "correct horse battery"}).status_code == 429


def test_a_dead_node_never_hides_the_others(fleet, arbiter, tmp_path: Path) -> None:
    server, nodes, _ = fleet
    token = add_token(server.config, "vic")
    victim = nodes[1]
    children = psutil.Process(victim.master.pid).children(recursive=True)
    os.kill(victim.master.pid, signal.SIGKILL)
    try:
        with server.client(token) as api:
            start = time.monotonic()
            listed = {n["name"]: n for n in api.get("/api/v1/nodes").json()["nodes"]}
            took = time.monotonic() - start
            assert took < 2.0 + 1.5, took
            assert listed["web-2"]["state"] == "unreachable" and listed["web-2"]["since"]
            assert "cannot connect" in listed["web-2"]["error"]
            assert all(listed[n]["state"] == "up" for n in ("web-1", "web-3", "old-box"))
            metrics = api.get("/metrics").text
            assert 'arbiter_fleet_node_up{node="web-2",environment="production",kind="arbiter"} 0' in metrics
            for child in children:  # the killed master's workers and programs: ours to reap
                child.kill()
            wait_dead(children, timeout=10)
            again = start_node(arbiter, tmp_path, "web-2-again", control_port=victim.control_port,
                               token=victim.token_file.read_text().strip())
            again.master.wait_ready(1)
            entry = wait_node_state(api, "web-2", "up")
            assert entry["since"] is None and entry["processes"]
    finally:
        for child in children:
            if child.is_running():
                child.kill()



def test_scale_reload_logs_and_accounts(fleet) -> None:
    server, nodes, sup = fleet
    add_user(server.config, "root", "admin")
    admin = server.client(add_token(server.config, "root"))
    operator = server.client(add_token(server.config, "alice"))
    generation = nodes[0].status()["master"]["generation"]
    scaled = operator.post("/api/v1/nodes/web-1/scale", json={"spec": "+1"})
    assert scaled.status_code == 200, scaled.text
    wait_until(lambda: [w["state"] for w in nodes[0].status()["workers"]] == ["READY", "READY"], timeout=20)
    assert operator.post("/api/v1/nodes/web-1/scale", json={"spec": "lots"}).json()["error"]["code"] == "BAD_ARGUMENTS"
    reloaded = operator.post("/api/v1/nodes/web-1/reload", json={"wait": True})
    assert reloaded.status_code == 200, reloaded.text
    assert nodes[0].status()["master"]["generation"] == generation + 1
    assert nodes[1].status()["master"]["generation"] == 1  # only that node

    log = operator.get("/api/v1/nodes/old-box/logs/legacy", params={"offset": -2000}).json()
    assert "tick" in log["data"] and log["next_offset"] > 0
    more = wait_until(lambda: operator.get("/api/v1/nodes/old-box/logs/legacy",
                                           params={"offset": log["next_offset"]}).json()["data"], timeout=10)
    assert "tick" in more  # following: only what was written since
    assert operator.get("/api/v1/nodes/web-1/logs/ticker").json()["data"] == ""  # `sleep` says nothing
    missing = operator.get("/api/v1/nodes/web-1/logs/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "BAD_NAME"  # the node's own code

    assert operator.post("/api/v1/users", json={"name": "bob", "role": "viewer", "password": "x" * 12}).status_code == 403
    made = admin.post("/api/v1/users", json={"name": "bob", "role": "viewer", "password": "bob's passphrase"})
    assert made.status_code == 201
    assert [u["name"] for u in admin.get("/api/v1/users").json()["users"]] == ["alice", "bob", "root", "vic"]
    bob, _ = server.login("bob", "bob's passphrase")
    assert bob.get("/api/v1/nodes").status_code == 200
    assert admin.post("/api/v1/users/bob/remove").status_code == 200
    assert bob.get("/api/v1/nodes").status_code == 401  # its session went with it
    actions = [(a["account"], a["action"], a["node"]) for a in admin.get("/api/v1/activity").json()["activity"]]
    assert ("alice", "scale", "web-1") in actions and ("alice", "reload", "web-1") in actions
    assert ("root", "add user", "-") in actions and ("root", "remove user", "-") in actions
