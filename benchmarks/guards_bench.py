"""The cost of the guards: requests/s with every guard on against every guard off, in one run.

    python3 benchmarks/guards_bench.py                   # 5 rounds x 5 s per class, ~4 minutes
    python3 benchmarks/guards_bench.py --quick           # 1 round x 2 s
    python3 benchmarks/guards_bench.py --only sync --rounds 9
    python3 benchmarks/guards_bench.py --guards none     # A/A: two identical servers, the noise

For each worker class, two Arbiter masters serve the same hello-world app with 2 workers: one
with no guard, one with `--max-worker-memory 1GB` (every worker's memory read from
/proc/PID/smaps_rollup once a second; the limit is never reached), `--max-workers 2` (the
autoscaler samples the busy ratio and the accept queue four times a second but, with the maximum
at -w, never scales) and `--request-timeout 30` (each worker class watches its requests in
flight; none runs that long).

Each round starts a fresh pair, pins both to CPU 0 (wrk runs on the other CPUs), loads both at
once with one wrk each (`-t1 -c32`), and stops them: the two servers share one CPU and whatever
else the machine does at that moment, so their requests/s ratio is the ratio of what a request
costs each. The report gives each median, on/off, the median of the rounds' own on/off (the
verdict: target >= 0.97), the CPU per request of each server's whole tree (master and workers),
and the master's CPU (where the memory guard and the autoscaler run). `--alternate` loads one
server after the other instead; `--no-pin` lets everything share every CPU.

Servers bind 127.0.0.1:0, run in their own sessions and are stopped (SIGTERM, then SIGKILL to the
group) on success, error or Ctrl-C; every wrk run has a timeout.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Server, ServerError, WrkResult, parse_wrk, start_server, stop_all, wait_workers_serving  # noqa: E402

APPS = Path(__file__).resolve().parent / "apps"
ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
WORKERS = 1  # per server: with two, how wrk's connections split between them moved a server by a few %
TARGET = 0.97
SERVER_CPUS = [0]
WRK_THREADS = 1
WRK_CONNECTIONS = 32
CLASSES = {  # name -> (app, worker options)
    "sync": ("wsgi_hello:app", ["-k", "sync"]),
    "gthread": ("wsgi_hello:app", ["-k", "gthread", "--threads", "4"]),
    "uvicorn": ("asgi_hello:app", ["-k", "uvicorn"]),
    "gevent": ("wsgi_hello:app", ["-k", "gevent"]),
}


def guard_options(which: str) -> list[str]:
    """The options that turn the guards in `which` on ("all", "memory", "autoscale", "deadline"
    or "none": the A/A run that shows how far two identical servers differ on this machine)."""
    options = {
        "memory": ["--max-worker-memory", "1GB", "--worker-memory-interval", "1"],
        "autoscale": ["--max-workers", str(WORKERS)],
        "deadline": ["--request-timeout", "30"],
    }
    if which == "all":
        return [*options["memory"], *options["autoscale"], *options["deadline"]]
    return options.get(which, [])


@dataclass
class Row:
    worker: str
    guards: bool
    label: str
    rounds: list[float] = field(default_factory=list)
    errors: int = 0
    master_cpu: float = 0.0  # CPU seconds the master used while wrk ran
    seconds: float = 0.0  # how long wrk ran, all rounds
    cpu_per_request: list[float] = field(default_factory=list)  # the workers' CPU us per request

    @property
    def median(self) -> float:
        return statistics.median(self.rounds) if self.rounds else 0.0


def launch(worker: str, options: list[str], label: str, control: str) -> Server:
    app, worker_options = CLASSES[worker]
    cmd = [PY, "-m", "arbiter", app, "-w", str(WORKERS), "-b", "127.0.0.1:0", "--control-socket", control,
           *worker_options, *options]
    env = {"PYTHONPATH": os.pathsep.join([str(APPS), str(ROOT)])}
    return start_server(label, cmd, env=env, cwd=str(APPS))


def pin(pid: int, cpus: list[int]) -> None:
    """Put a master and the workers it has forked on `cpus`; workers it forks later inherit them."""
    master = psutil.Process(pid)
    for proc in [master, *master.children(recursive=True)]:
        proc.cpu_affinity(cpus)


def tree_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) used so far by a master, and by its live workers."""
    master = psutil.Process(pid)
    workers = 0.0
    for child in master.children(recursive=True):
        try:
            workers += sum(child.cpu_times()[:2])
        except psutil.NoSuchProcess:
            pass
    return sum(master.cpu_times()[:2]), workers


def wrk_together(urls: list[str], duration: float) -> list[WrkResult]:
    """One wrk per URL, all at once; each bounded by a timeout and killed if we are interrupted."""
    cmd = ["wrk", f"-t{WRK_THREADS}", f"-c{WRK_CONNECTIONS}", f"-d{max(1, round(duration))}s"]
    procs = [subprocess.Popen([*cmd, url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL) for url in urls]
    try:
        return [parse_wrk(proc.communicate(timeout=duration + 15)[0].decode("utf-8", "replace")) for proc in procs]
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                proc.wait()


def measure(worker: str, args: argparse.Namespace, guards: list[str]) -> list[Row]:
    """Each round starts a fresh pair of masters (one process can be a few percent faster than
    its twin for the whole of its life: hash seeds, memory layout) and loads them, together
    (the default) or one after the other (`--alternate`), then stops them."""
    second = "guards on: " + " ".join(guards) if guards else "twin without guards, A-A"
    rows = [Row(worker, False, "guards off"), Row(worker, True, second)]
    for rnd in range(args.rounds):
        # Every other round the guarded server starts first and its wrk first: an A/A run showed
        # the one started second ~1.5% ahead, whichever it is.
        first = [0, 1] if rnd % 2 == 0 else [1, 0]
        servers: list[Server | None] = [None, None]
        sockets = tempfile.TemporaryDirectory(prefix="guards-bench-")
        try:
            for n in first:
                row = rows[n]
                control = os.path.join(sockets.name, f"control-{n}.sock")  # each master its own
                server = servers[n] = launch(worker, guards if row.guards else [], f"{worker} {row.label}", control)
                if args.pin:
                    pin(server.pid, SERVER_CPUS)
                if not wait_workers_serving(server, WORKERS):
                    print(f"  ! {worker} {row.label}: not all {WORKERS} workers answered", file=sys.stderr)
            live = [server for server in servers if server is not None]
            runs = [[i] for i in first] if args.alternate else [first]
            for run in runs:
                for i in run:
                    if live[i].proc.poll() is not None:
                        raise ServerError(f"{live[i].name} exited during the run:\n{live[i].log_tail()}")
                urls = [live[i].url for i in run]
                wrk_together(urls, args.warmup)
                before = [tree_cpu(live[i].pid) for i in run]
                started = time.monotonic()
                results = wrk_together(urls, args.duration)
                seconds = time.monotonic() - started
                after = [tree_cpu(live[i].pid) for i in run]
                for i, result, (m0, w0), (m1, w1) in zip(run, results, before, after, strict=True):
                    row = rows[i]
                    row.rounds.append(result.rps)
                    row.errors += result.errors
                    row.master_cpu += m1 - m0
                    row.seconds += seconds
                    if result.requests:
                        row.cpu_per_request.append(1e6 * (m1 - m0 + w1 - w0) / result.requests)
                    print(f"  {worker} round {rnd + 1}/{args.rounds}  {row.label[:10]:<10} {result.rps:>10,.0f} "
                          f"req/s  {row.cpu_per_request[-1] if row.cpu_per_request else 0:5.1f} us CPU/request"
                          f"  errors {result.errors}", file=sys.stderr)
            if servers[1] is not None and "Autoscale" in servers[1].log_text():
                raise ServerError("the autoscaler changed the pool with --max-workers equal to -w")
        finally:
            for server in servers:
                if server is not None:
                    server.stop()
            sockets.cleanup()
    return rows


def main(argv: list[str] | None = None) -> int:
    global WORKERS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of wrk per round")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--only", default=",".join(CLASSES), help="worker classes, comma separated")
    parser.add_argument("--workers", type=int, default=WORKERS, help="workers per server (-w, and --max-workers)")
    parser.add_argument("--quick", action="store_true", help="1 round x 2 s")
    parser.add_argument("--guards", default="all", choices=["all", "memory", "autoscale", "deadline", "none"],
                        help="which guards the second server has (none: an A/A run, to see the noise)")
    parser.add_argument("--alternate", action="store_true",
                        help="load one server at a time (the default loads both at once, sharing the CPUs)")
    parser.add_argument("--no-pin", dest="pin", action="store_false",
                        help="let servers and wrk share every CPU (the default pins them apart)")
    args = parser.parse_args(argv)
    WORKERS = args.workers
    args.pin = args.pin and len(os.sched_getaffinity(0)) >= 2
    if args.pin:
        # wrk (started by this process) gets every CPU but the first; the servers get the first.
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0) - set(SERVER_CPUS)))
    if args.quick:
        args.rounds, args.duration = 1, 2.0
    guards = guard_options(args.guards)
    results: list[tuple[Row, Row]] = []
    try:
        for worker in args.only.split(","):
            off, on = measure(worker, args, guards)
            results.append((off, on))
    except ServerError as exc:
        print(f"! {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        stop_all()
    print(f"\nGuards on: {' '.join(guards)}")
    placement = (f"servers pinned to CPU {SERVER_CPUS}, wrk to the others" if args.pin
                 else "servers and wrk share every CPU")
    print(f"{WORKERS} workers each, wrk -t{WRK_THREADS} -c{WRK_CONNECTIONS}, {args.rounds} rounds x "
          f"{args.duration:.0f} s, a fresh pair of masters each round, medians; {placement}; "
          f"load average {os.getloadavg()[0]:.2f}\n")
    print(f"| worker | guards off req/s | guards on req/s | on/off | paired on/off | target >= {TARGET} | errors "
          "| CPU per request, master + workers, off / on (us) | off/on | master CPU off / on (ms per s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for off, on in results:
        ratio = on.median / off.median if off.median else 0.0
        # Each round's two runs are back to back: the median of their ratios cancels most of the
        # drift of a shared machine, which moves both medians by more than the guards could.
        paired = statistics.median(b / a for a, b in zip(off.rounds, on.rounds, strict=True) if a) if off.rounds else 0
        # CPU per request is what the guards add to each request, whatever else the machine runs.
        cpu_off = statistics.median(off.cpu_per_request) if off.cpu_per_request else 0.0
        cpu_on = statistics.median(on.cpu_per_request) if on.cpu_per_request else 0.0
        print(f"| {off.worker} | {off.median:,.0f} | {on.median:,.0f} | {ratio:.3f} | {paired:.3f} | "
              f"{'ok' if paired >= TARGET else 'MISSED'} | {off.errors + on.errors} | "
              f"{cpu_off:.1f} / {cpu_on:.1f} | {cpu_off / cpu_on if cpu_on else 0:.3f} | "
              f"{1000 * off.master_cpu / off.seconds:.1f} / {1000 * on.master_cpu / on.seconds:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
