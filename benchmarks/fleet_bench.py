"""Fleet status of 50 nodes, 5 of them unreachable: how long GET /api/v1/nodes takes.

The nodes: 3 real Arbiter masters (TCP control API with a token), 42 stand-ins on loopback that
answer /v1/status like a master would (one asyncio loop in a thread of this process), and 5
unreachable nodes: 3 sockets that accept connections and never answer (a hung host: only the
deadline ends the wait) and 2 closed ports (refused at once). The fleet server is the real one,
`arbiter fleet`, with the default 2 s deadline.

Side by side, the way Cesi asks its nodes: one after another, each with the same 2 s timeout
(measured here with httpx against the same 50 nodes). The fleet server must answer within 2.5 s,
not 5 x 2 s.

    python3 benchmarks/fleet_bench.py [--rounds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-node-token"
STATUS = json.dumps({
    "master": {"pid": 1, "state": "RUNNING", "generation": 1, "workers_target": 2, "uptime": 100.0},
    "workers": [{"pid": 100 + i, "age": 50.0, "generation": 1, "state": "READY", "requests": 10,
                 "rss": 30 << 20, "cpu": 1.5} for i in range(2)],
    "programs": [{"name": f"job_{i}", "group": "jobs", "state": "RUNNING", "statecode": 20, "pid": 200 + i,
                  "start": time.time() - 60, "description": "", "spawnerr": ""} for i in range(4)],
}).encode()


def env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT))


async def _standin(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A master's /v1/status and nothing else, keep-alive, token checked."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            ok = f"authorization: bearer {TOKEN}".encode() in head.lower()
            body = STATUS if ok else b'{"error": {"code": "UNAUTHORIZED", "message": "token"}}'
            writer.write(b"HTTP/1.1 %d OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (200 if ok else 401, len(body), body))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        writer.close()


def start_standins(count: int) -> tuple[list[int], asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    ports: list[int] = []

    async def serve() -> None:
        for _ in range(count):
            server = await asyncio.start_server(_standin, "127.0.0.1", 0)
            ports.append(server.sockets[0].getsockname()[1])

    loop.run_until_complete(serve())
    threading.Thread(target=loop.run_forever, daemon=True).start()
    return ports, loop


def black_holes(count: int) -> list[socket.socket]:
    """Listening sockets nobody accepts from: connects succeed (the kernel's backlog), answers never come."""
    holes = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        holes.append(sock)
    return holes


def closed_ports(count: int) -> list[int]:
    ports = []
    for _ in range(count):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    return ports


def wait_log(path: Path, pattern: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> str:
    import re
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = re.search(pattern, path.read_text(errors="replace"))
        if match:
            return match.group(1)
        if proc.poll() is not None:
            raise RuntimeError(f"exited:\n{path.read_text()}")
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {pattern!r}:\n{path.read_text()}")


def start_master(tmp: Path, index: int, token_file: Path) -> tuple[subprocess.Popen[bytes], int]:
    config = tmp / f"node-{index}.toml"
    config.write_text(f'wsgi_app = "asgi_app:app"\nworkers = 1\ncontrol_bind = "127.0.0.1:0"\n'
                      f'control_token_file = "{token_file}"\ncontrol_socket = "none"\nbind = ["127.0.0.1:0"]\n'
                      '[programs.ticker]\ncommand = "sleep 600"\nstartsecs = 0\n')
    log = tmp / f"node-{index}.log"
    proc = subprocess.Popen([sys.executable, "-m", "arbiter", "-c", str(config)], stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, env=dict(env(), PYTHONPATH=f"{ROOT}/tests/apps:{ROOT}"),
                            start_new_session=True)
    return proc, int(wait_log(log, r"Control API at: http://127\.0\.0\.1:(\d+)", proc))


def sequential(nodes: list[tuple[str, str, dict[str, str]]], deadline: float) -> float:
    """Cesi's way: each node in turn, each with the deadline."""
    start = time.monotonic()
    with httpx.Client(timeout=deadline, trust_env=False) as client:
        for _, url, headers in nodes:
            try:
                client.get(url + "/v1/status", headers=headers).json()
            except (httpx.HTTPError, ValueError):
                pass
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        token_file = tmp / "node.token"
        token_file.write_text(TOKEN)
        try:
            masters = []
            for i in range(3):
                proc, port = start_master(tmp, i, token_file)
                procs.append(proc)
                masters.append(port)
            standins, _ = start_standins(42)
            holes = black_holes(3)
            refused = closed_ports(2)
            ports = [("real", p) for p in masters] + [("standin", p) for p in standins] + \
                [("hung", h.getsockname()[1]) for h in holes] + [("closed", p) for p in refused]
            text = "deadline = 2.0\n"
            for i, (kind, port) in enumerate(ports):
                text += (f'[[nodes]]\nname = "{kind}-{i:02d}"\nenvironment = "env-{i % 5}"\n'
                         f'url = "http://127.0.0.1:{port}"\ntoken_file = "{token_file}"\n')
            config = tmp / "fleet.toml"
            config.write_text(text)
            fleet = [sys.executable, "-m", "arbiter", "fleet", "-c", str(config)]
            subprocess.run(fleet + ["user", "add", "bench", "--role", "viewer", "--password-stdin"],
                           input=b"bench-password\n", env=env(), check=True, capture_output=True)
            api_token = subprocess.run(fleet + ["token", "add", "bench"], env=env(), check=True,
                                       capture_output=True, text=True).stdout.strip()
            log = tmp / "fleet.log"
            server = subprocess.Popen(fleet + ["--bind", "127.0.0.1:0"], stdout=open(log, "wb"),
                                      stderr=subprocess.STDOUT, env=env(), start_new_session=True)
            procs.append(server)
            port = int(wait_log(log, r"Listening at: http://127\.0\.0\.1:(\d+)", server))
            times, states = [], {}
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {api_token}"},
                              timeout=30, trust_env=False) as client:
                for _ in range(args.rounds):
                    start = time.monotonic()
                    nodes = client.get("/api/v1/nodes").json()["nodes"]
                    times.append(time.monotonic() - start)
                    states = {}
                    for node in nodes:
                        states[node["state"]] = states.get(node["state"], 0) + 1
            node_list = [(f"n{i}", f"http://127.0.0.1:{p}", {"Authorization": f"Bearer {TOKEN}"})
                         for i, (_, p) in enumerate(ports)]
            one_by_one = sequential(node_list, 2.0)
            median = statistics.median(times)
            print(f"fleet status of {len(ports)} nodes (3 real masters, 42 stand-ins, 3 hung, 2 closed), "
                  f"deadline 2.0 s, {args.rounds} rounds")
            print(f"  node states: {dict(sorted(states.items()))}")
            print(f"  arbiter fleet GET /api/v1/nodes: min {min(times):.3f} s, median {median:.3f} s, "
                  f"max {max(times):.3f} s")
            print(f"  one node after another (Cesi's way), same nodes and deadline: {one_by_one:.3f} s")
            print(f"  ratio sequential / fleet median: {one_by_one / median:.1f}x; "
                  f"within 2.5 s: {'yes' if max(times) <= 2.5 else 'NO'}")
            for hole in holes:
                hole.close()
        finally:
            for proc in procs:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            for proc in procs:
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()


if __name__ == "__main__":
    main()
