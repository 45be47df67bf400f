"""Reusable pieces for benchmarks: start/stop servers, read their port, probe them, run wrk.

A `Server` runs in its own session (process group) with stderr going to a temp file, so a
chatty server can never block on a full pipe and its log can be searched for the bound port.
`stop()` SIGTERMs the whole group, then SIGKILLs it, and always reaps the leader. `stop_all()`
stops every server still running; benchmarks call it in a `finally`.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

def use_bytecode_cache() -> str:
    """Let the servers this script starts read and write compiled bytecode, as an installed
    package does (pip compiles it at install); compile Arbiter and the bench apps now.

    With PYTHONDONTWRITEBYTECODE set (as on the project's shared machine, to keep worktrees
    clean), a source checkout recompiles every module of Arbiter at every start (~0.1-0.2 s
    of a master's start, and again in every worker for what it imports after the fork), while
    Gunicorn, uvicorn and supervisord run from site-packages with their .pyc. Returns a note
    for the report's header."""
    root = Path(__file__).resolve().parent.parent
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    import compileall

    for folder in ("arbiter", "benchmarks"):
        compileall.compile_dir(str(root / folder), quiet=1)
    return "bytecode cached for every server (PYTHONDONTWRITEBYTECODE unset for them)"


LISTENING = re.compile(r"Listening at: https?://127\.0\.0\.1:(\d+)")
PID_IN_BODY = re.compile(rb"pid=(\d+)")
_RUNNING: list[Server] = []


class ServerError(RuntimeError):
    """A server did not start, or did not answer."""


class Server:
    def __init__(self, name: str, proc: subprocess.Popen[bytes], log_file, port: int | None) -> None:
        self.name = name
        self.proc = proc
        self.log_file = log_file
        self.port = port

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def log_text(self) -> str:
        self.log_file.flush()
        with open(self.log_file.name, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def worker_pids(self) -> list[int]:
        """Direct children of the master (the workers), oldest first."""
        try:
            children = psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []
        alive = []
        for child in children:
            with contextlib.suppress(psutil.Error):
                if child.status() != psutil.STATUS_ZOMBIE:
                    alive.append((child.create_time(), child.pid))
        return [pid for _, pid in sorted(alive)]

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the process group, SIGKILL it after `timeout`, reap the leader. Idempotent."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Workers may outlive a leader that exited; the group id is still the leader's pid.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        if self in _RUNNING:
            _RUNNING.remove(self)
        self.log_file.close()


def start_server(
    name: str,
    cmd: list[str],
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    port: int | None = None,
    port_from: str = "log",
    pass_fds: tuple[int, ...] = (),
    timeout: float = 20.0,
) -> Server:
    """Start `cmd` in a new session and wait until it serves `GET /` with 200.

    Without `port`, the port bound to 127.0.0.1:0 is found by `port_from`: "log", a
    `Listening at: http://127.0.0.1:PORT` line (Arbiter, Gunicorn); "listen", the socket the
    leader process listens on, asked of the kernel (a server that logs no port, e.g.
    `uvicorn --workers N --log-level warning`). Raises ServerError (after stopping the server).
    """
    log_file = tempfile.NamedTemporaryFile(prefix=f"bench-{name.replace(' ', '_')}-", suffix=".log")
    proc = subprocess.Popen(
        cmd, env={**os.environ, **(env or {})}, cwd=cwd, stdin=subprocess.DEVNULL,
        stdout=log_file, stderr=subprocess.STDOUT, pass_fds=pass_fds, start_new_session=True,
    )
    server = Server(name, proc, log_file, port)
    _RUNNING.append(server)
    deadline = time.monotonic() + timeout
    try:
        while server.port is None:
            server.port = _listening_port(server.pid) if port_from == "listen" else None
            match = LISTENING.search(server.log_text()) if port_from == "log" else None
            if match:
                server.port = int(match.group(1))
            if server.port is not None:
                break
            elif proc.poll() is not None or time.monotonic() > deadline:
                raise ServerError("no 'Listening at' line")
            else:
                time.sleep(0.02)
        while True:
            status, _ = http_get(server.port, timeout=1.0)
            if status == 200:
                return server
            if status is not None:
                raise ServerError(f"GET / answered {status}, not 200")
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ServerError("never answered GET /")
            time.sleep(0.05)
    except BaseException as exc:
        detail = f"{name} failed to start ({exc}; exit code {proc.poll()}):\n{server.log_tail()}"
        server.stop()
        if isinstance(exc, ServerError):
            raise ServerError(detail) from None
        raise


def _listening_port(pid: int) -> int | None:
    """The port a process listens on at 127.0.0.1, if exactly one."""
    try:
        conns = psutil.Process(pid).net_connections("tcp4")
    except psutil.Error:
        return None
    ports = {c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN and c.laddr.ip == "127.0.0.1"}
    return ports.pop() if len(ports) == 1 else None


def stop_all() -> None:
    for server in list(_RUNNING):
        server.stop()


def http_get(port: int, timeout: float = 2.0) -> tuple[int | None, bytes]:
    """One `GET /` on a fresh connection (Connection: close). (None, b"") if it failed."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            return _read_response(sock)
    except OSError:
        return None, b""


def _read_response(sock: socket.socket) -> tuple[int | None, bytes]:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return None, b""
    return int(parts[1]), body


def probe_pids(port: int, connections: int = 4, timeout: float = 2.0) -> set[int]:
    """Open `connections` fresh connections at once, send `GET /` on each; the pids that served a 200.

    Several at a time so that an idle worker gets a chance against a busy one.
    """
    socks = []
    pids: set[int] = set()
    try:
        for _ in range(connections):
            with contextlib.suppress(OSError):
                sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
                socks.append(sock)
                sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        for sock in socks:
            with contextlib.suppress(OSError):
                status, body = _read_response(sock)
                match = PID_IN_BODY.search(body)
                if status == 200 and match:
                    pids.add(int(match.group(1)))
            # Close at once: a server may linger after its FIN until the client closes too
            # (Gunicorn 27's sync worker waits up to 2 s for it).
            sock.close()
    finally:
        for sock in socks:
            sock.close()
    return pids


def wait_workers_serving(server: Server, count: int, timeout: float = 10.0) -> bool:
    """True once responses from `count` distinct pids were seen (every worker booted and serving)."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen |= probe_pids(server.port)
        if len(seen) >= count:
            return True
        time.sleep(0.01)
    return False


@dataclass
class WrkResult:
    rps: float
    requests: int = 0  # completed in the run ("N requests in ...")
    non2xx: int = 0
    socket_errors: int = 0
    latency: dict[str, str] = field(default_factory=dict)  # "50%" -> "1.23ms"

    @property
    def errors(self) -> int:
        return self.non2xx + self.socket_errors


def parse_wrk(output: str) -> WrkResult:
    match = re.search(r"Requests/sec:\s*([\d.]+)", output)
    if not match:
        raise ValueError(f"no Requests/sec in wrk output:\n{output}")
    result = WrkResult(rps=float(match.group(1)))
    done = re.search(r"(\d+) requests in", output)
    if done:
        result.requests = int(done.group(1))
    if match := re.search(r"Non-2xx or 3xx responses:\s*(\d+)", output):
        result.non2xx = int(match.group(1))
    if match := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output):
        result.socket_errors = sum(int(n) for n in match.groups())
    for pct, value in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", output, re.M):
        result.latency[f"{pct}%"] = value
    return result


def run_wrk(url: str, duration: float, threads: int = 2, connections: int = 64) -> WrkResult:
    """Run wrk against `url`; bounded by a timeout, and wrk is killed if we are interrupted."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency", url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        out, _ = proc.communicate(timeout=duration + 15)
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
    return parse_wrk(out.decode("utf-8", "replace"))


class BenchError(RuntimeError):
    """A run did not go as it must (a master died, a wait timed out)."""


class Interrupted(BaseException):
    """SIGTERM, or the overall time limit."""


LIVE_MASTERS: list[MasterProcess] = []  # not yet stopped, for a script's last-resort cleanup


class MasterProcess:
    """A master (arbiter or supervisord) in its own session, its output in `tmp/console.log`;
    stop() ends its group, then any descendant it left behind."""

    stop_grace = 15.0  # seconds between SIGTERM and SIGKILL

    def __init__(self, cmd: list[str], tmp: Path) -> None:
        self.console = open(tmp / "console.log", "wb")
        self.started = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.console,
                                     stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp)
        LIVE_MASTERS.append(self)
        self.ps = psutil.Process(self.proc.pid)
        self.children: dict[int, psutil.Process] = {}  # every descendant ever seen

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"the master exited with {self.proc.returncode}")

    def remember_children(self) -> None:
        with contextlib.suppress(psutil.Error):
            for child in self.ps.children(recursive=True):
                self.children.setdefault(child.pid, child)

    def stop(self) -> None:
        """SIGTERM the master's group, SIGKILL after `stop_grace`; then kill any child it left.

        Programs run in sessions of their own, so a master stopped cleanly stops them; a master
        that had to be killed leaves them, and they are killed here by the psutil handles
        remembered (which refuse a reused pid). Ctrl-C, SIGTERM and the alarm wait until this
        bounded cleanup is done, then take effect."""
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGALRM})
        try:
            self.remember_children()
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.proc.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(self.stop_grace)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            for child in self.children.values():
                with contextlib.suppress(psutil.Error):
                    child.kill()
            psutil.wait_procs([c for c in self.children.values() if c.is_running()], timeout=5)
        finally:
            self.console.close()
            if self in LIVE_MASTERS:
                LIVE_MASTERS.remove(self)
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
