"""Arbiter against its peers, side by side in one run: hello-world throughput and worker replacement.

    python3 benchmarks/http_bench.py                 # 3 rounds x 5 s per server
    python3 benchmarks/http_bench.py --quick         # smoke test: 1 round x 2 s
    python3 benchmarks/http_bench.py --only wsgi-sync,asgi --json results.json

Every server runs 2 workers and the same app from benchmarks/apps/, access logs off. Load is
`wrk -t2 -c64 --latency` on 127.0.0.1. Servers of a scenario are measured in alternating rounds
(A, B, C, A, B, C, ...) and compared by their medians, since one server's runs vary by up to a
quarter on a small machine. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import (  # noqa: E402
    Server, ServerError, probe_pids, run_wrk, start_server, stop_all, wait_workers_serving,
)

APPS = Path(__file__).resolve().parent / "apps"
PY = sys.executable
WORKERS = 2
CAP_S = 10.0  # the longest a worker replacement may take before it counts as failed
# Kill workers that have served for a while (an OOM kill in production), not ones a master may
# still count as booting: Arbiter reads worker readiness once a loop turn, up to 1 s late.
SETTLE_S = 2.0


def _gunicorn_uvicorn_worker() -> str:
    """The Gunicorn worker class uvicorn's authors ship: the `uvicorn-worker` package, else the in-tree one."""
    try:
        import uvicorn_worker  # noqa: F401

        return "uvicorn_worker.UvicornWorker"
    except ImportError:
        return "uvicorn.workers.UvicornWorker"  # deprecated but still present in this uvicorn


GUNICORN_UVICORN = _gunicorn_uvicorn_worker()


@dataclass
class Contender:
    label: str
    cmd: list[str]
    port_from: str = "log"  # how the port bound to 127.0.0.1:0 is found; see _harness.start_server
    arbiter: bool = False


def arbiter(app: str, *opts: str) -> Contender:
    return Contender(f"arbiter {' '.join(opts)}", [PY, "-m", "arbiter", app, "-w", str(WORKERS), "-b", "127.0.0.1:0", *opts], arbiter=True)


def gunicorn(app: str, *opts: str) -> Contender:
    return Contender(f"gunicorn {' '.join(opts)}", [PY, "-m", "gunicorn", app, "-w", str(WORKERS), "-b", "127.0.0.1:0", *opts])


def uvicorn(app: str) -> Contender:
    opts = ["--workers", str(WORKERS), "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"]
    # Port 0, read back from the kernel: `--fd N` would cost uvicorn TCP_NODELAY (see README).
    return Contender(f"uvicorn {' '.join(opts[:6])}", [PY, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", "0", *opts],
                     port_from="listen")


def gunicorn_gevent(app: str) -> list[Contender]:
    """Gunicorn's gevent worker with its Python parser, and with its C parser (`gunicorn[fast]`,
    the gunicorn_h1c package) when that is installed: Gunicorn at its best."""
    peers = [gunicorn(app, "-k", "gevent", "--http-parser", "python")]
    try:
        import gunicorn_h1c  # noqa: F401

        peers.append(gunicorn(app, "-k", "gevent", "--http-parser", "fast"))
    except ImportError:
        pass
    return peers


# name -> (contenders, target ratio arbiter/each peer or None)
SCENARIOS: dict[str, tuple[list[Contender], float | None]] = {
    "wsgi-sync": ([arbiter("wsgi_hello:app", "-k", "sync"), gunicorn("wsgi_hello:app", "-k", "sync")], 2.0),
    "flask-sync": ([arbiter("flask_hello:app", "-k", "sync"), gunicorn("flask_hello:app", "-k", "sync")], 1.5),
    "wsgi-gthread": ([arbiter("wsgi_hello:app", "-k", "gthread", "--threads", "4"),
                      gunicorn("wsgi_hello:app", "-k", "gthread", "--threads", "4")], None),
    "asgi": ([arbiter("asgi_hello:app", "-k", "uvicorn"), gunicorn("asgi_hello:app", "-k", GUNICORN_UVICORN),
              uvicorn("asgi_hello:app")], 1.0),
    "wsgi-gevent": ([arbiter("wsgi_hello:app", "-k", "gevent"), *gunicorn_gevent("wsgi_hello:app")], 1.0),
    "flask-gevent": ([arbiter("flask_hello:app", "-k", "gevent"), *gunicorn_gevent("flask_hello:app")], 1.0),
    "io-gevent": ([arbiter("wsgi_io:app", "-k", "gevent"), *gunicorn_gevent("wsgi_io:app")], 1.0),
}
# wrk connections per scenario (default 64). 10 ms per request caps 64 connections at 6,400 req/s
# whatever the server; 256 leave the servers, not the wait, as the limit.
CONNECTIONS: dict[str, int] = {"io-gevent": 256}
REPLACEMENT: dict[str, list[Contender]] = {
    "replace-sync": [arbiter("wsgi_hello:app", "-k", "sync"), gunicorn("wsgi_hello:app", "-k", "sync")],
    "replace-uvicorn": [arbiter("asgi_hello:app", "-k", "uvicorn"), gunicorn("asgi_hello:app", "-k", GUNICORN_UVICORN)],
}


def launch(c: Contender) -> Server:
    # The checkout's own arbiter, not whichever one is installed.
    path = [str(APPS), str(APPS.parent.parent), os.environ.get("PYTHONPATH")]
    env = {"PYTHONPATH": os.pathsep.join(filter(None, path))}
    return start_server(c.label, c.cmd, env=env, cwd=str(APPS), port_from=c.port_from)


@dataclass
class Row:
    scenario: str
    server: str
    arbiter: bool
    rounds: list[float] = field(default_factory=list)
    non2xx: int = 0
    socket_errors: int = 0
    latency: list[dict[str, str]] = field(default_factory=list)
    failure: str | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.rounds) if self.rounds else None


def throughput(name: str, args: argparse.Namespace, rows: list[Row]) -> None:
    contenders, _ = SCENARIOS[name]
    live: list[tuple[Row, Server]] = []
    try:
        for c in contenders:
            row = Row(name, c.label, c.arbiter)
            rows.append(row)
            try:
                server = launch(c)
            except ServerError as exc:
                row.failure = str(exc).splitlines()[0]
                print(f"  ! {exc}", file=sys.stderr)
                continue
            if not wait_workers_serving(server, WORKERS):
                print(f"  ! {c.label}: not all {WORKERS} workers answered within 10 s", file=sys.stderr)
            live.append((row, server))
        for rnd in range(args.rounds):
            for row, server in live:
                if row.failure:
                    continue
                if server.proc.poll() is not None:
                    row.failure = f"exited with {server.proc.returncode} during the run"
                    print(f"  ! {row.server}: {row.failure}\n{server.log_tail()}", file=sys.stderr)
                    continue
                connections = CONNECTIONS.get(name, 64)
                run_wrk(server.url, args.warmup, connections=connections)
                result = run_wrk(server.url, args.duration, connections=connections)
                row.rounds.append(result.rps)
                row.non2xx += result.non2xx
                row.socket_errors += result.socket_errors
                row.latency.append(result.latency)
                print(f"  {name} round {rnd + 1}/{args.rounds}  {row.server:<52} {result.rps:>10,.0f} req/s"
                      f"  p99 {result.latency.get('99%', '?'):>8}  errors {result.errors}", file=sys.stderr)
    finally:
        for _, server in live:
            server.stop()


def replacement(c: Contender, repeats: int) -> dict:
    """SIGKILL one worker; ms until a new worker pid has served a 200. `repeats` times."""
    out: dict = {"server": c.label, "arbiter": c.arbiter, "runs_ms": [], "failures": [], "median_ms": None}
    try:
        server = launch(c)
    except ServerError as exc:
        out["failures"].append(str(exc).splitlines()[0])
        print(f"  ! {exc}", file=sys.stderr)
        return out
    try:
        for _ in range(repeats):
            if not wait_workers_serving(server, WORKERS, timeout=CAP_S) or len(server.worker_pids()) < WORKERS:
                out["failures"].append("workers not all serving before the kill")
                break
            time.sleep(SETTLE_S)
            workers = server.worker_pids()
            before, victim = set(workers), workers[0]  # the oldest
            start = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            new_pid = None
            while new_pid is None and time.monotonic() - start < CAP_S:
                fresh = probe_pids(server.port, connections=4, timeout=1.0) - before
                if fresh:
                    new_pid = fresh.pop()
                else:
                    time.sleep(0.001)
            elapsed_ms = (time.monotonic() - start) * 1000
            if new_pid is None:
                out["failures"].append(f"no new worker served within {CAP_S:.0f} s")
            elif new_pid not in server.worker_pids():
                out["failures"].append(f"pid {new_pid} answered but is not a worker of the master")
            else:
                out["runs_ms"].append(round(elapsed_ms, 1))
            print(f"  replace {c.label:<52} {elapsed_ms:8.1f} ms  (killed {victim}, new {new_pid})", file=sys.stderr)
    finally:
        server.stop()
    if out["runs_ms"]:
        out["median_ms"] = statistics.median(out["runs_ms"])
    return out


def ratio_note(row: Row, rows: list[Row], target: float | None) -> str:
    ours = next((r for r in rows if r.scenario == row.scenario and r.arbiter), None)
    if row.arbiter or ours is None or not ours.median or not row.median:
        return ""
    ratio = ours.median / row.median
    if target is None:
        return f"{ratio:.2f}x"
    return f"{ratio:.2f}x (target >= {target:.1f}x: {'met' if ratio >= target else 'NOT met'})"


def print_report(rows: list[Row], replaced: list[list[dict]], args: argparse.Namespace) -> None:
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nLoad average at the end (1/5/15 min): {load} on {os.cpu_count()} CPUs; other work on the machine skews all numbers.")
    if rows:
        print_throughput(rows, args)
    if replaced:
        print_replacement(replaced, args)


def print_throughput(rows: list[Row], args: argparse.Namespace) -> None:
    wider = ", ".join(f"{n} -c{c}" for n, c in CONNECTIONS.items())
    print(f"\nThroughput: {WORKERS} workers each, wrk -t2 -c64 ({wider}), {args.rounds} round(s) x {args.duration:g} s "
          f"(+{args.warmup:g} s warm-up), median of rounds")
    head = f"{'scenario':<13} {'server':<52} {'median req/s':>12}  {'rounds (req/s)':<26} {'non2xx/sockerr':>14}  arbiter/peer"
    print(head + "\n" + "-" * len(head))
    for row in rows:
        if row.failure:
            print(f"{row.scenario:<13} {row.server:<52} {'FAILED':>12}  {row.failure}")
            continue
        rounds = " ".join(f"{v:,.0f}" for v in row.rounds)
        median = f"{row.median:,.0f}" if row.median else "-"
        errors = f"{row.non2xx}/{row.socket_errors}"
        note = ratio_note(row, rows, SCENARIOS[row.scenario][1])
        print(f"{row.scenario:<13} {row.server:<52} {median:>12}  {rounds:<26} {errors:>14}  {note}")


def print_replacement(replaced: list[list[dict]], args: argparse.Namespace) -> None:
    print(f"\nWorker replacement after SIGKILL: ms until a new worker pid serves a 200 "
          f"({args.repeats} kills, cap {CAP_S:.0f} s), median")
    head = f"{'server':<52} {'median ms':>9}  {'runs (ms)':<36} failed  arbiter/peer time"
    print(head + "\n" + "-" * len(head))
    for group in replaced:
        ours = next((r for r in group if r["arbiter"]), None)
        for r in group:
            median = f"{r['median_ms']:.1f}" if r["median_ms"] is not None else "-"
            runs = " ".join(f"{v:.1f}" for v in r["runs_ms"])
            note = ""
            if not r["arbiter"] and ours and ours["median_ms"] and r["median_ms"]:
                note = f"{ours['median_ms'] / r['median_ms']:.2f}x (lower is faster)"
            print(f"{r['server']:<52} {median:>9}  {runs:<36} {len(r['failures']):>6}  {note}")
            for failure in sorted(set(r["failures"])):
                print(f"    failure: {failure}")


def versions() -> dict:
    found = {"python": platform.python_version(), "cpus": os.cpu_count()}
    for dist in ("arbiter", "gunicorn", "gunicorn_h1c", "uvicorn", "uvloop", "httptools", "flask", "gevent"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = None
    found["wrk"] = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0].strip()
    return found


def main(argv: list[str] | None = None) -> int:
    names = [*SCENARIOS, *REPLACEMENT]
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="measured runs per server, alternating (default 3)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per measured run (default 5)")
    p.add_argument("--warmup", type=float, default=1.0, help="seconds of load before each run (default 1)")
    p.add_argument("--repeats", type=int, default=5, help="worker kills per server in replacement tests (default 5)")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 round of 2 s, 2 kills")
    p.add_argument("--only", default=",".join(names), help=f"comma-separated subset of: {', '.join(names)}")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.repeats = 1, 2.0, 2
    chosen = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = set(chosen) - set(names)
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")

    # Bounded in time no matter what: every step has its own timeout, and this is the backstop.
    per_run = args.warmup + args.duration + 20
    budget = sum(len(SCENARIOS[n][0]) * (25 + args.rounds * per_run) for n in chosen if n in SCENARIOS)
    budget += sum(len(REPLACEMENT[n]) * (25 + args.repeats * (2 * CAP_S + SETTLE_S + 5)) for n in chosen if n in REPLACEMENT)

    def on_alarm(signum, frame):
        raise TimeoutError(f"the whole run exceeded its {budget:.0f} s budget")

    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)
    signal.alarm(int(budget))

    rows: list[Row] = []
    replaced: list[list[dict]] = []
    status = 0
    try:
        for name in chosen:
            if name in SCENARIOS:
                print(f"== {name}", file=sys.stderr)
                throughput(name, args, rows)
            else:
                print(f"== {name}", file=sys.stderr)
                replaced.append([replacement(c, args.repeats) for c in REPLACEMENT[name]])
    except (KeyboardInterrupt, TimeoutError) as exc:
        print(f"\ninterrupted ({str(exc) or 'Ctrl-C'}): partial results below", file=sys.stderr)
        status = 130
    finally:
        signal.alarm(0)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        stop_all()
    print_report(rows, replaced, args)
    if args.json:
        result = {
            "settings": {"workers": WORKERS, "rounds": args.rounds, "duration_s": args.duration,
                         "warmup_s": args.warmup, "repeats": args.repeats, "wrk": "-t2 -c64 --latency",
                         "connections": CONNECTIONS},
            "versions": versions(),
            "throughput": [{**row.__dict__, "median": row.median, "target": SCENARIOS[row.scenario][1]} for row in rows],
            "replacement": [r for group in replaced for r in group],
            "loadavg_end": os.getloadavg(),
            "interrupted": bool(status),
        }
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    if any(row.failure for row in rows) or any(r["failures"] for g in replaced for r in g):
        status = status or 1
    return status


if __name__ == "__main__":
    sys.exit(main())
