"""Every node at once: status queries fan out concurrently, each under the per-node deadline, so
a node that is down, slow or confused costs the answer at most one deadline and shows as what it
is, never hiding the others (Cesi's worst habit).

The only thing remembered about a node is since when it has been failing, for the page.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from arbiter.fleet.config import FleetConfig, NodeSpec
from arbiter.fleet.errors import FleetError
from arbiter.fleet.nodes import NodeClient, NodeError, client_for


class Fleet:
    def __init__(self, config: FleetConfig, http: httpx.AsyncClient) -> None:
        self.config, self.http = config, http
        self.clients: dict[str, NodeClient] = {n.name: client_for(n, http) for n in config.nodes}
        self._failing_since: dict[str, float] = {}

    def client(self, name: str) -> NodeClient:
        client = self.clients.get(name)
        if client is None:
            raise FleetError("BAD_NAME", f"no node named {name!r}")
        return client

    def environment(self, env: str) -> list[NodeSpec]:
        nodes = [n for n in self.config.nodes if n.environment == env]
        if not nodes:
            raise FleetError("BAD_NAME", f"no environment named {env!r} (known: {', '.join(self.config.environments)})")
        return nodes

    async def node_status(self, spec: NodeSpec) -> dict[str, Any]:
        """One node's entry of GET /api/v1/nodes: never raises; a failure is its state."""
        entry: dict[str, Any] = {"name": spec.name, "environment": spec.environment, "kind": spec.kind,
                                 "address": spec.hostport, "state": "up", "error": None, "since": None,
                                 "processes": []}
        deadline = self.config.deadline
        try:
            # wait_for on top of httpx's own timeout: the deadline covers connect, a slow-drip
            # answer and parsing together.
            entry["processes"] = await asyncio.wait_for(self.clients[spec.name].processes(deadline), deadline)
        except NodeError as exc:
            entry.update(state=exc.state, error=exc.message)
        except (asyncio.TimeoutError, TimeoutError):
            entry.update(state="unreachable", error=f"{spec.name}: no answer within {deadline:g} s")
        except FleetError as exc:
            entry.update(state="error", error=exc.message)
        except Exception as exc:  # a node must never take the whole answer down with it
            entry.update(state="error", error=f"{spec.name}: {type(exc).__name__}")
        if entry["state"] == "up":
            self._failing_since.pop(spec.name, None)
        else:
            entry["since"] = self._failing_since.setdefault(spec.name, time.time())
        return entry

    async def status(self, nodes: list[NodeSpec] | None = None) -> list[dict[str, Any]]:
        targets = list(self.config.nodes) if nodes is None else nodes
        return list(await asyncio.gather(*(self.node_status(n) for n in targets)))

    async def act(self, specs: list[NodeSpec], action: str, name: str | None) -> list[dict[str, Any]]:
        """`action` on `name` (or everything) on several nodes at once: one result per node."""
        async def one(spec: NodeSpec) -> dict[str, Any]:
            try:
                results = await self.clients[spec.name].action(action, name, self.config.action_timeout)
                failed = [r for r in results if r.get("status") not in ("OK", None)]
                return {"node": spec.name, "ok": not failed, "result": results}
            except FleetError as exc:
                return {"node": spec.name, "ok": False, "error": exc.as_json()["error"]}
        return list(await asyncio.gather(*(one(s) for s in specs)))
