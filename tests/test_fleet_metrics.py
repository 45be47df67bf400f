"""Prometheus: the fleet server's /metrics, its http_sd target list, and a node's read-only
metrics token, all read by prometheus_client's own parser."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from fleet_helpers import add_token, add_user, start_fleet, start_node, write_fleet_config

parser = pytest.importorskip("prometheus_client.parser")


def test_metrics_targets_and_a_metrics_only_token(arbiter, tmp_path: Path) -> None:
    metrics_token = tmp_path / "metrics.token"
    metrics_token.write_text("scrape-only-secret\n")
    node = start_node(arbiter, tmp_path, "web-1", extra=f'metrics_token_file = "{metrics_token}"\n')
    node.master.wait_ready(1)
    scrape = {"Authorization": "Bearer scrape-only-secret"}
    response = httpx.get(node.url + "/metrics", headers=scrape)
    assert response.status_code == 200
    names = {family.name for family in parser.text_string_to_metric_families(response.text)}
    assert "arbiter_up" in names
    # The metrics token opens /metrics and nothing else.
    assert httpx.get(node.url + "/v1/status", headers=scrape).status_code == 401
    assert httpx.post(node.url + "/v1/shutdown", headers=scrape, json={}).status_code == 401
    assert httpx.get(node.url + "/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert node.api("GET", "/metrics").status_code == 200  # the control token still works

    config = write_fleet_config(tmp_path, [node], raw_nodes=(
        '[[nodes]]\nname = "gone"\nenvironment = "staging"\nurl = "http://127.0.0.1:9"\n'
        f'token_file = "{node.token_file}"\n'))
    add_user(config, "prom", "viewer")
    server = start_fleet(arbiter, config)
    token = add_token(config, "prom")
    with server.client(token) as api:
        families = {f.name: f for f in parser.text_string_to_metric_families(api.get("/metrics").text)}
        up = {s.labels["node"]: s.value for s in families["arbiter_fleet_node_up"].samples}
        assert up == {"web-1": 1.0, "gone": 0.0}
        running = [s for s in families["arbiter_fleet_processes"].samples
                   if s.labels["node"] == "web-1" and s.labels["state"] == "RUNNING"]
        assert running and running[0].value == 3  # ticker, pool_0, pool_1
        targets = api.get("/api/v1/prometheus/targets").json()
        assert targets[0]["targets"] == [f"127.0.0.1:{node.control_port}"]
        assert targets[0]["labels"]["fleet_node"] == "web-1"
        assert targets[0]["labels"]["__metrics_path__"] == "/metrics"
        assert "token" not in str(targets)
