"""Control API latency: `GET /v1/status` while the master supervises 50 programs, one of them flooding.

    python3 benchmarks/control_bench.py              # 64 workers, 50 sleepers + flood, 500 requests (~3 min)
    python3 benchmarks/control_bench.py --quick      # 8 workers, 10 sleepers + flood, 100 requests
    python3 benchmarks/control_bench.py --no-supervisord --requests 1000

Arbiter runs `asgi_hello:app` with 64 workers, 50 `sleep 600` programs and `control_apps/flood.py`,
its control socket in a temp dir. Once all workers are READY and all programs RUNNING, for each
condition (idle; flood writing 64 KiB chunks flat out; flood writing 64-byte lines flat out) it
sends N requests one after the other over one keep-alive unix-socket connection, then N with a
fresh connection each, then N of Supervisor's XML-RPC `supervisor.getAllProcessInfo` (keep-alive),
timing each with perf_counter and checking each answer. Then, as context, supervisord on the same
programs (no web workers): `getAllProcessInfo` over its unix socket, keep-alive and fresh.
The master's CPU% is user+sys of the master process alone (psutil): over 1.5 s with no requests
after switching the condition ("bg"), and over each batch of requests ("req"). See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import signal
import socket
import sys
import tempfile
import time
import xmlrpc.client
from importlib import metadata
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _harness import LIVE_MASTERS, BenchError, Interrupted, MasterProcess, http_get  # noqa: E402

PY = sys.executable
FLOOD = HERE / "control_apps" / "flood.py"
CONDITIONS = (("idle", signal.SIGWINCH), ("flood-chunks", signal.SIGUSR1), ("flood-lines", signal.SIGUSR2))
TARGET_MS = 50.0
STATUS_REQ = b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\n\r\n"
_RPC_BODY = xmlrpc.client.dumps((), "supervisor.getAllProcessInfo").encode()
RPC_REQ = (b"POST /RPC2 HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/xml\r\n"
           b"Content-Length: %d\r\n\r\n" % len(_RPC_BODY)) + _RPC_BODY

ARBITER_TOML = """\
wsgi_app = "asgi_hello:app"
pythonpath = "{apps}"
workers = {workers}
bind = ["127.0.0.1:0"]
control_socket = "{tmp}/ctl.sock"
errorlog = "{tmp}/master.log"
childlogdir = "{tmp}"
[programs.sleepers]
command = "sleep 600"
numprocs = {sleepers}
process_name = "%(program_name)s_%(process_num)02d"
startsecs = 0
[programs.flood]
command = "{py} -u {flood}"
stdout_logfile = "{tmp}/flood.log"
stdout_logfile_maxbytes = "50MB"
stdout_logfile_backups = 2
startsecs = 0
"""

SUPERVISORD_CONF = """\
[unix_http_server]
file={tmp}/supervisor.sock
chmod=0700
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://{tmp}/supervisor.sock
[supervisord]
nodaemon=true
logfile={tmp}/master.log
pidfile={tmp}/master.pid
childlogdir={tmp}
[program:sleepers]
command=sleep 600
numprocs={sleepers}
process_name=%(program_name)s_%(process_num)02d
startsecs=0
[program:flood]
command={py} -u {flood}
stdout_logfile={tmp}/flood.log
stdout_logfile_maxbytes=50MB
stdout_logfile_backups=2
startsecs=0
"""


class Master(MasterProcess):
    stop_grace = 20.0  # 64 workers drain on SIGTERM


class UnixHttp:
    """A minimal HTTP/1.1 client on a unix socket: keep-alive unless `fresh` or the server closes."""

    def __init__(self, path: Path, timeout: float = 5.0) -> None:
        self.path, self.timeout, self.sock, self.connects = str(path), timeout, None, 0

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def request(self, raw: bytes, fresh: bool = False) -> tuple[int, bytes]:
        if fresh:
            self.close()
        if self.sock is None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.settimeout(self.timeout)
            self.sock.connect(self.path)
            self.connects += 1
        try:
            self.sock.sendall(raw)
            status, close, body = self._response()
        except BaseException:
            self.close()
            raise
        if close or fresh:
            self.close()
        return status, body

    def _response(self) -> tuple[int, bool, bytes]:
        buf = bytearray()
        while (end := buf.find(b"\r\n\r\n")) < 0:
            buf += self._recv()
        lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        rest = buf[end + 4:]
        if "content-length" not in headers:  # both servers send it on every answer here
            raise ValueError("no Content-Length")
        size = int(headers["content-length"])
        while len(rest) < size:
            rest += self._recv()
        return status, headers.get("connection", "").lower() == "close", bytes(rest[:size])

    def _recv(self) -> bytes:
        data = self.sock.recv(1 << 18)
        if not data:
            raise ConnectionError("server closed the connection mid-response")
        return data


def pct(sorted_ms: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    return sorted_ms[max(0, math.ceil(p / 100 * len(sorted_ms)) - 1)] if sorted_ms else float("nan")


def cpu_s(proc: psutil.Process) -> float:
    return sum(proc.cpu_times()[:2])  # user + system


def written(proc: psutil.Process) -> int:
    with contextlib.suppress(psutil.Error):
        return proc.io_counters().write_chars
    return 0


def measure(sock: Path, raw: bytes, check, n: int, fresh: bool, master: Master, flood: psutil.Process,
            cap: float) -> dict:
    """n requests back to back (stopping early after `cap` seconds); latencies of the good ones."""
    client = UnixHttp(sock)
    lat, errors, kinds = [], 0, {}
    cpu0, w0, t0 = cpu_s(master.ps), written(flood), time.monotonic()
    try:
        for _ in range(n):
            if time.monotonic() - t0 > cap:
                break
            start = time.perf_counter()
            try:
                status, body = client.request(raw, fresh)
                elapsed = time.perf_counter() - start
                ok = status == 200 and check(body)
                why = f"HTTP {status}" if status != 200 else "not all READY/RUNNING"
            except (OSError, ValueError, KeyError, xmlrpc.client.Error) as exc:
                ok, why = False, type(exc).__name__
            if ok:
                lat.append(elapsed * 1000)
            else:
                errors += 1
                kinds[why] = kinds.get(why, 0) + 1
    finally:
        client.close()
    wall = time.monotonic() - t0
    master.check_alive()
    lat.sort()
    return {"n": len(lat), "errors": errors, "error_kinds": kinds, "connects": client.connects,
            "p50": pct(lat, 50), "p90": pct(lat, 90), "p99": pct(lat, 99), "max": lat[-1] if lat else float("nan"),
            "cpu_pct": (cpu_s(master.ps) - cpu0) / wall * 100, "flood_mib_s": (written(flood) - w0) / wall / (1 << 20),
            "wall_s": wall}


def background(master: Master, flood: psutil.Process, seconds: float = 1.5) -> tuple[float, float]:
    """The master's CPU% and the flood's MiB/s with no requests."""
    cpu0, w0, t0 = cpu_s(master.ps), written(flood), time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    return (cpu_s(master.ps) - cpu0) / wall * 100, (written(flood) - w0) / wall / (1 << 20)


def wait_ready(sock: Path, raw: bytes, ready, master: Master, timeout: float):
    """Poll until `ready(body)` returns something true; that value."""
    deadline, client, last = time.monotonic() + timeout, UnixHttp(sock, timeout=5), "no answer"
    try:
        while time.monotonic() < deadline:
            master.check_alive()
            with contextlib.suppress(OSError, ValueError, xmlrpc.client.Error):
                status, body = client.request(raw, fresh=True)
                if status == 200 and (value := ready(body)):
                    return value
                last = f"HTTP {status}"
            time.sleep(0.5)
    finally:
        client.close()
    raise BenchError(f"not ready after {timeout:.0f} s ({last})")


def run_conditions(peer: str, master: Master, sock: Path, flood_pid: int, variants, args, results: list) -> None:
    flood = psutil.Process(flood_pid)
    for cond, signum in CONDITIONS:
        os.kill(flood_pid, signum)
        bg_cpu, bg_rate = background(master, flood)
        if cond != "idle" and bg_rate < 0.1:
            raise BenchError(f"{cond}: the flood program writes {bg_rate:.2f} MiB/s")
        for label, raw, check, fresh in variants:
            r = measure(sock, raw, check, args.requests, fresh, master, flood, args.cap)
            r.update(peer=peer, condition=cond, request=label, bg_cpu_pct=bg_cpu, bg_flood_mib_s=bg_rate)
            results.append(r)
            print(f"  {peer:<11} {cond:<12} {label:<25} p50 {r['p50']:6.2f} p99 {r['p99']:7.2f} ms, "
                  f"{r['errors']} errors, master {r['cpu_pct']:3.0f}% CPU, flood {r['flood_mib_s']:.0f} MiB/s", flush=True)
    os.kill(flood_pid, signal.SIGWINCH)


def run_peer(peer: str, tmp: Path, args, results: list) -> None:
    """Start the master, wait until everything runs, measure every condition, stop it."""
    nprog, fields = args.sleepers + 1, dict(tmp=tmp, sleepers=args.sleepers, py=PY, flood=FLOOD)

    def rpc_check(body: bytes):  # the process infos when all are RUNNING (a Fault raises)
        (infos,), _ = xmlrpc.client.loads(body)
        return infos if sum(i["statename"] == "RUNNING" for i in infos) == nprog == len(infos) else None

    def status_check(body: bytes):  # the parsed status when every worker is READY and every program RUNNING
        doc = json.loads(body)
        ready = sum(w["state"] == "READY" for w in doc["workers"]) == args.workers == len(doc["workers"])
        running = sum(p["state"] == "RUNNING" for p in doc["programs"]) == nprog == len(doc["programs"])
        return doc if ready and running else None

    if peer == "arbiter":
        (tmp / "arbiter.toml").write_text(ARBITER_TOML.format(apps=HERE / "apps", workers=args.workers, **fields))
        cmd, sock = [PY, "-m", "arbiter", "-c", str(tmp / "arbiter.toml")], tmp / "ctl.sock"
        variants = [("GET /v1/status keep-alive", STATUS_REQ, status_check, False),
                    ("GET /v1/status fresh", STATUS_REQ, status_check, True),
                    ("XML-RPC keep-alive", RPC_REQ, rpc_check, False)]
    else:
        (tmp / "supervisord.conf").write_text(SUPERVISORD_CONF.format(**fields))
        cmd = [PY, "-m", "supervisor.supervisord", "-n", "-c", str(tmp / "supervisord.conf")]
        sock = tmp / "supervisor.sock"
        variants = [("XML-RPC keep-alive", RPC_REQ, rpc_check, False), ("XML-RPC fresh", RPC_REQ, rpc_check, True)]
    t0 = time.monotonic()
    master = Master(cmd, tmp)
    try:
        answer = wait_ready(sock, variants[0][1], variants[0][2], master, args.boot_timeout)
        master.remember_children()
        rows, extra = answer, ""
        if peer == "arbiter":
            rows, port = answer["programs"], int(answer["master"]["listeners"][0].rsplit(":", 1)[1])
            if http_get(port)[0] != 200:
                raise BenchError("the web app did not answer GET / with 200")
            extra = f", {args.workers} workers READY, GET / on :{port} -> 200"
        flood_pid = next(int(p["pid"]) for p in rows if p["name"] == "flood")
        print(f"  {peer} ready in {time.monotonic() - t0:.1f} s: master pid {master.proc.pid}, "
              f"{nprog} programs RUNNING{extra}", flush=True)
        run_conditions(peer, master, sock, flood_pid, variants, args, results)
    finally:
        master.stop()


def print_table(results: list) -> list[str]:
    head = (f"{'peer':<11} {'condition':<12} {'request':<25} {'n':>4} {'err':>3} {'conns':>5} {'p50':>6} {'p90':>6} "
            f"{'p99':>7} {'max':>7}  {'CPU% bg/req':>11} {'flood MiB/s':>11}  target")
    print(head + "\n" + "-" * len(head))
    missed, judged = [], 0
    for r in results:
        verdict = ""
        if r["peer"] == "arbiter" and r["condition"] != "idle" and r["request"].startswith("GET"):
            ok, judged = r["p99"] < TARGET_MS and r["errors"] == 0, judged + 1
            verdict = f"p99 < {TARGET_MS:.0f} ms: {'ok' if ok else 'MISSED'}"
            if not ok:
                missed.append(f"{r['condition']} {r['request']}: p99 {r['p99']:.1f} ms, {r['errors']} errors")
        print(f"{r['peer']:<11} {r['condition']:<12} {r['request']:<25} {r['n']:>4} {r['errors']:>3} {r['connects']:>5} "
              f"{r['p50']:>6.2f} {r['p90']:>6.2f} {r['p99']:>7.2f} {r['max']:>7.2f}  "
              f"{r['bg_cpu_pct']:>4.0f} /{r['cpu_pct']:>4.0f}  {r['bg_flood_mib_s']:>5.0f}/{r['flood_mib_s']:<5.0f}  {verdict}")
        if r["error_kinds"]:
            print(f"{'':<50}errors: {r['error_kinds']}")
    return missed + ([] if judged == 4 else [f"target judged on {judged} of 4 batches only"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 workers, 10 sleepers, 100 requests")
    parser.add_argument("--workers", type=int, help="web workers (default 64; 8 with --quick)")
    parser.add_argument("--sleepers", type=int, help="`sleep 600` programs besides the flood (default 50; 10 with --quick)")
    parser.add_argument("--requests", type=int, help="requests per batch (default 500; 100 with --quick)")
    parser.add_argument("--cap", type=float, default=60.0, help="most seconds per batch (default 60)")
    parser.add_argument("--boot-timeout", type=float, default=300.0, help="most seconds until all READY (default 300)")
    parser.add_argument("--no-supervisord", action="store_true", help="skip the supervisord comparison")
    parser.add_argument("--json", metavar="FILE", help="also write every batch's numbers here")
    args = parser.parse_args()
    args.workers = args.workers or (8 if args.quick else 64)
    args.sleepers = args.sleepers or (10 if args.quick else 50)
    args.requests = args.requests or (100 if args.quick else 500)

    def interrupt(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGALRM, interrupt)
    peers = 1 if args.no_supervisord else 2
    signal.alarm(int(60 + args.boot_timeout + peers * (60 + len(CONDITIONS) * 3 * (args.cap + 5))))

    print(f"arbiter {metadata.version('arbiter')}, supervisor {metadata.version('supervisor')}, Python "
          f"{platform.python_version()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; {args.workers} workers, "
          f"{args.sleepers} sleepers + flood, {args.requests} requests per batch", flush=True)
    results: list[dict] = []
    status = 0
    try:
        for peer in ("arbiter", "supervisord")[:peers]:
            with tempfile.TemporaryDirectory(prefix=f"control-bench-{peer}-") as tmpdir:
                try:
                    run_peer(peer, Path(tmpdir), args, results)
                except BenchError as exc:
                    print(f"  {peer} FAILED: {exc}")
                    with contextlib.suppress(OSError):
                        print("  last master log lines:\n    " + "\n    ".join(
                            (Path(tmpdir) / "master.log").read_text(errors="replace").splitlines()[-10:]))
                    status = 1
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"\ninterrupted ({str(exc) or 'Ctrl-C'}); results so far:")
        status = 130
    finally:
        signal.alarm(0)
        for master in list(LIVE_MASTERS):
            master.stop()
    print(f"\nlatency in ms (successful requests), load now {os.getloadavg()[0]:.2f}; CPU% is the master "
          f"process alone; bg = 1.5 s with no requests, req = during the batch\n")
    missed = print_table(results)
    print("\ntargets missed:\n  " + "\n  ".join(missed) if missed else "\nevery target met")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    return status


if __name__ == "__main__":
    sys.exit(main())
