"""Boot time: from starting a server to all its workers serving, Arbiter against Gunicorn and uvicorn.

    python3 benchmarks/boot_bench.py                   # 5 rounds x 5 servers, ~1 minute
    python3 benchmarks/boot_bench.py --rounds 9 --workers 4 --app fastapi_hello:app

Every server runs apps/fastapi_hello.py (FastAPI, `GET /` answers its pid) with 4 workers on one
listening socket bound here and passed by descriptor. A round starts each server in turn (the
order rotates between rounds) and times from `Popen` until 4 distinct worker pids have answered
`GET /` (probes of 8 fresh connections at once, back to back). At that moment it also reads the CPU
seconds the master and each worker have used: on a shared machine these move much less with other
load than the wall-clock figure does, and on 2 cores the wall clock is about the master's CPU before
its first fork plus the workers' CPU shared out over the cores. Servers:

  arbiter --preload     python3 -m arbiter APP -w 4 -b fd://N --preload
  gunicorn --preload    python3 -m gunicorn APP -w 4 -k uvicorn_worker.UvicornWorker -b fd://N --preload
  arbiter               the same without --preload
  gunicorn              the same without --preload
  uvicorn --workers     python3 -m uvicorn APP --workers 4 --fd N

Targets (issue 15): arbiter --preload <= 0.6x gunicorn --preload; arbiter <= 1.0x gunicorn.
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import use_bytecode_cache, stop_all  # noqa: E402
from _peers import BENCH, ROOT, contenders, cpu_seconds, launch, listening_socket, tree, wait_pids_serving  # noqa: E402

TARGETS = {("arbiter --preload", "gunicorn --preload"): 0.6, ("arbiter", "gunicorn"): 1.0}
CONTEXT = [("arbiter --preload", "uvicorn --workers"), ("arbiter", "uvicorn --workers")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--app", default="fastapi_hello:app", help="module:attribute in benchmarks/apps")
    parser.add_argument("--only", default="", help="comma-separated server names (default: all)")
    parser.add_argument("--cap", type=float, default=30.0, help="longest wait for one server")
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="leave PYTHONDONTWRITEBYTECODE as it is (a source checkout then recompiles Arbiter at every start)")
    args = parser.parse_args()

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGALRM, on_signal)
    signal.alarm(int(60 + args.rounds * 5 * (args.cap + 10)))

    bytecode = "" if args.no_bytecode_cache else use_bytecode_cache()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH / "apps"), str(ROOT)]),
           "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    sock = listening_socket()
    names = list(contenders(args.app, args.workers, sock.fileno()))
    if args.only:
        names = [n for n in names if n in args.only.split(",")]
    print(f"boot_bench: {args.app}, {args.workers} workers, {args.rounds} rounds, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.2f}; {bytecode or 'PYTHONDONTWRITEBYTECODE left as is'}", flush=True)
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[tuple[float, list[float]]]] = {n: [] for n in names}  # (master, [workers])
    status = 0
    try:
        for rnd in range(args.rounds):
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            for name in order:
                cmd = contenders(args.app, args.workers, sock.fileno())[name]
                server = launch(name, cmd, sock, env, str(BENCH / "apps"))
                try:
                    took, pids = wait_pids_serving(server, args.workers, args.cap)
                    used = cpu_seconds(tree(server.pid))
                finally:
                    server.stop()
                if took is None:
                    print(f"  round {rnd + 1} {name}: only {len(pids)} pids answered within {args.cap:.0f} s\n"
                          f"{server.log_tail() if not server.log_file.closed else ''}", flush=True)
                    status = 1
                    continue
                times[name].append(took)
                master_cpu = used.pop(server.pid, 0.0)
                cpu[name].append((master_cpu, sorted(used.values())))
                print(f"  round {rnd + 1} {name:<20} {took * 1000:7.0f} ms; CPU ms master {master_cpu * 1000:.0f}, "
                      f"others {' '.join(f'{c * 1000:.0f}' for c in sorted(used.values()))}", flush=True)
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc})", file=sys.stderr)
        status = 130
    finally:
        signal.alarm(0)
        stop_all()
        sock.close()

    print(f"\nstart -> {args.workers} workers serving (ms), load now {os.getloadavg()[0]:.2f}")
    print(f"{'server':<20} {'median':>7} {'min':>7} {'max':>7}  rounds")
    med = {}
    for name, runs in times.items():
        if runs:
            med[name] = statistics.median(runs)
            print(f"{name:<20} {med[name] * 1000:7.0f} {min(runs) * 1000:7.0f} {max(runs) * 1000:7.0f}  "
                  + " ".join(f"{r * 1000:.0f}" for r in runs))
    print("\nCPU ms used until then (median of rounds): the master's, and per worker (mean; uvicorn's own "
          "supervisor process counts as one of them)")
    for name, rows in cpu.items():
        if rows:
            per_worker = [c for _, workers in rows for c in workers]
            total = statistics.median(m + sum(w) for m, w in rows)
            print(f"{name:<20} master {statistics.median(m for m, _ in rows) * 1000:5.0f}  worker "
                  f"{statistics.mean(per_worker) * 1000:5.0f}  all {total * 1000:5.0f}")
    print()
    best = {name: min(runs) for name, runs in times.items() if runs}
    for (a, b), limit in TARGETS.items():
        if a in med and b in med:
            ratio = med[a] / med[b]
            print(f"{a} / {b}: {ratio:.2f}x of medians (target <= {limit}x: {'met' if ratio <= limit else 'MISSED'}); "
                  f"{best[a] / best[b]:.2f}x of the fastest rounds")
    for a, b in CONTEXT:
        if a in med and b in med:
            print(f"{a} / {b}: {med[a] / med[b]:.2f}x of medians; {best[a] / best[b]:.2f}x of the fastest rounds")
    return status


if __name__ == "__main__":
    sys.exit(main())
