"""Reading `fleet.toml`, and Cesi's `cesi.conf.toml` as it is.

fleet.toml::

    deadline = 2.0                 # seconds a node has to answer a status query
    [[nodes]]
    name = "web-1"
    environment = "production"
    url = "http://10.0.0.5:9001"   # an Arbiter master's TCP control API
    token_file = "/etc/arbiter/web-1.token"
    [[nodes]]
    name = "legacy"
    kind = "supervisor"            # a supervisord [inet_http_server], over XML-RPC
    url = "http://10.0.0.9:9001"
    username = "user"
    password = "secret"

A file with a `[cesi]` table is Cesi's: its nodes (host, port, username, password) are
supervisor nodes. Every unknown key is an error naming the file, the line and the key. Secrets
are read here once and kept out of every repr.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from arbiter.config.loader import load_toml
from arbiter.errors import ConfigError

KINDS = ("arbiter", "supervisor")
TOP_KEYS = {"deadline": float, "action_timeout": float, "deploy_timeout": float, "database": str,
            "activity_log": str, "secure_cookies": bool}
NODE_KEYS = {"name": str, "environment": str, "url": str, "kind": str, "token_file": str,
             "username": str, "password": str, "password_file": str}
CESI_KEYS = {"database", "activity_log", "admin_username", "admin_password"}
CESI_NODE_KEYS = {"name", "environment", "host", "port", "username", "password"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")


@dataclass(frozen=True)
class NodeSpec:
    name: str
    environment: str
    url: str
    kind: str = "arbiter"
    token: str | None = field(default=None, repr=False)
    username: str = ""
    password: str = field(default="", repr=False)

    @property
    def hostport(self) -> str:
        return urlsplit(self.url).netloc


@dataclass(frozen=True)
class FleetConfig:
    path: str
    nodes: tuple[NodeSpec, ...]
    database: str
    activity_log: str | None = None
    deadline: float = 2.0
    action_timeout: float = 60.0
    deploy_timeout: float = 300.0
    secure_cookies: bool = False
    cesi: bool = False
    admin_username: str | None = None
    admin_password: str | None = field(default=None, repr=False)

    def node(self, name: str) -> NodeSpec | None:
        return next((n for n in self.nodes if n.name == name), None)

    @property
    def environments(self) -> list[str]:
        return list(dict.fromkeys(n.environment for n in self.nodes))


class _Lines:
    """Where a key sits in the file, for error messages (tomllib does not say)."""

    def __init__(self, path: str, text: str) -> None:
        self.path, self.lines = path, text.splitlines()
        self.node_starts = [i for i, line in enumerate(self.lines) if re.match(r"\s*\[\[\s*nodes\s*\]\]", line)]

    def where(self, key: str, node: int | None = None) -> str:
        start, end = 0, len(self.lines)
        if node is not None and node < len(self.node_starts):
            start = self.node_starts[node]
            end = self.node_starts[node + 1] if node + 1 < len(self.node_starts) else end
        pattern = re.compile(rf"\s*(\[+\s*)?[\"']?{re.escape(key)}[\"']?\s*(=|\]|\.)")
        for i in range(start, end):
            if pattern.match(self.lines[i]):
                return f"{self.path}, line {i + 1}"
        return self.path

    def node_where(self, node: int) -> str:
        if node < len(self.node_starts):
            return f"{self.path}, line {self.node_starts[node] + 1}"
        return self.path

    def error(self, key: str, message: str, node: int | None = None) -> ConfigError:
        return ConfigError(f"{self.where(key, node)}: {message}")


def _check(lines: _Lines, table: dict[str, Any], allowed: Mapping[str, type] | Set[str], what: str,
           node: int | None = None) -> None:
    for key, value in table.items():
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise lines.error(key, f"unknown key {key!r} in {what} (known: {known})", node)
        if isinstance(allowed, Mapping):
            kind = allowed[key]
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float \
                else isinstance(value, kind)
            if not ok:
                raise lines.error(key, f"{key} in {what} must be a {kind.__name__}, got {value!r}", node)


def _read_secret(path: str, base: str, lines: _Lines, key: str, node: int) -> str:
    full = os.path.join(base, os.path.expanduser(path))
    try:
        with open(full) as handle:
            value = handle.read().strip()
    except OSError as exc:
        raise lines.error(key, f"{key} {full}: {exc.strerror}", node) from None
    if not value:
        raise lines.error(key, f"{key} {full} is empty", node)
    return value


def _check_url(lines: _Lines, url: str, node: int) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
        raise lines.error("url", f"url {url!r}: expected http(s)://HOST:PORT without credentials", node)
    return url.rstrip("/")


def _fleet_node(lines: _Lines, raw: dict[str, Any], index: int, base: str) -> NodeSpec:
    _check(lines, raw, NODE_KEYS, "[[nodes]]", index)
    for key in ("name", "url"):
        if key not in raw:
            raise ConfigError(f"{lines.node_where(index)}: [[nodes]] number {index + 1} has no {key!r}")
    kind = raw.get("kind", "arbiter")
    if kind not in KINDS:
        raise lines.error("kind", f"kind {kind!r}: expected one of {', '.join(KINDS)}", index)
    token = None
    if kind == "arbiter":
        if "token_file" not in raw:
            raise lines.error("name", f"node {raw['name']!r} has no token_file (an Arbiter node's TCP "
                              "control API needs its bearer token)", index)
        token = _read_secret(raw["token_file"], base, lines, "token_file", index)
    password = raw.get("password", "")
    if "password_file" in raw:
        password = _read_secret(raw["password_file"], base, lines, "password_file", index)
    return NodeSpec(name=raw["name"], environment=raw.get("environment") or "default",
                    url=_check_url(lines, raw["url"], index), kind=kind, token=token,
                    username=raw.get("username", ""), password=password)


def _cesi_node(lines: _Lines, raw: dict[str, Any], index: int) -> NodeSpec:
    _check(lines, raw, CESI_NODE_KEYS, "Cesi's [[nodes]]", index)
    for key in ("name", "host", "port"):
        if key not in raw:
            raise ConfigError(f"{lines.node_where(index)}: [[nodes]] number {index + 1} has no {key!r}")
    try:
        port = int(raw["port"])
    except (TypeError, ValueError):
        raise lines.error("port", f"port {raw['port']!r}: expected a number", index) from None
    host = str(raw["host"])
    host = f"[{host}]" if ":" in host else host
    return NodeSpec(name=str(raw["name"]), environment=str(raw.get("environment") or "default"),
                    url=f"http://{host}:{port}", kind="supervisor",
                    username=str(raw.get("username", "")), password=str(raw.get("password", "")))


def _sqlite_path(url: str, base: str, lines: _Lines) -> str:
    """Cesi's `database` is an SQLAlchemy URL; only SQLite ones can be honoured here."""
    if not url.startswith("sqlite:///"):
        raise lines.error("database", f"database {url!r}: the fleet server keeps its data in SQLite; "
                          "expected sqlite:///PATH (export other databases' users and recreate them with "
                          "`arbiter fleet user add`)")
    return os.path.join(base, url[len("sqlite:///"):])


def load(path: str) -> FleetConfig:
    """Read `path` (fleet.toml or Cesi's cesi.conf.toml).

    Raises:
        ConfigError: naming the file, the line and the key, for every problem found.
    """
    text, raw = load_toml(path)
    lines, base = _Lines(path, text), os.path.dirname(os.path.abspath(path))
    nodes_raw = raw.pop("nodes", [])
    if not isinstance(nodes_raw, list) or not all(isinstance(n, dict) for n in nodes_raw):
        raise lines.error("nodes", "nodes must be an array of tables ([[nodes]])")
    values: dict[str, Any] = {}
    if "cesi" in raw:
        cesi = raw.pop("cesi")
        _check(lines, raw, set(), "Cesi's configuration")
        _check(lines, cesi, CESI_KEYS, "[cesi]")
        nodes = [_cesi_node(lines, n, i) for i, n in enumerate(nodes_raw)]
        values.update(cesi=True, admin_username=cesi.get("admin_username"), admin_password=cesi.get("admin_password"))
        database = _sqlite_path(cesi["database"], base, lines) if "database" in cesi else os.path.join(base, "fleet.db")
        if cesi.get("activity_log"):
            values["activity_log"] = os.path.join(base, cesi["activity_log"])
    else:
        _check(lines, raw, TOP_KEYS, "the top level")
        nodes = [_fleet_node(lines, n, i, base) for i, n in enumerate(nodes_raw)]
        database = os.path.join(base, raw.pop("database", "fleet.db"))
        if raw.get("activity_log"):
            values["activity_log"] = os.path.join(base, raw.pop("activity_log"))
        raw.pop("activity_log", None)
        for key in ("deadline", "action_timeout", "deploy_timeout"):
            if key in raw:
                if raw[key] <= 0:
                    raise lines.error(key, f"{key} must be more than 0 seconds, got {raw[key]!r}")
                values[key] = float(raw[key])
        if "secure_cookies" in raw:
            values["secure_cookies"] = raw["secure_cookies"]
    seen: dict[str, int] = {}
    for index, node in enumerate(nodes):
        if not _NAME.match(node.name):
            raise lines.error("name", f"node name {node.name!r}: letters, digits, '_', '.' and '-' only", index)
        if node.name in seen:
            raise lines.error("name", f"node name {node.name!r} is used twice", index)
        seen[node.name] = index
    return FleetConfig(path=os.path.abspath(path), nodes=tuple(nodes), database=database, **values)
