"""The web servers compared by boot_bench.py and memory_bench.py, and how to probe their workers.

Every server gets the same listening socket, bound here to 127.0.0.1:0 before it starts and
passed by descriptor (`-b fd://N` to Arbiter and Gunicorn, `--fd N` to uvicorn), so the port is
known at once and no server's own bind or port discovery is timed. TCP_NODELAY is set on that
socket (Linux copies it to every accepted one): uvicorn wraps an inherited descriptor as AF_UNIX
and would never set it (see README.md).
"""

from __future__ import annotations

import contextlib
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import _RUNNING, Server  # noqa: E402

PY = sys.executable
BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PID_IN_BODY = re.compile(rb'pid"?[=:]\s*(\d+)')


def gunicorn_uvicorn_worker() -> str:
    try:
        import uvicorn_worker  # noqa: F401
        return "uvicorn_worker.UvicornWorker"
    except ImportError:
        return "uvicorn.workers.UvicornWorker"  # deprecated, still shipped in uvicorn


def contenders(app: str, workers: int, fd: int) -> dict[str, list[str]]:
    """name -> command line, for `app` (module:attribute) with `workers` workers on socket `fd`."""
    w = str(workers)
    arbiter = [PY, "-m", "arbiter", app, "-w", w, "-b", f"fd://{fd}"]
    gunicorn = [PY, "-m", "gunicorn", app, "-w", w, "-k", gunicorn_uvicorn_worker(), "-b", f"fd://{fd}"]
    return {
        "arbiter --preload": arbiter + ["--preload"],
        "gunicorn --preload": gunicorn + ["--preload"],
        "arbiter": arbiter,
        "gunicorn": gunicorn,
        "uvicorn --workers": [PY, "-m", "uvicorn", app, "--workers", w, "--fd", str(fd),
                              "--no-access-log", "--log-level", "warning"],
    }


def listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def launch(name: str, cmd: list[str], sock: socket.socket, env: dict[str, str], cwd: str) -> Server:
    """Start `cmd` in its own session with `sock` inherited; stop it with `.stop()` (or stop_all)."""
    log_file = tempfile.NamedTemporaryFile(prefix=f"bench-{name.replace(' ', '_')}-", suffix=".log")
    started = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=log_file,
                            stderr=subprocess.STDOUT, pass_fds=(sock.fileno(),), start_new_session=True)
    server = Server(name, proc, log_file, sock.getsockname()[1])
    server.started = started  # type: ignore[attr-defined]
    _RUNNING.append(server)
    return server


def probe(port: int, connections: int = 8, timeout: float = 10.0, path: str = "/",
          pattern: re.Pattern[bytes] = PID_IN_BODY) -> set[int]:
    """GET `path` on `connections` fresh connections at once; the pids (found by `pattern` in the
    body) that answered 200.

    Several at a time, so that idle workers each get a chance against the first one up."""
    socks, pids = [], set()
    try:
        for _ in range(connections):
            with contextlib.suppress(OSError):
                sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
                socks.append(sock)
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        for sock in socks:
            data = b""
            with contextlib.suppress(OSError):
                while chunk := sock.recv(65536):
                    data += chunk
            match = pattern.search(data)
            if data.startswith(b"HTTP/1.1 200") and match:
                pids.add(int(match.group(1)))
    finally:
        for sock in socks:
            sock.close()
    return pids


def wait_pids_serving(server: Server, count: int, timeout: float) -> tuple[float | None, set[int]]:
    """Seconds from the server's start until `count` distinct pids answered (None: not within
    `timeout`), and the pids seen."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen |= probe(server.port)
        if len(seen) >= count:
            return time.monotonic() - server.started, seen
        if server.proc.poll() is not None:
            break
        time.sleep(0.002)
    return None, seen


def tree(pid: int) -> list[int]:
    """The process and all its live, non-zombie descendants: the whole server."""
    out = [pid]
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if child.status() != psutil.STATUS_ZOMBIE:
                    out.append(child.pid)
    return out


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """user + system CPU seconds each process has used so far (10 ms ticks); gone ones left out."""
    out = {}
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            out[pid] = times.user + times.system
    return out


def pss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0
