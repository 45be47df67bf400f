"""Real nodes for the fleet tests: Arbiter masters with a TCP control API and a token, a real
supervisord with [inet_http_server], the fleet server itself (`arbiter fleet`), and a client."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import xmlrpc.client
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import APPS, ROOT, Arbiter, wait_until

PASSWORD = "correct horse battery"


@dataclass
class Node:
    name: str
    master: Arbiter
    control_port: int
    token_file: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        token = self.token_file.read_text().strip()
        return httpx.request(method, self.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=30,
                             **kwargs)

    def status(self) -> dict[str, Any]:
        return dict(self.api("GET", "/v1/status").json())

    def program_pid(self, name: str) -> int:
        return int(next(p["pid"] for p in self.status()["programs"] if p["name"] == name))


def start_node(arbiter: Callable[..., Arbiter], tmp_path: Path, name: str, app: str = "asgi_app:app",
               workers: int = 1, programs: str | None = None, extra: str = "", chdir: Path | None = None,
               control_port: int = 0, token: str | None = None) -> Node:
    """An Arbiter master with `control_bind = 127.0.0.1:0` and a token; the kernel picks both ports
    and the master logs them ("Listening at", "Control API at")."""
    token_file = tmp_path / f"{name}.token"
    token_file.write_text((token or f"token-of-{name}-{os.urandom(4).hex()}") + "\n")
    token_file.chmod(0o600)
    if programs is None:
        programs = f'''
            [programs.ticker]
            command = "sleep 600"
            startsecs = 0
            [programs.pool]
            command = "sleep 601"
            numprocs = 2
            process_name = "%(program_name)s_%(process_num)d"
            startsecs = 0
        '''
    config = tmp_path / f"{name}.toml"
    config.write_text(f'wsgi_app = "{app}"\nworkers = {workers}\ncontrol_bind = "127.0.0.1:{control_port}"\n'
                      f'control_token_file = "{token_file}"\n' + (f'chdir = "{chdir}"\n' if chdir else "")
                      + extra + textwrap.dedent(programs))
    master = arbiter(["-c", str(config)])
    port = int(master.wait_log(r"Control API at: http://127\.0\.0\.1:(\d+)")[0].group(1))
    return Node(name, master, port, token_file)


class Supervisord:
    """A real supervisord serving XML-RPC on 127.0.0.1. Its [inet_http_server] cannot be given
    port 0 (it would not tell us the port it got), so we ask the kernel for a free port, start
    supervisord on it, and start again on a fresh port if another process took it meanwhile:
    the least racy way available."""

    def __init__(self, tmp_path: Path, name: str = "sup", username: str = "sup", password: str = "sup-secret") -> None:
        self.dir = tmp_path / name
        self.dir.mkdir()
        self.username, self.password = username, password
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    def _config(self, port: int) -> Path:
        path = self.dir / "supervisord.conf"
        path.write_text(textwrap.dedent(f"""
            [supervisord]
            nodaemon = true
            logfile = {self.dir}/supervisord.log
            pidfile = {self.dir}/supervisord.pid
            childlogdir = {self.dir}
            [inet_http_server]
            port = 127.0.0.1:{port}
            username = {self.username}
            password = {self.password}
            [rpcinterface:supervisor]
            supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
            [program:legacy]
            command = {sys.executable} -u {ROOT}/examples/ticker.py
            startsecs = 0
            stdout_logfile = {self.dir}/legacy.log
            [program:worker]
            command = sleep 602
            startsecs = 0
        """))
        return path

    def start(self) -> Supervisord:
        for _ in range(5):
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            self.proc = subprocess.Popen(["supervisord", "-c", str(self._config(port))], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.STDOUT, start_new_session=True)
            self.port = port
            try:
                wait_until(self._answers, timeout=15, what="supervisord's XML-RPC")
                return self
            except AssertionError:
                if self.proc.poll() is None:
                    raise
                self.proc.wait()  # it exited: the port was taken meanwhile; try another
        raise AssertionError("supervisord did not start on any of 5 ports")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rpc(self) -> Any:
        return xmlrpc.client.ServerProxy(f"http://{self.username}:{self.password}@127.0.0.1:{self.port}/RPC2")

    def _answers(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError("supervisord exited")
        try:
            return all(p["statename"] == "RUNNING" for p in self.rpc().supervisor.getAllProcessInfo())
        except (OSError, xmlrpc.client.Error):
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: supervisord and its children
            self.proc.wait(10)


@pytest.fixture
def supervisord(tmp_path: Path) -> Iterator[Callable[..., Supervisord]]:
    started: list[Supervisord] = []

    def start(**kwargs: Any) -> Supervisord:
        sup = Supervisord(tmp_path, **kwargs)
        started.append(sup)
        return sup.start()

    yield start
    for sup in started:
        sup.stop()


def fleet_cli(args: list[str], input: str = "", cwd: Path | None = None, timeout: float = 60,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(APPS), str(ROOT)]), **(env or {}))
    return subprocess.run([sys.executable, "-m", "arbiter", "fleet", *args], input=input, capture_output=True,
                          text=True, env=env, cwd=str(cwd or ROOT), timeout=timeout)


def write_fleet_config(tmp_path: Path, nodes: list[Node], supervisors: Sequence[tuple[str, Supervisord]] = (),
                       environments: dict[str, str] | None = None, extra: str = "",
                       raw_nodes: str = "") -> Path:
    environments = environments or {}
    text = extra + "\n"
    for node in nodes:
        text += (f'[[nodes]]\nname = "{node.name}"\nenvironment = "{environments.get(node.name, "production")}"\n'
                 f'url = "{node.url}"\ntoken_file = "{node.token_file}"\n\n')
    for name, sup in supervisors:
        text += (f'[[nodes]]\nname = "{name}"\nenvironment = "{environments.get(name, "legacy")}"\nkind = "supervisor"\n'
                 f'url = "{sup.url}"\nusername = "{sup.username}"\npassword = "{sup.password}"\n\n')
    path = tmp_path / "fleet.toml"
    path.write_text(text + raw_nodes)
    return path


def add_user(config: Path, name: str, role: str) -> None:
    result = fleet_cli(["-c", str(config), "user", "add", name, "--role", role, "--password-stdin"], input=PASSWORD + "\n")
    assert result.returncode == 0, result.stderr


def add_token(config: Path, name: str) -> str:
    result = fleet_cli(["-c", str(config), "token", "add", name])
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@dataclass
class FleetServer:
    master: Arbiter
    config: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.master.port}"

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, trust_env=False)

    def login(self, name: str, password: str = PASSWORD) -> tuple[httpx.Client, str]:
        """A browser-like client: a session cookie and the CSRF token."""
        client = self.client()
        response = client.post("/api/v1/login", json={"username": name, "password": password},
                               headers={"Origin": self.url})
        assert response.status_code == 200, response.text
        return client, response.json()["csrf"]


def start_fleet(arbiter: Callable[..., Arbiter], config: Path, *extra: str) -> FleetServer:
    master = arbiter(["fleet", "-c", str(config), "--bind", "127.0.0.1:0", *extra], bind=False, control=False)
    server = FleetServer(master, config)
    wait_until(lambda: _healthy(server), timeout=30, what="the fleet server")
    return server


def _healthy(server: FleetServer) -> bool:
    if server.master.proc.poll() is not None:
        raise AssertionError(f"the fleet server exited:\n{server.master.log()}")
    try:
        return httpx.get(server.url + "/healthz", timeout=2, trust_env=False).status_code == 200
    except (httpx.HTTPError, AssertionError):
        return False


def wait_node_state(client: httpx.Client, node: str, state: str, timeout: float = 20) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        entry = next(n for n in client.get("/api/v1/nodes").json()["nodes"] if n["name"] == node)
        return entry if entry["state"] == state else None
    return dict(wait_until(check, timeout=timeout, what=f"{node} {state}"))


def elapsed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.monotonic()
    return fn(), time.monotonic() - start
