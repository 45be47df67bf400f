"""Every shell command in README.md runs as written.

The README's ```sh blocks are read line by line, and each command must be in `HOW` below: run in
one of the scenarios, or skipped for a stated reason. A command added to the README without an
entry here, or an entry whose command left the README, fails `test_every_readme_command_is_covered`.

Each scenario runs in a directory of its own holding a copy of examples/ (so `arbiter.sock`, the
token and fleet.db land there, and masters run side by side), with `arbiter`, `python3` and
`supervisorctl` on PATH running this worktree's code under this interpreter. The commands are run
by bash as the README spells them; the only changes are the ones listed in `HOW` (a kernel-chosen
port in place of a fixed one).
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, Arbiter, http_get, wait_until

README = ROOT / "README.md"


@dataclass(frozen=True)
class How:
    scenario: str  # the test that runs the command, or "skip"
    note: str  # what the test checks, or why it is skipped


INSTALL_AND_RUN = "python3 -m pip install -e '.[examples]' && arbiter -c examples/arbiter.toml"
TOKEN = "(umask 077; python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > examples/control.token)"
TCP_MASTER = ("arbiter -c examples/arbiter.toml --control-bind 127.0.0.1:9001 "
              "--control-token-file examples/control.token")
TCP_CTL = 'arbiter ctl --url http://127.0.0.1:9001 --token "$(cat examples/control.token)" status'
FLEET_USER = "arbiter fleet -c examples/fleet.toml user add alice --role admin"
FLEET_SERVE = "arbiter fleet -c examples/fleet.toml"

HOW: dict[str, How] = {
    INSTALL_AND_RUN: How("serve", "the part after && (the install is what this environment did): "
                                  "-b 127.0.0.1:0 added; FastAPI answers and ticker's lines are prefixed"),
    "scripts/install-test-deps && python3 -m pytest -q": How(
        "skip", "installs packages and runs the whole suite, this test included (the lead's run)"),
    "arbiter examples.fastapi_app:app -w 4": How("serve", "-b 127.0.0.1:0 added; uvicorn workers answer"),
    "arbiter examples.flask_app:app -w 4": How("serve", "-b 127.0.0.1:0 added; sync workers answer"),
    "arbiter examples.flask_app:app -w 2 --threads 8": How("serve", "-b 127.0.0.1:0 added; gthread answers"),
    "arbiter -c examples/gunicorn.conf.py examples.flask_app:app": How(
        "serve", "-b 127.0.0.1:0 added (over the file's bind); the when_ready hook logs"),
    'GUNICORN_CMD_ARGS="--workers 3" arbiter examples.flask_app:app': How(
        "serve", "-b 127.0.0.1:0 added; three workers boot"),
    "arbiter -c examples/arbiter.toml --check-config": How("check", "run as is: exit 0, says OK"),
    "arbiter -c examples/supervisord.conf": How(
        "supervisord", "run as is (no web app, nothing bound): the listener hears ticker reach RUNNING"),
    "arbiter ctl status": How("control", "against a master of examples/arbiter.toml: lists ticker RUNNING"),
    "arbiter ctl status --json": How("control", "the JSON parses and holds ticker"),
    "arbiter ctl restart ticker": How("control", "exit 0, a new pid"),
    "arbiter ctl tail -f ticker": How("control", "follows until a tick line arrives, then is stopped"),
    "arbiter ctl scale +2": How("control", "four workers run"),
    "arbiter ctl reload --wait": How("control", "exit 0, reload done"),
    "supervisorctl -s unix://$PWD/arbiter.sock status": How("control", "Supervisor's own supervisorctl lists ticker"),
    TOKEN: How("tcp", "run as is: a 0600 token file, URL-safe"),
    TCP_MASTER: How("tcp", "127.0.0.1:9001 becomes 127.0.0.1:0 and -b 127.0.0.1:0 is added"),
    TCP_CTL: How("tcp", "the port the kernel chose in place of 9001; status over TCP with the token"),
    "python3 -m pip install -e '.[fleet]'": How("skip", "an install: the test extra holds the fleet's dependencies"),
    FLEET_USER: How("tcp", "the password typed twice on stdin; examples/fleet.toml's port set to the master's"),
    FLEET_SERVE: How("tcp", "-b 127.0.0.1:0 added; alice logs in and sees the node up"),
}


def readme_commands() -> list[str]:
    """The commands of README.md's ```sh blocks, one per line, without their trailing comments."""
    commands = []
    for block in re.findall(r"^```sh\n(.*?)^```", README.read_text(), flags=re.M | re.S):
        for line in block.splitlines():
            command = re.sub(r"\s+#\s.*$", "", line).strip()
            if command:
                commands.append(command)
    return commands


def test_every_readme_command_is_covered() -> None:
    commands = readme_commands()
    assert len(commands) == len(set(commands)), "a command appears twice in the README"
    unknown = [c for c in commands if c not in HOW]
    assert not unknown, f"README commands with no entry in HOW (run them, or say why not): {unknown}"
    gone = [c for c in HOW if c not in commands]
    assert not gone, f"HOW entries whose command is no longer in the README: {gone}"
    assert {how.scenario for how in HOW.values()} <= {"serve", "check", "control", "tcp", "supervisord", "skip"}
    assert all(how.note for how in HOW.values())


def commands_of(scenario: str) -> list[str]:
    return [c for c in readme_commands() if HOW.get(c, How("", "")).scenario == scenario]


# -- running README commands -----------------------------------------------------------------------


def make_root(base: Path, name: str) -> Path:
    """A stand-in for the repository root: a copy of examples/ in a directory of its own."""
    top = base / name
    shutil.copytree(ROOT / "examples", top / "examples",
                    ignore=shutil.ignore_patterns("__pycache__", "control.token", "fleet.db"))
    return top


def shell_env(base: Path) -> dict[str, str]:
    """The environment of a README command: this worktree's `arbiter` (and this interpreter's
    `python3` and `supervisorctl`) first on PATH, and none of the caller's control variables."""
    bin_dir = base / "bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        for name, module in (("arbiter", "arbiter"), ("supervisorctl", "supervisor.supervisorctl"),
                             ("python3", None)):
            shim = bin_dir / name
            run = f'-m {module} "$@"' if module else '"$@"'
            shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" {run}\n')
            shim.chmod(0o755)
    env = dict(os.environ)
    for name in ("WEB_CONCURRENCY", "ARBITER_SOCKET", "ARBITER_CONTROL_SOCKET", "ARBITER_PIDFILE",
                 "ARBITER_TOKEN", "GUNICORN_CMD_ARGS"):
        env.pop(name, None)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
    # Supervisor's AUTO log files (examples/supervisord.conf's) go to the temporary directory.
    (base / "tmp").mkdir(exist_ok=True)
    env["TMPDIR"] = str(base / "tmp")
    return env


def run(command: str, cwd: Path, env: dict[str, str], stdin: str = "", timeout: float = 30) -> \
        subprocess.CompletedProcess[str]:
    """Run one command to its end with bash, in a session of its own (no terminal: getpass reads stdin)."""
    proc = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=env, text=True, start_new_session=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = proc.communicate(stdin, timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(command, proc.returncode, out, "")


class Shell(Arbiter):
    """A long-running README command, started by bash (which execs it) in a session of its own;
    the harness's `Arbiter` reads its log and kills its whole tree at the end."""

    def __init__(self, command: str, cwd: Path, logs: Path, env: dict[str, str]) -> None:
        self.args = [command]
        self.cwd = cwd
        self.log_path = logs / f"shell-{len(list(logs.glob('shell-*.log')))}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid
        self._port = None

    def stop(self) -> None:
        self.signal(signal.SIGTERM)
        assert self.wait_exit() == 0, self.log()


# What each started web command must log besides answering on /.
SERVE_EXPECT: dict[str, str] = {
    "arbiter -c examples/arbiter.toml": r"ticker \| tick \d",
    "arbiter examples.fastapi_app:app -w 4": r"Using worker: uvicorn",
    "arbiter examples.flask_app:app -w 4": r"Using worker: sync",
    "arbiter examples.flask_app:app -w 2 --threads 8": r"Using worker: gthread",
    "arbiter -c examples/gunicorn.conf.py examples.flask_app:app": r"Ready: \d+ workers",
    'GUNICORN_CMD_ARGS="--workers 3" arbiter examples.flask_app:app': r"(?s)(Booting worker with pid.*){3}",
}


@dataclass
class Started:
    base: Path
    env: dict[str, str]
    serve: dict[str, Shell]  # each serve command, as written but for `-b 127.0.0.1:0`
    control: Shell  # `arbiter -c examples/arbiter.toml` for the ctl commands
    tcp: Shell  # the README's TCP master
    supervisord: Shell  # `arbiter -c examples/supervisord.conf`


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Started]:
    """Every long-running master the README starts, started at once (each in its own directory,
    with its own ./arbiter.sock) so that their boots overlap and the tests stay short."""
    base = tmp_path_factory.mktemp("readme")
    env = shell_env(base)
    shells: list[Shell] = []

    def begin(command: str, name: str) -> Shell:
        shell = Shell(command, make_root(base, name), base, env)
        shells.append(shell)
        return shell

    try:
        serve = {}
        for i, command in enumerate(commands_of("serve")):
            command = command.split(" && ", 1)[1] if command == INSTALL_AND_RUN else command
            serve[command] = begin(f"{command} -b 127.0.0.1:0", f"serve-{i}")
        control = begin("arbiter -c examples/arbiter.toml -b 127.0.0.1:0", "control")
        tcp_root = make_root(base, "tcp")
        assert run(TOKEN, tcp_root, env).returncode == 0
        tcp = Shell(TCP_MASTER.replace("127.0.0.1:9001", "127.0.0.1:0") + " -b 127.0.0.1:0", tcp_root, base, env)
        shells.append(tcp)
        (supervisord,) = commands_of("supervisord")
        yield Started(base, env, serve, control, tcp, begin(supervisord, "supervisord"))
    finally:
        for shell in shells:
            shell.cleanup()


def _answer(proc: Shell) -> tuple[int, bytes] | None:
    try:
        return http_get(proc.port, "/", timeout=5)
    except OSError:
        return None


def test_serve_commands(started: Started) -> None:
    assert set(started.serve) == set(SERVE_EXPECT)
    for command, proc in started.serve.items():
        status, page = wait_until(functools.partial(_answer, proc), 30, what=f"{command} answers")
        assert status == 200 and b'"hello":"world"' in page, (command, status, page)
        proc.wait_log(SERVE_EXPECT[command], timeout=20)
    for proc in started.serve.values():
        proc.signal(signal.SIGTERM)
    for command, proc in started.serve.items():
        assert proc.wait_exit() == 0, (command, proc.log())


def test_check_command(started: Started) -> None:
    (command,) = commands_of("check")
    result = run(command, make_root(started.base, "check"), started.env)
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout


def test_control_commands(started: Started) -> None:
    master, env = started.control, started.env
    master.wait_log(r"success: ticker entered RUNNING state")
    ticker_pid = None
    for command in commands_of("control"):
        if command == "arbiter ctl tail -f ticker":
            follower = Shell(command, master.cwd, started.base, env)
            try:
                follower.wait_log(r"tick \d+\n")
            finally:
                follower.cleanup()
            continue
        result = run(command, master.cwd, env)
        assert result.returncode == 0, (command, result.stdout)
        out = result.stdout
        if command in ("arbiter ctl status", "supervisorctl -s unix://$PWD/arbiter.sock status"):
            assert re.search(r"ticker\s+RUNNING", out), out
        elif command == "arbiter ctl status --json":
            ticker_pid = _ticker(json.loads(out))["pid"]
        elif command == "arbiter ctl restart ticker":
            assert "ticker: restarted" in out
            now = json.loads(run("arbiter ctl status --json", master.cwd, env).stdout)
            assert ticker_pid and _ticker(now)["pid"] not in (None, ticker_pid)
        elif command == "arbiter ctl scale +2":
            master.wait_workers(lambda pids: len(pids) == 4, what="four workers")
        elif command == "arbiter ctl reload --wait":
            assert "reload done" in out
    master.stop()


def _ticker(status: dict[str, Any]) -> dict[str, Any]:
    (ticker,) = [p for p in status["programs"] if p["name"] == "ticker"]
    return dict(ticker)


def test_tcp_control_and_fleet(started: Started) -> None:
    master, env = started.tcp, started.env
    root = master.cwd
    token_file = root / "examples" / "control.token"
    token = token_file.read_text().strip()
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and re.fullmatch(r"[\w-]{40,}", token), token

    port = master.wait_log(r"Control API at: http://127\.0\.0\.1:(\d+)")[0].group(1)
    master.wait_log(r"success: ticker entered RUNNING state")
    result = run(TCP_CTL.replace(":9001", f":{port}"), root, env)
    assert result.returncode == 0 and re.search(r"ticker\s+RUNNING", result.stdout), result.stdout

    fleet_toml = root / "examples" / "fleet.toml"
    assert "http://127.0.0.1:9001" in fleet_toml.read_text()
    fleet_toml.write_text(fleet_toml.read_text().replace("127.0.0.1:9001", f"127.0.0.1:{port}"))
    password = "a long example password"
    result = run(FLEET_USER, root, env, stdin=f"{password}\n{password}\n")
    assert result.returncode == 0 and "alice" in result.stdout, result.stdout

    fleet = Shell(f"{FLEET_SERVE} -b 127.0.0.1:0", root, started.base, env)
    try:
        wait_until(lambda: _answer(fleet), 20, what="the fleet server")
        conn = http.client.HTTPConnection("127.0.0.1", fleet.port, timeout=10)
        conn.request("POST", "/api/v1/login", body=json.dumps({"username": "alice", "password": password}),
                     headers={"Content-Type": "application/json"})
        login = conn.getresponse()
        assert login.status == 200, login.read()
        login.read()
        cookie = (login.getheader("Set-Cookie") or "").split(";")[0]
        conn.request("GET", "/api/v1/nodes", headers={"Cookie": cookie})
        nodes = json.loads(conn.getresponse().read())["nodes"]
        conn.close()
        assert [(n["name"], n["state"]) for n in nodes] == [("local", "up")], nodes
        assert any(p["name"] == "ticker" for p in nodes[0]["processes"])
        fleet.stop()
    finally:
        fleet.cleanup()
    master.stop()


def test_supervisord_conf(started: Started) -> None:
    master, env = started.supervisord, started.env
    wait_until(lambda: "PROCESS_STATE_RUNNING processname:ticker" in
               run("arbiter ctl tail watcher stderr", master.cwd, env).stdout, 15, what="the listener's event")
    assert "Listening at" not in master.log()
    master.stop()


def test_systemd_unit(started: Started) -> None:
    """examples/arbiter.service: its ExecStart, with the unit's /srv/example standing for a copy
    of the repository, passes --check-config; it is a notify unit that signals the master only."""
    unit = dict(line.split("=", 1) for line in (ROOT / "examples" / "arbiter.service").read_text().splitlines()
                if "=" in line and not line.startswith("#"))
    assert unit["Type"] == "notify" and unit["KillMode"] == "mixed" and unit["ExecReload"].endswith("-HUP $MAINPID")
    home = unit["WorkingDirectory"] + "/"
    root = make_root(started.base, "systemd")
    shutil.copy(root / "examples" / "arbiter.toml", root / "arbiter.toml")
    command = unit["ExecStart"].replace(home + ".venv/bin/", "").replace(home, "")
    assert command == "arbiter -c arbiter.toml"
    result = run(f"{command} --check-config", root, started.env)
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout
