"""Rolling deploys across hosts: reload an environment's Arbiter nodes `batch` at a time.

For each node: POST /v1/reload {"wait": true} (the node's own zero-downtime rolling reload,
answered when it is done or failed), then poll /readyz until it answers 200. The first failure
stops the deploy; the nodes after it are left untouched and marked "skipped". Progress is
written to SQLite after every step, so `GET /api/v1/deploys/{id}` reads the same record from any
process, and after the fleet server's own restart (a deploy cut short by that is marked
"interrupted"). The database allows one running deploy per environment (a unique index).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Any

from arbiter import procfs
from arbiter.fleet.config import NodeSpec
from arbiter.fleet.errors import FleetError
from arbiter.fleet.fleet import Fleet
from arbiter.fleet.store import Store

READY_POLL = 0.2
log = logging.getLogger("arbiter.fleet")


def owner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def owner_alive(owner: str) -> bool:
    """Whether the process that runs a deploy still lives (it is on this host, or we cannot tell)."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    # A zombie (killed, not yet reaped by its parent or init) runs no deploy any more.
    found = procfs.stat(int(pid))
    return found is not None and found.state != "Z"


class Deployer:
    def __init__(self, fleet: Fleet, store: Store) -> None:
        self.fleet, self.store = fleet, store
        self.tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, environment: str, batch: int, account: str) -> dict[str, Any]:
        specs = self.fleet.environment(environment)
        targets = [s for s in specs if s.kind == "arbiter"]
        if not targets:
            raise FleetError("BAD_ARGUMENTS", f"environment {environment!r} has no Arbiter node to reload "
                             "(supervisord nodes have no rolling reload)")
        if batch < 1:
            raise FleetError("BAD_ARGUMENTS", f"batch must be 1 or more, got {batch}")
        nodes = [{"node": s.name, "state": "pending", "error": None, "started": None, "finished": None}
                 for s in targets]
        deploy_id = self.store.start_deploy(environment, batch, account, owner_id(), nodes)
        task = asyncio.get_running_loop().create_task(self._run(deploy_id, targets, batch, nodes, account))
        self.tasks[deploy_id] = task
        self.tasks[deploy_id].add_done_callback(lambda _: self.tasks.pop(deploy_id, None))
        record = self.store.deploy(deploy_id)
        assert record is not None
        return record

    async def _run(self, deploy_id: str, targets: list[NodeSpec], batch: int, nodes: list[dict[str, Any]],
                   account: str) -> None:
        by_name = {n["node"]: n for n in nodes}
        try:
            for start in range(0, len(targets), batch):
                group = targets[start:start + batch]
                for spec in group:
                    by_name[spec.name].update(state="reloading", started=time.time())
                self.store.update_deploy(deploy_id, nodes)
                errors = await asyncio.gather(*(self._reload_one(spec, by_name[spec.name], deploy_id, nodes)
                                                for spec in group))
                failed = [(spec, err) for spec, err in zip(group, errors, strict=True) if err]
                if failed:
                    for spec in targets[start + batch:]:
                        by_name[spec.name]["state"] = "skipped"
                    reason = "; ".join(f"{spec.name}: {err}" for spec, err in failed)
                    self.store.update_deploy(deploy_id, nodes, "failed", f"stopped at {reason}")
                    log.warning("deploy %s failed: %s", deploy_id, reason)
                    self.store.log_activity(account, "deploy", ",".join(s.name for s, _ in failed),
                                            targets[0].environment, "failed", f"{deploy_id}: {reason}")
                    return
            self.store.update_deploy(deploy_id, nodes, "done")
            self.store.log_activity(account, "deploy", ",".join(s.name for s in targets), targets[0].environment,
                                    "OK", f"{deploy_id}: every node reloaded and ready")
        except asyncio.CancelledError:
            self.store.update_deploy(deploy_id, nodes, "interrupted", "the fleet server stopped during this deploy")
            raise
        except Exception as exc:  # recorded, never lost in a task nobody awaits
            log.exception("deploy %s crashed", deploy_id)
            self.store.update_deploy(deploy_id, nodes, "failed", f"{type(exc).__name__}: {exc}")

    async def _reload_one(self, spec: NodeSpec, entry: dict[str, Any], deploy_id: str,
                          nodes: list[dict[str, Any]]) -> str | None:
        client = self.fleet.client(spec.name)
        timeout = self.fleet.config.deploy_timeout
        try:
            await client.reload(True, timeout)
        except FleetError as exc:
            entry.update(state="failed", error=exc.message, finished=time.time())
            return exc.message
        entry["state"] = "waiting_ready"
        self.store.update_deploy(deploy_id, nodes)
        deadline = time.monotonic() + timeout
        why = ""
        while time.monotonic() < deadline:
            try:
                ok, why = await client.ready(min(5.0, timeout))
            except FleetError as exc:
                ok, why = False, exc.message
            if ok:
                entry.update(state="done", finished=time.time())
                return None
            await asyncio.sleep(READY_POLL)
        message = f"not ready within {timeout:g} s after its reload ({why})"
        entry.update(state="failed", error=message, finished=time.time())
        return message

    async def close(self) -> None:
        for task in list(self.tasks.values()):
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)
