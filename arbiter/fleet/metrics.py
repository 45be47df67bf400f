"""The fleet server's own `/metrics` (node up, processes by state per node) and the node list in
Prometheus' `http_sd` format, so a Prometheus scrapes every node without a hand-kept list."""

from __future__ import annotations

from collections import Counter
from typing import Any

from arbiter.fleet.config import FleetConfig

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: Any) -> str:
    return str(value).replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _labels(labels: dict[str, Any]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}"


def render(nodes: list[dict[str, Any]]) -> str:
    """Prometheus text (0.0.4) for one status snapshot of every node."""
    lines = ["# HELP arbiter_fleet_node_up 1 when the node answered within the deadline, else 0.",
             "# TYPE arbiter_fleet_node_up gauge"]
    for node in nodes:
        labels = {"node": node["name"], "environment": node["environment"], "kind": node["kind"]}
        lines.append(f"arbiter_fleet_node_up{_labels(labels)} {int(node['state'] == 'up')}")
    lines += ["# HELP arbiter_fleet_node_state 1 for the state each node is in (up, unreachable, auth_failed, error).",
              "# TYPE arbiter_fleet_node_state gauge"]
    for node in nodes:
        for state in ("up", "unreachable", "auth_failed", "error"):
            labels = {"node": node["name"], "environment": node["environment"], "state": state}
            lines.append(f"arbiter_fleet_node_state{_labels(labels)} {int(node['state'] == state)}")
    lines += ["# HELP arbiter_fleet_processes Processes (programs and web workers) by state on each node.",
              "# TYPE arbiter_fleet_processes gauge"]
    for node in nodes:
        counts = Counter(str(p.get("state")) for p in node["processes"])
        for state, count in sorted(counts.items()):
            labels = {"node": node["name"], "environment": node["environment"], "state": state}
            lines.append(f"arbiter_fleet_processes{_labels(labels)} {count}")
    return "\n".join(lines) + "\n"


def http_sd_targets(config: FleetConfig) -> list[dict[str, Any]]:
    """One target group per Arbiter node (supervisord serves no /metrics)."""
    groups = []
    for node in config.nodes:
        if node.kind != "arbiter":
            continue
        scheme = node.url.split("://", 1)[0]
        groups.append({"targets": [node.hostport],
                       "labels": {"__scheme__": scheme, "__metrics_path__": "/metrics",
                                  "fleet_node": node.name, "fleet_environment": node.environment}})
    return groups
