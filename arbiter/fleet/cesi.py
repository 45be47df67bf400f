"""Cesi's API v2, as far as scripts written for it need: its login and its read routes answer in
its shape (`{"status": "success", ...}`), without the node usernames and passwords Cesi's own
answers carry. Its actions were GET requests (a link on any page could stop a process): here
they answer 405 and name the POST route of /api/v1 that does the same.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from arbiter.fleet import app as app_mod
from arbiter.fleet.app import Context, guarded
from arbiter.fleet.auth import Principal

# Supervisor's state numbers, which Cesi's clients read from "state".
STATE_CODES = {"STOPPED": 0, "STARTING": 10, "RUNNING": 20, "BACKOFF": 30, "STOPPING": 40, "EXITED": 100,
               "FATAL": 200, "UNKNOWN": 1000}


def _process(p: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    return {"name": p["name"], "group": p["group"], "statename": p["state"],
            "state": STATE_CODES.get(str(p["state"]), 20 if p["state"] == "READY" else 1000),
            "pid": p["pid"] or 0, "description": p.get("description", ""), "spawnerr": p.get("spawnerr", ""),
            "uptime": int(p["uptime"] or 0), "node": node["name"], "environment": node["environment"]}


def _node(entry: dict[str, Any]) -> dict[str, Any]:
    host, _, port = entry["address"].rpartition(":")
    return {"name": entry["name"], "environment": entry["environment"], "host": host, "port": port,
            "connected": entry["state"] == "up", "processes": [_process(p, entry) for p in entry["processes"]]}


def _error(message: str, status: int, code: str) -> Response:
    return JSONResponse({"status": "error", "message": message, "error": {"code": code, "message": message}},
                        status_code=status)


@guarded("viewer")
async def get_nodes(ctx: Context, request: Request, who: Principal) -> Response:
    return JSONResponse({"status": "success", "nodes": [_node(e) for e in await ctx.fleet.status()]})


async def _entry(ctx: Context, name: str) -> dict[str, Any] | None:
    spec = ctx.config.node(name)
    return (await ctx.fleet.status([spec]))[0] if spec else None


@guarded("viewer")
async def get_node(ctx: Context, request: Request, who: Principal) -> Response:
    entry = await _entry(ctx, request.path_params["node"])
    if entry is None:
        return _error("Wrong node name", 400, "BAD_NAME")
    return JSONResponse({"status": "success", "node": _node(entry)})


@guarded("viewer")
async def get_processes(ctx: Context, request: Request, who: Principal) -> Response:
    entry = await _entry(ctx, request.path_params["node"])
    if entry is None:
        return _error("Wrong node name", 400, "BAD_NAME")
    if entry["state"] != "up":
        return _error("Node is not connected", 400, "NODE_UNREACHABLE")
    return JSONResponse({"status": "success", "processes": [_process(p, entry) for p in entry["processes"]]})


async def get_action(request: Request) -> Response:
    node, action = request.path_params["node"], request.path_params["action"]
    process = request.path_params.get("process")
    route = f"/api/v1/nodes/{node}/processes/{process}/{action}" if process else f"/api/v1/nodes/{node}/{action}"
    return _error(f"{action} by GET is refused (a link could trigger it); send POST {route} "
                  "with a session's X-CSRF-Token or an API token", 405, "METHOD_NOT_ALLOWED")


async def cesi_login(request: Request) -> Response:
    response = await app_mod.login(request)  # raises on a wrong password, the rate limit...
    answer = JSONResponse({"status": "success", "message": "Valid username/password"})
    answer.raw_headers += [(k, v) for k, v in response.raw_headers if k == b"set-cookie"]
    return answer


def routes() -> list[BaseRoute]:
    v2 = "/api/v2"
    return [
        Route(f"{v2}/auth/login/", cesi_login, methods=["POST"]),
        Route(f"{v2}/nodes/", get_nodes), Route(f"{v2}/nodes/{{node}}/", get_node),
        Route(f"{v2}/nodes/{{node}}/processes/", get_processes),
        Route(f"{v2}/nodes/{{node}}/processes/{{process}}/{{action}}/", get_action,
              methods=["GET", "POST", "PUT", "DELETE"]),
        Route(f"{v2}/nodes/{{node}}/all-processes/{{action}}/", get_action, methods=["GET", "POST", "PUT", "DELETE"]),
    ]
