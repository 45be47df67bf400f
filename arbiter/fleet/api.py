"""The JSON API under /api/v1: what the page does, for scripts too (docs/fleet.md).

Reads need a viewer, actions an operator, accounts an admin. Every action lands in the activity
log with who, when, the node, the process and the result. Node secrets never appear in an answer.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from arbiter.fleet import metrics
from arbiter.fleet.app import Context, guarded, json_body
from arbiter.fleet.auth import Principal, hash_password
from arbiter.fleet.errors import FleetError
from arbiter.fleet.nodes import ACTIONS

_NAME = re.compile(r"[A-Za-z0-9_.:*-]{1,200}\Z")
_SCALE = re.compile(r"[+=-]\d{1,3}\Z")
FAILING_FIRST = {"auth_failed": 0, "unreachable": 1, "error": 2, "up": 3}


def _process_name(name: str) -> str:
    if not _NAME.match(name) or ("*" in name and not name.endswith(":*")):
        raise FleetError("BAD_NAME", f"process name {name!r}: expected NAME, GROUP:NAME or GROUP:*")
    return name


def _action(action: str, allowed: tuple[str, ...]) -> str:
    if action not in allowed:
        raise FleetError("NOT_FOUND", f"no action {action!r} here (known: {', '.join(allowed)})")
    return action


def _outcome(results: list[dict[str, Any]]) -> str:
    bad = [r for r in results if r.get("status") not in ("OK", None)]
    return "OK" if not bad else ", ".join(f"{r.get('group')}:{r.get('name')} {r.get('status')}" for r in bad)


# -- reading -----------------------------------------------------------------------------------------

@guarded("viewer")
async def nodes(ctx: Context, request: Request, who: Principal) -> Response:
    q = request.query_params
    specs = [n for n in ctx.config.nodes
             if q.get("environment") in (None, n.environment) and q.get("node") in (None, n.name)]
    entries = await ctx.fleet.status(specs)
    if q.get("state"):
        entries = [e for e in entries if e["state"] == q["state"]]
    return JSONResponse({"nodes": entries, "deadline": ctx.config.deadline})


@guarded("viewer")
async def node(ctx: Context, request: Request, who: Principal) -> Response:
    ctx.fleet.client(request.path_params["node"])
    spec = ctx.config.node(request.path_params["node"])
    assert spec is not None
    return JSONResponse((await ctx.fleet.status([spec]))[0])


@guarded("viewer")
async def processes(ctx: Context, request: Request, who: Principal) -> Response:
    client = ctx.fleet.client(request.path_params["node"])
    found = await client.processes(ctx.config.deadline)
    return JSONResponse({"node": client.spec.name, "processes": found})


@guarded("viewer")
async def logs(ctx: Context, request: Request, who: Principal) -> Response:
    client = ctx.fleet.client(request.path_params["node"])
    name = _process_name(request.path_params["name"])
    stream = request.query_params.get("stream", "stdout")
    if stream not in ("stdout", "stderr"):
        raise FleetError("BAD_ARGUMENTS", f"stream {stream!r}: expected stdout or stderr")
    try:
        offset = int(request.query_params.get("offset", "-8192"))
    except ValueError:
        raise FleetError("BAD_ARGUMENTS", "offset must be an integer") from None
    return JSONResponse(await client.log(name, stream, offset, ctx.config.deadline))


@guarded("viewer")
async def activity(ctx: Context, request: Request, who: Principal) -> Response:
    try:
        limit = min(500, int(request.query_params.get("limit", "100")))
        before = int(request.query_params["before"]) if "before" in request.query_params else None
    except ValueError:
        raise FleetError("BAD_ARGUMENTS", "limit and before must be integers") from None
    return JSONResponse({"activity": ctx.store.activity(limit, before)})


@guarded("viewer")
async def deploys(ctx: Context, request: Request, who: Principal) -> Response:
    return JSONResponse({"deploys": ctx.store.deploys()})


@guarded("viewer")
async def deploy(ctx: Context, request: Request, who: Principal) -> Response:
    record = ctx.store.deploy(request.path_params["id"])
    if record is None:
        raise FleetError("NOT_FOUND", f"no deploy {request.path_params['id']!r}")
    return JSONResponse(record)


@guarded("viewer")
async def environments(ctx: Context, request: Request, who: Principal) -> Response:
    return JSONResponse({"environments": [
        {"name": env, "nodes": [n.name for n in ctx.config.nodes if n.environment == env]}
        for env in ctx.config.environments]})


@guarded("viewer")
async def prometheus_metrics(ctx: Context, request: Request, who: Principal) -> Response:
    return Response(metrics.render(await ctx.fleet.status()), media_type=metrics.CONTENT_TYPE)


@guarded("viewer")
async def prometheus_targets(ctx: Context, request: Request, who: Principal) -> Response:
    return JSONResponse(metrics.http_sd_targets(ctx.config))


@guarded("admin")
async def users(ctx: Context, request: Request, who: Principal) -> Response:
    return JSONResponse({"users": ctx.store.accounts()})


@guarded("admin")
async def add_user(ctx: Context, request: Request, who: Principal) -> Response:
    body = await json_body(request)
    name, role, password = body.get("name"), body.get("role"), body.get("password")
    if not isinstance(name, str) or not isinstance(role, str) or not isinstance(password, str):
        raise FleetError("BAD_ARGUMENTS", 'send {"name": ..., "role": "viewer|operator|admin", "password": ...}')
    ctx.store.add_account(name, role, await asyncio.to_thread(hash_password, password))
    ctx.record(who.name, "add user", "-", name, "OK", role)
    return JSONResponse({"name": name, "role": role}, status_code=201)


@guarded("admin")
async def remove_user(ctx: Context, request: Request, who: Principal) -> Response:
    name = request.path_params["name"]
    if name == who.name:
        raise FleetError("BAD_ARGUMENTS", "you cannot remove your own account")
    ctx.store.remove_account(name)
    ctx.record(who.name, "remove user", "-", name, "OK")
    return JSONResponse({"name": name, "removed": True})


# -- acting ------------------------------------------------------------------------------------------

@guarded("operator")
async def process_action(ctx: Context, request: Request, who: Principal) -> Response:
    client = ctx.fleet.client(request.path_params["node"])
    name = _process_name(request.path_params["name"])
    action = _action(request.path_params["action"], ACTIONS)
    await json_body(request)
    try:
        results = await client.action(action, name, ctx.config.action_timeout)
    except FleetError as exc:
        ctx.record(who.name, action, client.spec.name, name, exc.code, exc.message)
        raise
    ctx.record(who.name, action, client.spec.name, name, _outcome(results))
    return JSONResponse({"node": client.spec.name, "result": results})


@guarded("operator")
async def node_action(ctx: Context, request: Request, who: Principal) -> Response:
    client = ctx.fleet.client(request.path_params["node"])
    action = _action(request.path_params["action"], ACTIONS + ("reload", "scale"))
    body = await json_body(request)
    node_name, target, result = client.spec.name, "all", None
    try:
        if action == "reload":
            result = await client.reload(bool(body.get("wait", True)), ctx.config.deploy_timeout)
            target = "web"
        elif action == "scale":
            spec = body.get("spec")
            if not isinstance(spec, str) or not _SCALE.match(spec):
                raise FleetError("BAD_ARGUMENTS", f"spec {spec!r}: expected \"+N\", \"-N\" or \"=N\"")
            result = await client.scale(spec, ctx.config.action_timeout)
            target = f"web {spec}"
        else:
            result = await client.action(action, None, ctx.config.action_timeout)
    except FleetError as exc:
        ctx.record(who.name, action, node_name, target, exc.code, exc.message)
        raise
    ctx.record(who.name, action, node_name, target, _outcome(result) if isinstance(result, list) else "OK")
    return JSONResponse({"node": node_name, "result": result})


@guarded("operator")
async def environment_action(ctx: Context, request: Request, who: Principal) -> Response:
    env = request.path_params["env"]
    action = _action(request.path_params["action"], ACTIONS + ("reload",))
    specs = ctx.fleet.environment(env)
    body = await json_body(request)
    if action == "reload":
        batch = body.get("batch", 1)
        if not isinstance(batch, int) or isinstance(batch, bool):
            raise FleetError("BAD_ARGUMENTS", f"batch must be an integer, got {batch!r}")
        record = ctx.deployer.start(env, batch, who.name)
        ctx.record(who.name, "deploy", ",".join(n["node"] for n in record["nodes"]), env, "started",
                   f"{record['id']} (batch {batch})")
        return JSONResponse({"id": record["id"], "deploy": record}, status_code=202,
                            headers={"Location": f"/api/v1/deploys/{record['id']}"})
    group = body.get("group")
    if group is not None and (not isinstance(group, str) or not _NAME.match(group) or ":" in group):
        raise FleetError("BAD_ARGUMENTS", f"group {group!r}: expected a group name")
    name = f"{group}:*" if group else None
    results = await ctx.fleet.act(specs, action, name)
    for r in results:
        outcome = _outcome(r["result"]) if r["ok"] or "result" in r else r["error"]["code"]
        ctx.record(who.name, action, r["node"], name or "all", outcome, "" if r["ok"] else str(r.get("error", "")))
    return JSONResponse({"environment": env, "result": results})


def routes() -> list[BaseRoute]:
    v1 = "/api/v1"
    return [
        Route(f"{v1}/nodes", nodes), Route(f"{v1}/nodes/{{node}}", node),
        Route(f"{v1}/nodes/{{node}}/processes", processes),
        Route(f"{v1}/nodes/{{node}}/logs/{{name}}", logs),
        Route(f"{v1}/nodes/{{node}}/processes/{{name}}/{{action}}", process_action, methods=["POST"]),
        Route(f"{v1}/nodes/{{node}}/{{action}}", node_action, methods=["POST"]),
        Route(f"{v1}/environments", environments),
        Route(f"{v1}/environments/{{env}}/{{action}}", environment_action, methods=["POST"]),
        Route(f"{v1}/deploys", deploys), Route(f"{v1}/deploys/{{id}}", deploy),
        Route(f"{v1}/activity", activity), Route(f"{v1}/users", users),
        Route(f"{v1}/users", add_user, methods=["POST"]),
        Route(f"{v1}/users/{{name}}/remove", remove_user, methods=["POST"]),
        Route(f"{v1}/prometheus/targets", prometheus_targets),
        Route("/metrics", prometheus_metrics),
    ]
