"""Talking to one node: an Arbiter master's control API (JSON, bearer token) or a supervisord's
XML-RPC (Basic auth), both over one shared httpx.AsyncClient, each call with its own deadline.

Both kinds answer in one shape. A process is::

    {"name", "group", "kind": "program" | "worker", "state", "pid", "uptime", "rss", "cpu",
     "description"}

and every failure becomes a `NodeError` whose `state` says what the page shows: "unreachable"
(no connection, or no answer in time), "auth_failed" (401/403), or "error" (an answer that
makes no sense).
"""

from __future__ import annotations

import abc
import time
import xmlrpc.client
from typing import Any

import httpx

from arbiter.fleet.config import NodeSpec
from arbiter.fleet.errors import FleetError

ACTIONS = ("start", "stop", "restart")
# supervisord's fault numbers (supervisor/xmlrpc.py Faults) and the node API's codes for them.
FAULTS = {1: "UNKNOWN_METHOD", 2: "INCORRECT_PARAMETERS", 3: "BAD_ARGUMENTS", 10: "BAD_NAME",
          11: "BAD_SIGNAL", 20: "NO_FILE", 30: "FAILED", 50: "SPAWN_ERROR", 60: "ALREADY_STARTED",
          70: "NOT_RUNNING", 80: "SUCCESS", 90: "ALREADY_ADDED", 91: "STILL_RUNNING", 92: "CANT_REREAD"}


class NodeError(FleetError):
    """The node could not be asked, or its answer makes no sense. `state` is what the page shows."""

    CODES = {"unreachable": "NODE_UNREACHABLE", "auth_failed": "NODE_AUTH_FAILED", "error": "NODE_ERROR"}

    def __init__(self, state: str, message: str) -> None:
        super().__init__(self.CODES[state], message)
        self.state = state


def _transport_error(spec: NodeSpec, exc: Exception) -> NodeError:
    if isinstance(exc, httpx.TimeoutException):
        return NodeError("unreachable", f"{spec.name}: no answer in time")
    # The message names the address only: an exception's text might carry a request header.
    return NodeError("unreachable", f"{spec.name}: cannot connect to {spec.hostport} ({type(exc).__name__})")


class NodeClient(abc.ABC):
    """What the fleet asks of any node (an Arbiter master or a supervisord, below)."""

    def __init__(self, spec: NodeSpec, http: httpx.AsyncClient) -> None:
        self.spec, self.http = spec, http

    @abc.abstractmethod
    async def processes(self, timeout: float) -> list[dict[str, Any]]:
        """Every process of the node, web workers and programs alike."""

    @abc.abstractmethod
    async def action(self, action: str, name: str | None, timeout: float) -> list[dict[str, Any]]:
        """start/stop/restart one process, a group (`group:*`), or everything (name None)."""

    async def reload(self, wait: bool, timeout: float) -> Any:
        raise FleetError("NOT_SUPPORTED", f"{self.spec.name} is a supervisord: it has no rolling reload")

    async def scale(self, spec: str, timeout: float) -> Any:
        raise FleetError("NOT_SUPPORTED", f"{self.spec.name} is a supervisord: it has no web workers to scale")

    async def ready(self, timeout: float) -> tuple[bool, str]:
        raise FleetError("NOT_SUPPORTED", f"{self.spec.name} has no readiness probe")

    @abc.abstractmethod
    async def log(self, name: str, stream: str, offset: int, timeout: float) -> dict[str, Any]:
        """The output of one program's `stream` from byte `offset` on."""


class ArbiterNode(NodeClient):
    """An Arbiter master's `/v1` API (docs/api.md)."""

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.spec.token}"}

    async def _call(self, method: str, path: str, timeout: float, body: Any = None,
                    params: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = await self.http.request(method, self.spec.url + path, json=body, params=params,
                                               headers=self._headers(), timeout=timeout)
        except httpx.HTTPError as exc:
            raise _transport_error(self.spec, exc) from None
        if response.status_code == 401:
            raise NodeError("auth_failed", f"{self.spec.name}: the node refused the token (401)")
        try:
            data = response.json()
        except ValueError:
            raise NodeError("error", f"{self.spec.name}: answered {response.status_code} with something "
                            "that is not JSON") from None
        if not isinstance(data, dict):
            raise NodeError("error", f"{self.spec.name}: answered a {type(data).__name__}, not an object")
        if response.status_code >= 400:
            error: dict[str, Any] = data["error"] if isinstance(data.get("error"), dict) else {}
            code = str(error.get("code") or "NODE_ERROR")
            # The node's own code and status pass through (BAD_NAME 404, RELOAD_FAILED 500...).
            raise FleetError(code, f"{self.spec.name}: {error.get('message') or response.reason_phrase}",
                             response.status_code)
        return data

    async def status(self, timeout: float) -> dict[str, Any]:
        data = await self._call("GET", "/v1/status", timeout)
        if not isinstance(data.get("master"), dict) or not isinstance(data.get("programs", []), list) \
                or not isinstance(data.get("workers", []), list):
            raise NodeError("error", f"{self.spec.name}: /v1/status has no master, workers and programs")
        return data

    async def processes(self, timeout: float) -> list[dict[str, Any]]:
        return arbiter_processes(await self.status(timeout))

    async def action(self, action: str, name: str | None, timeout: float) -> list[dict[str, Any]]:
        if name is None:
            data = await self._call("POST", f"/v1/{action}", timeout, {"names": ["all"], "wait": True})
        else:
            data = await self._call("POST", f"/v1/processes/{name}/{action}", timeout, {"wait": True})
        result = data.get("result")
        return result if isinstance(result, list) else []

    async def reload(self, wait: bool, timeout: float) -> Any:
        return (await self._call("POST", "/v1/reload", timeout, {"wait": wait})).get("result")

    async def scale(self, spec: str, timeout: float) -> Any:
        return (await self._call("POST", "/v1/scale", timeout, {"spec": spec})).get("result")

    async def ready(self, timeout: float) -> tuple[bool, str]:
        try:
            response = await self.http.get(self.spec.url + "/readyz", headers=self._headers(), timeout=timeout)
        except httpx.HTTPError as exc:
            raise _transport_error(self.spec, exc) from None
        return response.status_code == 200, response.text.strip()[:200]

    async def log(self, name: str, stream: str, offset: int, timeout: float) -> dict[str, Any]:
        data = await self._call("GET", f"/v1/logs/{name}/{stream}", timeout,
                                params={"offset": offset, "format": "json"})
        return {"data": str(data.get("data", "")), "offset": data.get("offset"),
                "next_offset": data.get("next_offset"), "size": data.get("size")}


def arbiter_processes(status: dict[str, Any]) -> list[dict[str, Any]]:
    """A node's web workers and programs, in the fleet's one process shape."""
    now = time.time()
    out: list[dict[str, Any]] = []
    for index, w in enumerate(status.get("workers", [])):
        out.append({"name": f"worker_{index}", "group": "web", "kind": "worker", "state": w.get("state"),
                    "pid": w.get("pid"), "uptime": w.get("age"), "rss": w.get("rss"), "cpu": w.get("cpu"),
                    "description": f"generation {w.get('generation')}, {w.get('requests', 0)} requests"})
    for p in status.get("programs", []):
        start = p.get("start") or 0
        running = p.get("state") in ("RUNNING", "STARTING", "STOPPING")
        out.append({"name": p.get("name"), "group": p.get("group"), "kind": "program", "state": p.get("state"),
                    "pid": p.get("pid") or None, "uptime": (now - start) if running and start else None,
                    "rss": p.get("rss"), "cpu": p.get("cpu"), "description": p.get("description", ""),
                    "spawnerr": p.get("spawnerr", "")})
    return out


class SupervisorNode(NodeClient):
    """A supervisord `[inet_http_server]`, over its XML-RPC interface at /RPC2."""

    async def _rpc(self, method: str, *params: Any, timeout: float) -> Any:
        body = xmlrpc.client.dumps(params, method, allow_none=False)
        auth: httpx.Auth | httpx._client.UseClientDefault = httpx.USE_CLIENT_DEFAULT
        if self.spec.username:
            auth = httpx.BasicAuth(self.spec.username, self.spec.password)
        try:
            response = await self.http.post(self.spec.url + "/RPC2", content=body.encode(), auth=auth,
                                            headers={"Content-Type": "text/xml"}, timeout=timeout)
        except httpx.HTTPError as exc:
            raise _transport_error(self.spec, exc) from None
        if response.status_code == 401:
            raise NodeError("auth_failed", f"{self.spec.name}: supervisord refused the username/password (401)")
        if response.status_code != 200:
            raise NodeError("error", f"{self.spec.name}: /RPC2 answered HTTP {response.status_code}")
        try:
            (result,), _ = xmlrpc.client.loads(response.content)
        except xmlrpc.client.Fault as fault:
            code = FAULTS.get(fault.faultCode, "FAILED")
            raise FleetError(code, f"{self.spec.name}: {fault.faultString}") from None
        except Exception:  # the XML parser raises several kinds: all mean garbage
            raise NodeError("error", f"{self.spec.name}: /RPC2 answered something that is not XML-RPC") from None
        return result

    async def processes(self, timeout: float) -> list[dict[str, Any]]:
        infos = await self._rpc("supervisor.getAllProcessInfo", timeout=timeout)
        if not isinstance(infos, list) or not all(isinstance(i, dict) for i in infos):
            raise NodeError("error", f"{self.spec.name}: getAllProcessInfo answered {type(infos).__name__}")
        return [supervisor_process(i) for i in infos]

    async def raw_processes(self, timeout: float) -> list[dict[str, Any]]:
        """getAllProcessInfo as supervisord answers it (Cesi's API passes these through)."""
        result = await self._rpc("supervisor.getAllProcessInfo", timeout=timeout)
        return result if isinstance(result, list) else []

    async def action(self, action: str, name: str | None, timeout: float) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = []
        if action in ("stop", "restart"):
            results = await self._one("stop", name, timeout, tolerate_not_running=action == "restart")
        if action in ("start", "restart"):
            results = await self._one("start", name, timeout)
        return results

    async def _one(self, action: str, name: str | None, timeout: float,
                   tolerate_not_running: bool = False) -> list[dict[str, Any]]:
        verb = "start" if action == "start" else "stop"
        if name is None:
            reply = await self._rpc(f"supervisor.{verb}AllProcesses", True, timeout=timeout)
        elif name.endswith(":*"):
            reply = await self._rpc(f"supervisor.{verb}ProcessGroup", name[:-2], True, timeout=timeout)
        else:
            try:
                await self._rpc(f"supervisor.{verb}Process", name, True, timeout=timeout)
            except FleetError as exc:
                if not (tolerate_not_running and exc.code == "NOT_RUNNING"):
                    raise
            group, _, proc = name.rpartition(":")
            return [{"name": proc, "group": group or proc, "status": "OK", "description": "OK"}]
        return [{"name": r.get("name"), "group": r.get("group"), "status": FAULTS.get(r.get("status", 80), "FAILED")
                 if r.get("status") != 80 else "OK", "description": r.get("description", "")}
                for r in reply if isinstance(r, dict)] if isinstance(reply, list) else []

    async def log(self, name: str, stream: str, offset: int, timeout: float) -> dict[str, Any]:
        method = "supervisor.tailProcessStdoutLog" if stream == "stdout" else "supervisor.tailProcessStderrLog"
        # tail*Log(name, offset, length): from `offset`, at most `length` bytes; a negative
        # offset means "the last bytes", as the Arbiter API does.
        length = 65536 if offset >= 0 else -offset
        data, next_offset, _overflow = await self._rpc(method, name, max(offset, 0), length, timeout=timeout)
        return {"data": str(data), "offset": max(0, int(next_offset) - len(str(data).encode())),
                "next_offset": int(next_offset), "size": int(next_offset)}


def supervisor_process(info: dict[str, Any]) -> dict[str, Any]:
    running = info.get("statename") in ("RUNNING", "STARTING", "STOPPING")
    start, now = info.get("start") or 0, info.get("now") or time.time()
    return {"name": info.get("name"), "group": info.get("group"), "kind": "program",
            "state": info.get("statename"), "pid": info.get("pid") or None,
            "uptime": (now - start) if running and start else None, "rss": None, "cpu": None,
            "description": info.get("description", ""), "spawnerr": info.get("spawnerr", "")}


def client_for(spec: NodeSpec, http: httpx.AsyncClient) -> NodeClient:
    return ArbiterNode(spec, http) if spec.kind == "arbiter" else SupervisorNode(spec, http)
