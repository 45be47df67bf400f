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

import pytest

from conftest import ROOT, Arbiter, http_get, wait_until

README = ROOT / "README.md"


@dataclass(frozen=True)
class How:
    scenario: str  # the test that runs the command, or "skip"
    note: str  # what the test checks, or why it is skipped


INSTALL_AND_RUN = "python3 -m pip install -e '.[examples]' && arbiter -c examples/arbiter.toml"
TOKEN = "head -c 32 /dev/urandom | base64 > examples/control.token && chmod 600 examples/control.token"
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
    TOKEN: How("tcp", "run as is: a 0600 token file"),
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


def commands_of(scenario: str) -> list[str]:
    return [c for c in readme_commands() if HOW.get(c, How("", "")).scenario == scenario]


# -- running README commands -----------------------------------------------------------------------


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """A stand-in for the repository root: a copy of examples/, and a bin/ of shims."""
    top = tmp_path / "repo"
    shutil.copytree(ROOT / "examples", top / "examples",
                    ignore=shutil.ignore_patterns("__pycache__", "control.token", "fleet.db"))
    yield top


def shell_env(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        for name, module in (("arbiter", "arbiter"), ("supervisorctl", "supervisor.supervisorctl"),
                             ("python3", None)):
            shim = bin_dir / name
            run = f'-m {module} "$@"' if module else '"$@"'
            shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" {run}\n')
            shim.chmod(0o755)
    env = dict(os.environ)
    env.pop("WEB_CONCURRENCY", None)
    for name in ("ARBITER_SOCKET", "ARBITER_CONTROL_SOCKET", "ARBITER_PIDFILE", "ARBITER_TOKEN", "GUNICORN_CMD_ARGS"):
        env.pop(name, None)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    env["PYTHONUNBUFFERED"] = "1"
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

    def __init__(self, command: str, cwd: Path, tmp_path: Path, env: dict[str, str]) -> None:
        self.args = [command]
        self.log_path = tmp_path / f"shell-{len(list(tmp_path.glob('shell-*.log')))}.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(["bash", "-c", command], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid
        self._port = None


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[list[Shell]]:
    started: list[Shell] = []
    yield started
    for proc in started:
        proc.cleanup()


def start(started: list[Shell], command: str, cwd: Path, tmp_path: Path) -> Shell:
    proc = Shell(command, cwd, tmp_path, shell_env(tmp_path))
    started.append(proc)
    return proc


def stop(proc: Shell) -> None:
    proc.signal(signal.SIGTERM)
    assert proc.wait_exit() == 0, proc.log()


# -- the scenarios ------------------------------------------------------------------------------


# What each started web command must log besides answering on /, and the page it serves.
SERVE_EXPECT: dict[str, tuple[str, bytes]] = {
    "arbiter -c examples/arbiter.toml": (r"ticker \| tick \d", b'"hello":"world"'),
    "arbiter examples.fastapi_app:app -w 4": (r"Using worker: uvicorn", b'"hello":"world"'),
    "arbiter examples.flask_app:app -w 4": (r"Using worker: sync", b'"hello":"world"'),
    "arbiter examples.flask_app:app -w 2 --threads 8": (r"Using worker: gthread", b'"hello":"world"'),
    "arbiter -c examples/gunicorn.conf.py examples.flask_app:app": (r"Ready: \d+ workers", b'"hello":"world"'),
    'GUNICORN_CMD_ARGS="--workers 3" arbiter examples.flask_app:app': (
        r"(?s)(Booting worker with pid.*){3}", b'"hello":"world"'),
}


def test_serve_commands(root: Path, tmp_path: Path, shell: list[Shell]) -> None:
    commands = [c.split(" && ", 1)[1] if c == INSTALL_AND_RUN else c for c in commands_of("serve")]
    assert set(commands) == set(SERVE_EXPECT)
    # Side by side, each in its own directory (its own ./arbiter.sock), to keep the test short.
    procs = {}
    for i, command in enumerate(commands):
        cwd = root.parent / f"serve-{i}"
        shutil.copytree(root, cwd)
        procs[command] = start(shell, f"{command} -b 127.0.0.1:0", cwd, tmp_path)
    for command, proc in procs.items():
        pattern, body = SERVE_EXPECT[command]
        status, page = wait_until(lambda p=proc: _answer(p), 30, what=f"{command} answers")
        assert status == 200 and body in page, (command, status, page)
        proc.wait_log(pattern, timeout=20)
    for proc in procs.values():
        stop(proc)


def _answer(proc: Shell) -> tuple[int, bytes] | None:
    try:
        return http_get(proc.port, "/", timeout=5)
    except OSError:
        return None


def test_check_command(root: Path, tmp_path: Path) -> None:
    (command,) = commands_of("check")
    result = run(command, root, shell_env(tmp_path))
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout


def test_control_commands(root: Path, tmp_path: Path, shell: list[Shell]) -> None:
    env = shell_env(tmp_path)
    master = start(shell, "arbiter -c examples/arbiter.toml -b 127.0.0.1:0", root, tmp_path)
    master.wait_log(r"success: ticker entered RUNNING state")
    ticker_pid = json.loads(run("arbiter ctl status --json", root, env).stdout)
    for command in commands_of("control"):
        if command == "arbiter ctl tail -f ticker":
            follower = start(shell, command, root, tmp_path)
            follower.wait_log(r"tick \d+\n")
            follower.cleanup()
            continue
        result = run(command, root, env)
        assert result.returncode == 0, (command, result.stdout)
        out = result.stdout
        if command in ("arbiter ctl status", "supervisorctl -s unix://$PWD/arbiter.sock status"):
            assert re.search(r"ticker\s+RUNNING", out), out
        elif command == "arbiter ctl status --json":
            ticker_pid = _ticker(json.loads(out))["pid"]
        elif command == "arbiter ctl restart ticker":
            assert "ticker: restarted" in out
            assert _ticker(json.loads(run("arbiter ctl status --json", root, env).stdout))["pid"] != ticker_pid
        elif command == "arbiter ctl scale +2":
            master.wait_workers(lambda pids: len(pids) == 4, what="four workers")
        elif command == "arbiter ctl reload --wait":
            assert "reload done" in out
    stop(master)


def _ticker(status: dict) -> dict:
    (ticker,) = [p for p in status["programs"] if p["name"] == "ticker"]
    return ticker


def test_tcp_control_and_fleet(root: Path, tmp_path: Path, shell: list[Shell]) -> None:
    env = shell_env(tmp_path)
    token, master_cmd, ctl, fleet_user, fleet_serve = commands_of("tcp")
    assert run(token, root, env).returncode == 0
    token_file = root / "examples" / "control.token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600 and len(token_file.read_text().strip()) >= 32

    master = start(shell, master_cmd.replace("127.0.0.1:9001", "127.0.0.1:0") + " -b 127.0.0.1:0", root, tmp_path)
    port = master.wait_log(r"Control API at: http://127\.0\.0\.1:(\d+)")[0].group(1)
    master.wait_log(r"success: ticker entered RUNNING state")
    result = run(ctl.replace(":9001", f":{port}"), root, env)
    assert result.returncode == 0 and re.search(r"ticker\s+RUNNING", result.stdout), result.stdout

    fleet_toml = root / "examples" / "fleet.toml"
    assert "http://127.0.0.1:9001" in fleet_toml.read_text()
    fleet_toml.write_text(fleet_toml.read_text().replace("127.0.0.1:9001", f"127.0.0.1:{port}"))
    password = "a long example password"
    result = run(fleet_user, root, env, stdin=f"{password}\n{password}\n")
    assert result.returncode == 0 and "alice" in result.stdout, result.stdout

    fleet = start(shell, f"{fleet_serve} -b 127.0.0.1:0", root, tmp_path)
    conn = http.client.HTTPConnection("127.0.0.1", fleet.port, timeout=10)
    wait_until(lambda: _answer(fleet), 20, what="the fleet server")
    conn.request("POST", "/api/v1/login", body=json.dumps({"username": "alice", "password": password}),
                 headers={"Content-Type": "application/json"})
    login = conn.getresponse()
    assert login.status == 200, login.read()
    login.read()
    cookie = login.getheader("Set-Cookie", "").split(";")[0]
    conn.request("GET", "/api/v1/nodes", headers={"Cookie": cookie})
    nodes = json.loads(conn.getresponse().read())["nodes"]
    conn.close()
    assert [(n["name"], n["state"]) for n in nodes] == [("local", "up")], nodes
    assert any(p["name"] == "ticker" for p in nodes[0]["processes"])
    stop(fleet)
    stop(master)


def test_supervisord_conf(root: Path, tmp_path: Path, shell: list[Shell]) -> None:
    env = shell_env(tmp_path)
    (command,) = commands_of("supervisord")
    master = start(shell, command, root, tmp_path)
    wait_until(lambda: "PROCESS_STATE_RUNNING processname:ticker" in
               run("arbiter ctl tail watcher stderr", root, env).stdout, 15, what="the listener's event")
    assert "Listening at" not in master.log()
    stop(master)
