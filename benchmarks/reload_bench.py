"""Failed requests during rolling reloads (SIGHUP) and worker recycling (--max-requests), side by side.

    python3 benchmarks/reload_bench.py                    # 1 round: 5 HUPs per server, then recycling
    python3 benchmarks/reload_bench.py --rounds 3 --only arbiter-uvicorn,gunicorn-uvicorn
    python3 benchmarks/reload_bench.py --skip-recycle --hups 3

Every server runs the same app from reload_apps/ with the same worker count (4) under the same
load from an in-process client (threads, raw sockets), so that every failed request is counted and
classified: keep-alive clients, fresh-connection clients and slow (/sleep?s=0.3) clients at once.
A HUP is sent only when the previous reload is finished (Arbiter: its `Reload done` log line;
the peers: every worker pid has changed), plus a fixed gap. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import os
import re
import signal
import socket
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import ServerError, start_server, stop_all, wait_workers_serving  # noqa: E402

APPS = Path(__file__).resolve().parent / "reload_apps"
ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
RELOAD_DONE = re.compile(r"Reload done: generation \d+")
PID_IN_BODY = re.compile(rb"pid=(\d+)")

KIND_LABELS = {
    "reset": "connection reset / broken pipe",
    "closed_no_response": "remote closed without response",
    "closed_mid_response": "remote closed mid-response",
    "non2xx": "non-2xx status",
    "timeout": "timeout (5 s)",
    "connect_refused": "connect refused",
    "connect_error": "connect error (other)",
    "bad_response": "unparsable response",
    "other": "other socket error",
}


def gunicorn_uvicorn_worker() -> str:
    try:
        import uvicorn_worker  # noqa: F401
        return "uvicorn_worker.UvicornWorker"
    except ImportError:
        return "uvicorn.workers.UvicornWorker"  # deprecated, still shipped in this uvicorn


# ---------------------------------------------------------------------------- load client

class Failure(Exception):
    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def read_response(sock: socket.socket) -> tuple[int, bool, bytes]:
    """Read one HTTP/1.x response: (status, keep_alive, body). Raises Failure on a short read."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise Failure("closed_mid_response" if data else "closed_no_response")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise Failure("bad_response")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip().lower()
    connection = headers.get(b"connection", b"")
    keep = b"close" not in connection and (parts[0] == b"HTTP/1.1" or b"keep-alive" in connection)
    if b"content-length" in headers:
        length = int(headers[b"content-length"])
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                raise Failure("closed_mid_response")
            body += chunk
    elif headers.get(b"transfer-encoding") == b"chunked":
        while not body.endswith(b"0\r\n\r\n"):
            chunk = sock.recv(65536)
            if not chunk:
                raise Failure("closed_mid_response")
            body += chunk
    else:  # body until EOF
        while chunk := sock.recv(65536):
            body += chunk
        keep = False
    return int(parts[1]), keep, body


@dataclass
class Tally:
    ok: int = 0
    failures: collections.Counter = field(default_factory=collections.Counter)  # (kind, client, reused)
    pids: set = field(default_factory=set)
    first_failures: list = field(default_factory=list)  # (time, kind, client, reused)

    def merge(self, other: Tally) -> None:
        self.ok += other.ok
        self.failures.update(other.failures)
        self.pids |= other.pids
        self.first_failures = sorted(self.first_failures + other.first_failures)[:20]

    @property
    def failed(self) -> int:
        return sum(self.failures.values())


class Load:
    """Closed-loop client threads: `keepalive` reuse connections for GET /, `fresh` open one
    connection per GET / (Connection: close), `slow` reuse connections for GET /sleep?s=0.3."""

    def __init__(self, port: int, keepalive: int, fresh: int, slow: int, timeout: float = 5.0) -> None:
        self.port, self.timeout = port, timeout
        self.stop_event = threading.Event()
        self.tallies: list[Tally] = []
        self.threads = [threading.Thread(target=self._run, args=(kind,), daemon=True)
                        for kind, n in (("keepalive", keepalive), ("fresh", fresh), ("slow", slow))
                        for _ in range(n)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def stop(self) -> Tally:
        self.stop_event.set()
        deadline = time.monotonic() + self.timeout + 2
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        total = Tally()
        for tally in list(self.tallies):
            total.merge(tally)
        return total

    def _run(self, client: str) -> None:
        tally = Tally()
        self.tallies.append(tally)
        path = b"/sleep?s=0.3" if client == "slow" else b"/"
        close = b"Connection: close\r\n" if client == "fresh" else b""
        request = b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + close + b"\r\n"
        sock, reused = None, False
        while not self.stop_event.is_set():
            stage = "connect"
            try:
                if sock is None:
                    sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    reused = False
                stage = "request"
                sock.sendall(request)
                status, keep, body = read_response(sock)
                if 200 <= status < 300:
                    tally.ok += 1
                    if match := PID_IN_BODY.search(body):
                        tally.pids.add(int(match.group(1)))
                else:
                    self._fail(tally, "non2xx", client, reused)
                if keep and client != "fresh":
                    reused = True
                else:
                    sock.close()
                    sock = None
                continue
            except Failure as exc:
                kind = exc.kind
            except socket.timeout:
                kind = "timeout"
            except ConnectionRefusedError:
                kind = "connect_refused"
            except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
                kind = "reset" if stage == "request" else "connect_error"
            except OSError as exc:
                kind = "connect_error" if stage == "connect" else "other"
                if exc.errno == errno.EADDRNOTAVAIL:
                    kind = "connect_error"  # client ran out of local ports: not the server's fault
            self._fail(tally, kind, client, reused)
            if sock is not None:
                sock.close()
                sock = None
        if sock is not None:
            sock.close()

    @staticmethod
    def _fail(tally: Tally, kind: str, client: str, reused: bool) -> None:
        tally.failures[(kind, client, reused)] += 1
        if len(tally.first_failures) < 20:
            tally.first_failures.append((time.monotonic(), kind, client, reused))


# ---------------------------------------------------------------------------- servers

@dataclass
class Spec:
    name: str
    family: str  # "asgi" or "wsgi"
    kind: str  # "arbiter", "gunicorn", "uvicorn"
    args: list[str]


def specs(workers: int) -> dict[str, Spec]:
    w = str(workers)
    arbiter = [PY, "-m", "arbiter", "-w", w, "-b", "127.0.0.1:0"]
    gunicorn = [PY, "-m", "gunicorn", "-w", w, "-b", "127.0.0.1:0"]
    return {s.name: s for s in [
        Spec("arbiter-uvicorn", "asgi", "arbiter", arbiter + ["-k", "uvicorn", "asgi_app:app"]),
        Spec("gunicorn-uvicorn", "asgi", "gunicorn", gunicorn + ["-k", gunicorn_uvicorn_worker(), "asgi_app:app"]),
        Spec("gunicorn-asgi", "asgi", "gunicorn", gunicorn + ["-k", "asgi", "asgi_app:app"]),
        Spec("uvicorn-workers", "asgi", "uvicorn",
             [PY, "-m", "uvicorn", "asgi_app:app", "--workers", w, "--no-access-log", "--log-level", "info"]),
        Spec("arbiter-sync", "wsgi", "arbiter", arbiter + ["-k", "sync", "wsgi_app:app"]),
        Spec("gunicorn-sync", "wsgi", "gunicorn", gunicorn + ["-k", "sync", "wsgi_app:app"]),
    ]}


RECYCLE = ["arbiter-uvicorn", "gunicorn-uvicorn", "gunicorn-asgi", "arbiter-sync", "gunicorn-sync"]


def launch(spec: Spec, extra: list[str]):
    env = {"PYTHONPATH": os.pathsep.join([str(APPS), str(ROOT)]), "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    if spec.kind != "uvicorn":
        return start_server(spec.name, spec.args + extra, env=env, cwd=str(APPS), timeout=30)
    # uvicorn --workers cannot bind port 0 and report it: bind here and hand it over with --fd.
    # uvicorn wraps the fd as AF_UNIX and never sets TCP_NODELAY itself; accepted sockets inherit
    # it from the listener on Linux, so set it here (otherwise Nagle + delayed ACK: 40 ms stalls).
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(2048)
        port, fd = listener.getsockname()[1], listener.fileno()
        return start_server(spec.name, spec.args + extra + ["--fd", str(fd)], env=env, cwd=str(APPS),
                            port=port, pass_fds=(fd,), timeout=30)
    finally:
        listener.close()  # the server holds its own copy


def worker_pids(pid: int) -> set[int]:
    """Live direct children of the master, minus multiprocessing's resource tracker."""
    pids = set()
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(pid).children():
            with contextlib.suppress(psutil.Error):
                if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(child.cmdline()):
                    pids.add(child.pid)
    return pids


def wait_reload(server, spec: Spec, done_before: int, old: set[int], workers: int, cap: float) -> float | None:
    """Seconds until the reload finished (None past `cap`)."""
    start = time.monotonic()
    while time.monotonic() - start < cap:
        if spec.kind == "arbiter":
            if len(RELOAD_DONE.findall(server.log_text())) > done_before:
                return time.monotonic() - start
        else:
            pids = worker_pids(server.pid)
            if len(pids) >= workers and not pids & old:
                return time.monotonic() - start
        if server.proc.poll() is not None:
            raise ServerError(f"{spec.name} exited during a reload:\n{server.log_tail()}")
        time.sleep(0.05)
    return None


@dataclass
class Result:
    tally: Tally = field(default_factory=Tally)
    reloads: list = field(default_factory=list)  # seconds per reload, None = not done within the cap
    runs: list = field(default_factory=list)  # failed per run
    seconds: float = 0.0


def run_one(spec: Spec, args, extra: list[str], hups: int, duration: float) -> tuple[Tally, list, float]:
    server = launch(spec, extra)
    try:
        if not wait_workers_serving(server, args.workers, timeout=20):
            print(f"  ! {spec.name}: not all {args.workers} workers answered within 20 s", flush=True)
        load = Load(server.port, args.keepalive, args.fresh, args.slow)
        started = time.monotonic()
        load.start()
        reloads = []
        try:
            if hups:
                time.sleep(args.warmup)
                for _ in range(hups):
                    done_before = len(RELOAD_DONE.findall(server.log_text()))
                    old = worker_pids(server.pid)
                    os.kill(server.pid, signal.SIGHUP)
                    reloads.append(wait_reload(server, spec, done_before, old, args.workers, args.cap))
                    time.sleep(args.gap)
            else:
                time.sleep(duration)
        finally:
            tally = load.stop()
        elapsed = time.monotonic() - started
        if server.proc.poll() is not None:
            raise ServerError(f"{spec.name} exited:\n{server.log_tail()}")
        return tally, reloads, elapsed
    finally:
        server.stop()


def fmt_breakdown(tally: Tally) -> list[str]:
    by_kind = collections.defaultdict(collections.Counter)
    for (kind, client, reused), n in tally.failures.items():
        by_kind[kind][f"{client}{' reused' if reused and client != 'fresh' else ''}"] += n
    lines = []
    for kind, clients in sorted(by_kind.items(), key=lambda kv: -sum(kv[1].values())):
        detail = ", ".join(f"{c} {n}" for c, n in clients.most_common())
        lines.append(f"      {KIND_LABELS.get(kind, kind)}: {sum(clients.values())}  ({detail})")
    return lines


def report(title: str, results: dict[str, Result], hups: int) -> None:
    print(f"\n== {title}")
    head = f"{'server':<18} {'ok':>9} {'req/s':>7} {'failed':>7} {'per reload':>10} {'reload s (median)':>18}  per run"
    print(head)
    for name, res in results.items():
        t = res.tally
        n_reloads = len(res.reloads)
        per = f"{t.failed / n_reloads:.1f}" if n_reloads else "-"
        done = [r for r in res.reloads if r is not None]
        med = f"{statistics.median(done):.2f}" if done else "-"
        if n_reloads and len(done) < n_reloads:
            med += f" ({n_reloads - len(done)} capped)"
        rps = t.ok / res.seconds if res.seconds else 0
        print(f"{name:<18} {t.ok:>9} {rps:>7.0f} {t.failed:>7} {per:>10} {med:>18}  {res.runs}"
              + ("" if hups else f"  ({len(t.pids)} worker pids answered, ~{t.ok // max(1, len(t.pids))}"
                                 " requests per worker lifetime)"))
        for line in fmt_breakdown(t):
            print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--hups", type=int, default=5)
    parser.add_argument("--only", default="", help="comma-separated server names (default: all)")
    parser.add_argument("--keepalive", type=int, default=8, help="keep-alive client threads")
    parser.add_argument("--fresh", type=int, default=4, help="fresh-connection client threads")
    parser.add_argument("--slow", type=int, default=2, help="slow-request (/sleep?s=0.3) client threads")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before the first HUP")
    parser.add_argument("--gap", type=float, default=1.0, help="seconds after a finished reload before the next")
    parser.add_argument("--cap", type=float, default=30.0, help="longest wait for one reload to finish")
    parser.add_argument("--recycle-seconds", type=float, default=15.0)
    parser.add_argument("--skip-recycle", action="store_true")
    parser.add_argument("--max-seconds", type=int, default=1500, help="hard bound on the whole run")
    args = parser.parse_args()

    all_specs = specs(args.workers)
    only = [n for n in args.only.split(",") if n]
    unknown = [n for n in only if n not in all_specs]
    if unknown:
        parser.error(f"unknown server(s) {unknown}; choose from {list(all_specs)}")
    names = only or list(all_specs)

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGALRM, on_signal)
    signal.alarm(args.max_seconds)

    print(f"reload_bench: {args.workers} workers each; load = {args.keepalive} keep-alive + {args.fresh} "
          f"fresh-connection + {args.slow} slow (/sleep?s=0.3) client threads; {args.hups} HUPs per run, "
          f"{args.gap:.1f} s after each finished reload; {args.rounds} round(s); "
          f"Gunicorn uvicorn worker: {gunicorn_uvicorn_worker()}; loadavg {os.getloadavg()[0]:.2f}", flush=True)
    status = 0
    try:
        reload_results = {n: Result() for n in names}
        for rnd in range(args.rounds):
            for name in names:
                print(f"  round {rnd + 1}: {name} (HUP x{args.hups}) ...", flush=True)
                try:
                    tally, reloads, secs = run_one(all_specs[name], args, [], args.hups, 0)
                except ServerError as exc:
                    print(f"  ! {exc}", flush=True)
                    status = 1
                    continue
                res = reload_results[name]
                res.tally.merge(tally)
                res.reloads += reloads
                res.runs.append(tally.failed)
                res.seconds += secs
        report("rolling reload: SIGHUP under load", reload_results, args.hups)

        if not args.skip_recycle:
            extra = ["--max-requests", "200", "--max-requests-jitter", "50"]
            recycle_results = {n: Result() for n in names if n in RECYCLE}
            for rnd in range(args.rounds):
                for name in recycle_results:
                    print(f"  round {rnd + 1}: {name} recycle ({args.recycle_seconds:.0f} s) ...", flush=True)
                    try:
                        tally, _, secs = run_one(all_specs[name], args, extra, 0, args.recycle_seconds)
                    except ServerError as exc:
                        print(f"  ! {exc}", flush=True)
                        status = 1
                        continue
                    res = recycle_results[name]
                    res.tally.merge(tally)
                    res.runs.append(tally.failed)
                    res.seconds += secs
            report("recycling: --max-requests 200 --max-requests-jitter 50, no HUP", recycle_results, 0)
        print(f"\nloadavg at end {os.getloadavg()[0]:.2f}")
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc})", file=sys.stderr)
        status = 130
    finally:
        signal.alarm(0)
        stop_all()
    return status


if __name__ == "__main__":
    sys.exit(main())
