"""A fake master for the control server: a Backend whose programs change state a few loop turns
after a command, and a real selector loop (in a test thread: the server itself never starts one).
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import wait_until as _wait_until

from arbiter.control.backend import Command, ControlError
from arbiter.control.connection import Limits
from arbiter.control.names import select
from arbiter.control.records import ProgramRow, Status
from arbiter.control.security import Credentials
from arbiter.control.server import ControlServer

LOG = logging.getLogger("arbiter.control.test")


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """The suite's one polling helper (conftest.py), with this module's default timeout."""
    return _wait_until(predicate, timeout=timeout, interval=0.01, what=what)


def program(name: str, group: str | None = None, state: str = "RUNNING", pid: int = 0) -> dict[str, Any]:
    return {"name": name, "group": group or name, "state": state, "statecode": 0, "pid": pid,
            "start": time.time() - 5 if state == "RUNNING" else 0, "stop": 0, "now": 0, "uptime": 0,
            "exitstatus": 0, "spawnerr": "", "description": "", "stdout_logfile": "", "stderr_logfile": "",
            "restarts": 0}


CODES = {"STOPPED": 0, "STARTING": 10, "RUNNING": 20, "BACKOFF": 30, "STOPPING": 40, "EXITED": 100, "FATAL": 200}


def _a(command: Command) -> dict[str, Any]:
    """A command's argument record as a plain dict (tuples as lists), for the fake's handlers."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(command.args).items()}


def _ns(p: dict[str, Any]) -> str:
    return p["name"] if p["group"] in ("", p["name"]) else f"{p['group']}:{p['name']}"


class FakeBackend:
    """Programs: ticker (running, this test process's pid so /proc has it), pool:pool_0 and
    pool:pool_1 (running), idle (stopped), broken (start fails). Group `extra` can be added."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.commands: list[Command] = []
        self.signals: list[tuple[str, str]] = []
        self.programs = [program("ticker", pid=os.getpid()), program("pool_0", "pool", pid=4000001),
                         program("pool_1", "pool", pid=4000002), program("idle", state="STOPPED"),
                         program("broken", state="STOPPED")]
        self.available = ["extra"]  # configured groups not yet added
        self.master: dict[str, Any] = {
            "pid": os.getpid(), "version": "0.1.0", "started": time.time(), "uptime": 1.0, "state": "RUNNING",
            "generation": 1, "workers_target": 2, "worker_restarts": 3, "worker_timeouts": 1,
            "reload": {"state": "none", "count": 0, "failures": 0}}
        self.workers = [self._worker(4100001), self._worker(4100002)]
        self.reload_fails = False
        self.hold_replies = False  # commands get no answer at all (a master that is busy)
        self._timers: list[list[Any]] = []
        for p in self.programs:
            for stream in ("stdout", "stderr"):
                path = tmp / f"{p['name']}.{stream}.log"
                path.write_bytes(f"{p['name']} {stream} line 1\n".encode())
                p[f"{stream}_logfile"] = str(path)
        (tmp / "master.log").write_bytes(b"master started\n")
        self.log_paths_enabled = True

    def _worker(self, pid: int, state: str = "READY") -> dict[str, Any]:
        return {"pid": pid, "age": 3.0, "generation": self.master["generation"], "state": state,
                "heartbeat_age": 0.1, "requests": 7, "connections": 0, "rss": 1 << 20, "cpu": 0.5}

    # -- Backend --------------------------------------------------------------------------------

    def status(self) -> Status:
        for p in self.programs:
            p["statecode"] = CODES.get(p["state"], 1000)
            p["now"] = time.time()
        # Kept as plain dicts so tests can poke them; the server gets the real records.
        return Status.from_json({"master": self.master, "workers": self.workers, "programs": self.programs})

    def log_path(self, name: str, stream: str) -> str | None:
        if name == "master":
            return str(self.tmp / "master.log")
        found = [p for p in self.programs if _ns(p) == name]
        return found[0].get(f"{stream}_logfile") if found and self.log_paths_enabled else None

    def log_memory(self, name: str, stream: str) -> None:
        return None  # this stand-in keeps every log in a file

    def submit(self, command: Command) -> None:
        self.commands.append(command)
        if self.hold_replies:
            return
        handler = getattr(self, f"_do_{command.name}")
        handler(command)

    def later(self, turns: int, action: Callable[[], None]) -> None:
        self._timers.append([turns, action])

    def turn(self) -> None:
        """One master loop turn: run what is due."""
        due = []
        for timer in self._timers:
            timer[0] -= 1
            if timer[0] <= 0:
                due.append(timer)
        for timer in due:
            self._timers.remove(timer)
            timer[1]()

    # -- commands ---------------------------------------------------------------------------------

    def _matched(self, command: Command) -> list[dict[str, Any]]:
        chosen = {r.namespec for r in select([ProgramRow.from_json(p) for p in self.programs],
                                             _a(command).get("names") or ["all"])}
        return [p for p in self.programs if _ns(p) in chosen]

    def _per_process(self, command: Command, change: Callable[[dict[str, Any]], str]) -> None:
        results = []
        for p in self._matched(command):
            status = change(p)
            results.append({"name": p["name"], "group": p["group"], "status": status,
                            "description": "OK" if status == "OK" else f"{_ns(p)}: {status.lower()}"})
        if _a(command).get("wait", False):
            self.later(3, lambda: command.reply(results))
        else:
            command.reply(results)

    def _goto(self, p: dict[str, Any], middle: str, end: str, pid: int) -> None:
        p["state"] = middle

        def arrive() -> None:
            p["state"], p["pid"] = end, pid
            p["start" if end == "RUNNING" else "stop"] = time.time()
            p["restarts"] += end == "RUNNING"
        self.later(2, arrive)

    def _do_start(self, command: Command) -> None:
        def start(p: dict[str, Any]) -> str:
            if p["state"] in ("RUNNING", "STARTING"):
                return "ALREADY_STARTED"
            if p["name"] == "broken":
                p["state"], p["spawnerr"] = "FATAL", "command not found"
                return "SPAWN_ERROR"
            self._goto(p, "STARTING", "RUNNING", 4200000 + len(self.commands))
            return "OK"
        self._per_process(command, start)

    def _do_stop(self, command: Command) -> None:
        def stop(p: dict[str, Any]) -> str:
            if p["state"] not in ("RUNNING", "STARTING"):
                return "NOT_RUNNING"
            self._goto(p, "STOPPING", "STOPPED", 0)
            return "OK"
        self._per_process(command, stop)

    def _do_restart(self, command: Command) -> None:
        def restart(p: dict[str, Any]) -> str:
            self._goto(p, "STARTING", "RUNNING", 4300000 + len(self.commands))
            return "OK"
        self._per_process(command, restart)

    def _do_signal(self, command: Command) -> None:
        def signal(p: dict[str, Any]) -> str:
            if p["state"] != "RUNNING":
                return "NOT_RUNNING"
            self.signals.append((_ns(p), _a(command)["signal"]))
            return "OK"
        self._per_process(command, signal)

    def _do_clear(self, command: Command) -> None:
        if _a(command)["names"] == ["master"]:
            (self.tmp / "master.log").write_bytes(b"")
            command.reply(None)
            return
        for p in self._matched(command):
            for stream in _a(command)["streams"]:
                if p[f"{stream}_logfile"]:
                    Path(p[f"{stream}_logfile"]).write_bytes(b"")
        command.reply(None)

    def _do_reload(self, command: Command) -> None:
        reload = self.master["reload"] = dict(self.master["reload"], state="in progress")
        reload["count"] += 1

        def finish() -> None:
            if self.reload_fails:
                self.master["reload"] = dict(reload, state="failed: new workers did not boot",
                                             failures=reload["failures"] + 1)
                if _a(command).get("wait"):
                    command.fail(ControlError("RELOAD_FAILED", "new workers did not boot"))
            else:
                self.master["generation"] += 1
                self.master["reload"] = dict(reload, state="done")
                self.workers = [self._worker(w["pid"] + 10) for w in self.workers]
                if _a(command).get("wait"):
                    command.reply(self.master["reload"])
        self.later(4, finish)
        if not _a(command).get("wait"):
            command.reply(reload)

    def _do_scale(self, command: Command) -> None:
        spec = _a(command)["spec"]
        n, target = int(spec[1:]), self.master["workers_target"]
        target = {"+": target + n, "-": max(1, target - n), "=": n}[spec[0]]
        self.master["workers_target"] = target
        self.workers = [self._worker(4100001 + i) for i in range(target)]
        command.reply({"workers_target": target})

    def _do_reread(self, command: Command) -> None:
        command.reply({"added": list(self.available), "changed": [], "removed": []})

    def _do_add(self, command: Command) -> None:
        for name in _a(command)["names"]:
            if any(p["group"] == name for p in self.programs):
                command.fail(ControlError("ALREADY_ADDED", f"{name} is already active"))
                return
            if name not in self.available:
                command.fail(ControlError("BAD_NAME", f"no such group: {name}"))
                return
        for name in _a(command)["names"]:
            self.available.remove(name)
            self.programs.append(program(name, state="STOPPED"))
        command.reply(None)

    def _do_update(self, command: Command) -> None:
        added = [n for n in self.available if not _a(command)["names"] or n in _a(command)["names"]]
        for name in added:
            self.available.remove(name)
            self.programs.append(program(name, state="STOPPED"))
        command.reply({"added": added, "changed": [], "removed": []})

    def _do_remove(self, command: Command) -> None:
        for name in _a(command)["names"]:
            procs = [p for p in self.programs if p["group"] == name]
            if not procs:
                command.fail(ControlError("BAD_NAME", f"no such group: {name}"))
                return
            if any(p["state"] in ("RUNNING", "STARTING", "STOPPING") for p in procs):
                command.fail(ControlError("STILL_RUNNING", f"{name} still has running processes"))
                return
        self.programs = [p for p in self.programs if p["group"] not in _a(command)["names"]]
        self.available += _a(command)["names"]  # still configured, no longer in use
        command.reply(None)

    def _do_replace_worker(self, command: Command) -> None:
        pid = _a(command)["pid"]
        old = next((w for w in self.workers if w["pid"] == pid), None)
        if old is None:
            raise ControlError("BAD_NAME", f"no such web worker: {pid}")
        old["state"] = "RETIRING"

        def swap() -> None:
            self.workers = [w for w in self.workers if w is not old] + [self._worker(max(w["pid"] for w in self.workers) + 1)]
        self.later(3, swap)
        command.reply({"pid": pid})

    def _do_shutdown(self, command: Command) -> None:
        self.master["state"] = "STOPPING"
        command.reply({"state": "STOPPING"})


class ServerLoop:
    """The master's loop, in a thread of the test: select, callbacks, backend turn, tick."""

    def __init__(self, backend: FakeBackend, **kwargs: Any) -> None:
        self.backend = backend
        self.selector = selectors.DefaultSelector()
        kwargs.setdefault("log", LOG)
        if "token" in kwargs or "username" in kwargs:  # shorthand for the credentials
            kwargs["credentials"] = Credentials(token=kwargs.pop("token", None), username=kwargs.pop("username", None),
                                                password=kwargs.pop("password", None))
        self.server = ControlServer(backend, self.selector, **kwargs)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="control-loop", daemon=True)
        self.errors: list[BaseException] = []

    def start(self) -> ServerLoop:
        self.server.start()
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                deadline = self.server.next_deadline()
                timeout = 0.02 if deadline is None else min(0.02, max(0.0, deadline - time.monotonic()))
                for key, mask in self.selector.select(timeout):
                    key.data(key, mask)
                self.backend.turn()
                self.server.tick()
        except BaseException as exc:  # surfaced by stop(): the loop must never die
            self.errors.append(exc)
            raise

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.server.close()
        self.selector.close()
        assert not self.errors, self.errors

    @property
    def unix_path(self) -> str:
        return self.server.unix_path or ""

    @property
    def port(self) -> int:
        return int([a for a in self.server.addresses if a.startswith("http")][0].rsplit(":", 1)[1])


class UnixConn(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 10.0) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path_ = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path_)


def call(path: str, method: str, target: str, body: Any = None, headers: dict[str, str] | None = None,
         raw: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """One request over the unix socket at `path`."""
    conn = UnixConn(path)
    try:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        conn.request(method, target, body=data, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def jcall(path: str, method: str, target: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
    status, _, data = call(path, method, target, body, **kwargs)
    return status, json.loads(data)


@pytest.fixture
def make_loop(tmp_path: Path) -> Iterator[Callable[..., ServerLoop]]:
    """`make_loop(tcp=("127.0.0.1", 0), token="t")`: a started server on a FakeBackend;
    stopped (and its socket removed) after the test."""
    loops: list[ServerLoop] = []

    def make(backend: FakeBackend | None = None, limits: Limits | None = None, **kwargs: Any) -> ServerLoop:
        kwargs.setdefault("unix_path", str(tmp_path / "ctl.sock"))
        loop = ServerLoop(backend or FakeBackend(tmp_path), **kwargs)
        if limits:
            loop.server.limits = limits
        loops.append(loop.start())
        return loop

    yield make
    for loop in loops:
        loop.stop()


@pytest.fixture
def served(make_loop: Callable[..., ServerLoop]) -> ServerLoop:
    """The server on its unix socket only, with the default FakeBackend."""
    return make_loop()
