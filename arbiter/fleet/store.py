"""The fleet server's own data, in one SQLite file: accounts, API tokens, browser sessions, the
activity log and deploy records. Nothing a node owns is kept here.

Secrets are stored only as hashes: passwords with scrypt (auth.py), API tokens and session ids
with SHA-256 (they are long random values, so a fast hash is enough). The file is created 0600.
Queries are tiny; one connection serves the process, behind a lock, in WAL mode so that the CLI
(`arbiter fleet user add`) can write while the server runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from arbiter.fleet.errors import FleetError

ROLES = ("viewer", "operator", "admin")
ACCOUNT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}\Z")
SCHEMA = """
CREATE TABLE IF NOT EXISTS accounts (name TEXT PRIMARY KEY, role TEXT NOT NULL, password TEXT NOT NULL,
                                     created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tokens (hash TEXT PRIMARY KEY, account TEXT NOT NULL REFERENCES accounts(name)
                                   ON DELETE CASCADE, label TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS sessions (hash TEXT PRIMARY KEY, account TEXT NOT NULL REFERENCES accounts(name)
                                     ON DELETE CASCADE, csrf TEXT NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS activity (id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, account TEXT NOT NULL,
                                     action TEXT NOT NULL, node TEXT NOT NULL, target TEXT NOT NULL,
                                     result TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deploys (id TEXT PRIMARY KEY, environment TEXT NOT NULL, state TEXT NOT NULL,
                                    batch INTEGER NOT NULL, account TEXT NOT NULL, owner TEXT NOT NULL,
                                    created REAL NOT NULL, finished REAL, error TEXT NOT NULL,
                                    nodes TEXT NOT NULL);
CREATE UNIQUE INDEX IF NOT EXISTS one_deploy_per_environment ON deploys(environment) WHERE state = 'running';
"""


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Store:
    def __init__(self, path: str) -> None:
        self.path = path
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.exists(path):
            os.makedirs(directory, exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))  # born private, never world-readable
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        except sqlite3.Error as exc:
            raise FleetError("FAILED", f"cannot open the fleet database {path}: {exc}") from None
        self._lock = threading.Lock()
        self._db.row_factory = sqlite3.Row
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _all(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(row) for row in self._db.execute(sql, args).fetchall()]

    # -- accounts -------------------------------------------------------------------------------

    def has_accounts(self) -> bool:
        return bool(self._all("SELECT 1 FROM accounts LIMIT 1"))

    def add_account(self, name: str, role: str, password_hash: str) -> None:
        if not ACCOUNT_NAME.match(name):
            raise FleetError("BAD_ARGUMENTS", f"account name {name!r}: letters, digits, '_', '.', '@' and '-' only")
        if role not in ROLES:
            raise FleetError("BAD_ARGUMENTS", f"role {role!r}: expected one of {', '.join(ROLES)}")
        try:
            with self._tx() as db:
                db.execute("INSERT INTO accounts VALUES (?, ?, ?, ?)", (name, role, password_hash, time.time()))
        except sqlite3.IntegrityError:
            raise FleetError("ALREADY_EXISTS", f"account {name!r} already exists") from None

    def account(self, name: str) -> dict[str, Any] | None:
        rows = self._all("SELECT name, role, password, created FROM accounts WHERE name = ?", (name,))
        return rows[0] if rows else None

    def accounts(self) -> list[dict[str, Any]]:
        return self._all("SELECT a.name, a.role, a.created, (SELECT COUNT(*) FROM tokens t WHERE t.account = a.name)"
                         " AS tokens FROM accounts a ORDER BY a.name")

    def set_password(self, name: str, password_hash: str) -> None:
        with self._tx() as db:
            if not db.execute("UPDATE accounts SET password = ? WHERE name = ?", (password_hash, name)).rowcount:
                raise FleetError("BAD_NAME", f"no account {name!r}")
            db.execute("DELETE FROM sessions WHERE account = ?", (name,))  # a new password ends old sessions

    def remove_account(self, name: str) -> None:
        with self._tx() as db:
            if not db.execute("DELETE FROM accounts WHERE name = ?", (name,)).rowcount:
                raise FleetError("BAD_NAME", f"no account {name!r}")

    # -- API tokens and sessions ------------------------------------------------------------------

    def add_token(self, account: str, label: str = "") -> str:
        if not self.account(account):
            raise FleetError("BAD_NAME", f"no account {account!r}")
        token = "afl_" + secrets.token_urlsafe(32)
        with self._tx() as db:
            db.execute("INSERT INTO tokens VALUES (?, ?, ?, ?)", (digest(token), account, label, time.time()))
        return token

    def remove_tokens(self, account: str) -> int:
        with self._tx() as db:
            return int(db.execute("DELETE FROM tokens WHERE account = ?", (account,)).rowcount)

    def token_account(self, token: str) -> dict[str, Any] | None:
        rows = self._all("SELECT a.name, a.role FROM tokens t JOIN accounts a ON a.name = t.account "
                         "WHERE t.hash = ?", (digest(token),))
        return rows[0] if rows else None

    def new_session(self, account: str, lifetime: float) -> tuple[str, str]:
        """(session id for the cookie, CSRF token for the page)."""
        sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        now = time.time()
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE expires < ?", (now,))
            db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?)", (digest(sid), account, csrf, now + lifetime))
        return sid, csrf

    def session(self, sid: str) -> dict[str, Any] | None:
        rows = self._all("SELECT a.name, a.role, s.csrf FROM sessions s JOIN accounts a ON a.name = s.account "
                         "WHERE s.hash = ? AND s.expires > ?", (digest(sid), time.time()))
        return rows[0] if rows else None

    def end_session(self, sid: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM sessions WHERE hash = ?", (digest(sid),))

    # -- the activity log -------------------------------------------------------------------------

    def log_activity(self, account: str, action: str, node: str, target: str, result: str, detail: str = "") -> None:
        with self._tx() as db:
            db.execute("INSERT INTO activity (at, account, action, node, target, result, detail) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?)", (time.time(), account, action, node, target, result, detail))

    def activity(self, limit: int = 100, before: int | None = None) -> list[dict[str, Any]]:
        if before is not None:
            return self._all("SELECT * FROM activity WHERE id < ? ORDER BY id DESC LIMIT ?", (before, limit))
        return self._all("SELECT * FROM activity ORDER BY id DESC LIMIT ?", (limit,))

    # -- deploys ------------------------------------------------------------------------------------

    def start_deploy(self, environment: str, batch: int, account: str, owner: str, nodes: list[dict[str, Any]]) -> str:
        deploy_id = time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)
        try:
            with self._tx() as db:
                db.execute("INSERT INTO deploys VALUES (?, ?, 'running', ?, ?, ?, ?, NULL, '', ?)",
                           (deploy_id, environment, batch, account, owner, time.time(), json.dumps(nodes)))
        except sqlite3.IntegrityError:
            running = self._all("SELECT id FROM deploys WHERE environment = ? AND state = 'running'", (environment,))
            raise FleetError("DEPLOY_RUNNING", f"deploy {running[0]['id'] if running else '?'} of {environment!r} is "
                             "still running; wait for it to end") from None
        return deploy_id

    def update_deploy(self, deploy_id: str, nodes: list[dict[str, Any]], state: str = "running",
                      error: str = "") -> None:
        with self._tx() as db:
            db.execute("UPDATE deploys SET nodes = ?, state = ?, error = ?, finished = ? WHERE id = ?",
                       (json.dumps(nodes), state, error, None if state == "running" else time.time(), deploy_id))

    def deploy(self, deploy_id: str) -> dict[str, Any] | None:
        rows = self._all("SELECT * FROM deploys WHERE id = ?", (deploy_id,))
        return _deploy_row(rows[0]) if rows else None

    def deploys(self, limit: int = 20) -> list[dict[str, Any]]:
        return [_deploy_row(r) for r in self._all("SELECT * FROM deploys ORDER BY created DESC LIMIT ?", (limit,))]

    def abandon_orphan_deploys(self, alive: Any) -> int:
        """Mark running deploys whose owner process is gone as interrupted; `alive(owner)` says."""
        orphans = [r["id"] for r in self._all("SELECT id, owner FROM deploys WHERE state = 'running'")
                   if not alive(r["owner"])]
        with self._tx() as db:
            for deploy_id in orphans:
                db.execute("UPDATE deploys SET state = 'interrupted', finished = ?, error = ? WHERE id = ?",
                           (time.time(), "the fleet server stopped during this deploy; nodes not yet reloaded "
                            "were left as they were", deploy_id))
        return len(orphans)


def _deploy_row(row: dict[str, Any]) -> dict[str, Any]:
    row = dict(row)
    row["nodes"] = json.loads(row["nodes"])
    row.pop("owner", None)
    return row
