"""Memory: the whole server's footprint (FastAPI hello, Arbiter vs Gunicorn vs uvicorn), then
worker PSS with --preload on a big app (Arbiter vs Gunicorn). 4 workers each.

    python3 benchmarks/memory_bench.py                  # ~2 minutes
    python3 benchmarks/memory_bench.py --only footprint --rounds 5
    python3 benchmarks/memory_bench.py --only big-preload --warmup 20000 --records 200000

footprint: apps/fastapi_hello.py under the five servers of boot_bench.py (Arbiter and Gunicorn
with the uvicorn worker, each with and without --preload, and `uvicorn --workers 4`), and Arbiter
with --refork-after 1000 (no --preload; measured once its workers are all forks of the mold, and
warmed up again), one after the other, rounds alternating the order. Once 4 workers answer, `--warmup` GET / on 8 keep-alive
connections, then the total PSS of the server's whole process tree (master, workers, any helper
process) from /proc/PID/smaps_rollup. Target (issue 15): Arbiter <= 0.8x of Gunicorn and of
uvicorn, with and without --preload.

big-preload:

The app (reload_apps/fastapi_big.py) builds ~80 MB of Python objects at import, on top of
fastapi and pydantic. Each server imports it in the master (--preload) and forks 4 workers; after
a fixed number of warm-up requests every process's PSS is read from /proc/PID/smaps_rollup. PSS splits each
shared page between the processes sharing it, so it shows how much of the preloaded heap stays
shared. Then one SIGTTIN adds a worker, and the time until that worker answers is printed as
"boot time with preload". See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import re
import signal
import statistics
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import use_bytecode_cache, ServerError, start_server, stop_all  # noqa: E402
import _peers  # noqa: E402
from _peers import BENCH, gunicorn_uvicorn_worker, contenders, launch, listening_socket, pss_kb, tree, wait_pids_serving  # noqa: E402

APPS = Path(__file__).resolve().parent / "reload_apps"
ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
PID_IN_JSON = re.compile(rb'"pid"\s*:\s*(\d+)')
TARGET = 0.7


def smaps(pid: int) -> dict[str, int]:
    """kB figures from /proc/PID/smaps_rollup (Rss, Pss, Private_*, Shared_*, ...)."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1])
    out["Private"] = out.get("Private_Clean", 0) + out.get("Private_Dirty", 0)
    return out


def worker_pids(pid: int) -> list[int]:
    """Live direct children of the master, oldest first."""
    found = []
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(pid).children():
            with contextlib.suppress(psutil.Error):
                if child.status() != psutil.STATUS_ZOMBIE:
                    found.append((child.create_time(), child.pid))
    return [pid for _, pid in sorted(found)]


def probe(port: int, connections: int = 6, timeout: float = 2.0, path: str = "/") -> set[int]:
    """Send GET `path` on `connections` fresh connections at once; the pids that answered 200."""
    return _peers.probe(port, connections, timeout, path, PID_IN_JSON)


def wait_serving(port: int, pids: set[int], timeout: float, path: str = "/") -> bool:
    """True once every pid in `pids` has answered GET `path`."""
    seen: set[int] = set()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen |= probe(port, path=path)
        if pids <= seen:
            return True
        time.sleep(0.01)
    return False


def warm_up(port: int, total: int, connections: int) -> tuple[int, int, float]:
    """Exactly `total` GET / over `connections` keep-alive connections: (ok, errors, seconds).

    A fixed count rather than a fixed time, so that both servers' workers do the same lookups."""
    counts = {"ok": 0, "errors": 0}
    lock = threading.Lock()

    def client(n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        ok = errors = 0
        for _ in range(n):
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                ok, errors = (ok + 1, errors) if response.status == 200 else (ok, errors + 1)
            except (OSError, http.client.HTTPException):
                errors += 1
                conn.close()
        conn.close()
        with lock:
            counts["ok"] += ok
            counts["errors"] += errors

    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(total // connections + (i < total % connections),), daemon=True)
               for i in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return counts["ok"], counts["errors"], time.monotonic() - start


def measure(name: str, cmd: list[str], args) -> dict:
    env = {"PYTHONPATH": os.pathsep.join([str(APPS), str(ROOT)]), "PYTHONWARNINGS": "ignore::DeprecationWarning",
           "BIG_APP_RECORDS": str(args.records)}
    t0 = time.monotonic()
    server = start_server(name, cmd, env=env, cwd=str(APPS), timeout=90)
    try:
        deadline = time.monotonic() + 30
        while len(worker_pids(server.pid)) < args.workers and time.monotonic() < deadline:
            time.sleep(0.05)
        workers = worker_pids(server.pid)
        if not wait_serving(server.port, set(workers), 30):
            print(f"  ! {name}: not every worker answered within 30 s", flush=True)
        startup = time.monotonic() - t0
        time.sleep(args.settle)
        idle = [smaps(pid) for pid in workers]
        warm = warm_up(server.port, args.warmup, args.connections)
        time.sleep(args.settle)
        if set(worker_pids(server.pid)) != set(workers):
            print(f"  ! {name}: workers changed during warm-up", flush=True)
            workers = worker_pids(server.pid)
        mem = {"master": smaps(server.pid), "workers": [smaps(pid) for pid in workers]}
        # One full collection in every worker, as CPython eventually runs by itself.
        gc_ok = wait_serving(server.port, set(workers), 30, path="/gc")
        time.sleep(args.settle)
        after_gc = [smaps(pid) for pid in workers] if gc_ok else None

        # SIGTTIN: one more worker; time until it is forked, and until it answers a request.
        old = set(worker_pids(server.pid))
        t_sig = time.monotonic()
        os.kill(server.pid, signal.SIGTTIN)
        new_pid = forked = answered = None
        deadline = t_sig + args.cap
        while time.monotonic() < deadline:
            if new_pid is None:
                fresh = set(worker_pids(server.pid)) - old
                if fresh:
                    new_pid, forked = fresh.pop(), time.monotonic() - t_sig
            if new_pid is not None and new_pid in probe(server.port):
                answered = time.monotonic() - t_sig
                break
            time.sleep(0.005)
        new_mem = smaps(new_pid) if answered is not None else None
        if server.proc.poll() is not None:
            raise ServerError(f"{name} exited:\n{server.log_tail()}")
        return {"mem": mem, "idle": idle, "after_gc": after_gc, "warm": warm, "startup": startup,
                "forked": forked, "answered": answered,
                "new_mem": new_mem, "pids": workers}
    finally:
        server.stop()


FOOTPRINT_TARGET = 0.8
FOOTPRINT_REFORK = 1000  # requests one worker serves before it is made the mold
FOOTPRINT_PAIRS = [("arbiter --preload", "gunicorn --preload"), ("arbiter --preload", "uvicorn --workers"),
                   ("arbiter", "gunicorn"), ("arbiter", "uvicorn --workers"),
                   (f"arbiter --refork-after {FOOTPRINT_REFORK}", "gunicorn"),
                   (f"arbiter --refork-after {FOOTPRINT_REFORK}", "uvicorn --workers")]
MOLD_READY = "is the mold now"
REPLACED_BY_MOLD = "with one forked by the mold"


def footprint_contenders(workers: int, fd: int) -> dict[str, list[str]]:
    """boot_bench's five servers, and Arbiter without --preload but with reforking: the app is
    imported in a worker, and the workers are then forked again from a warm one (docs/reforking.md)."""
    servers = contenders("fastapi_hello:app", workers, fd)
    refork = ["--refork-after", str(FOOTPRINT_REFORK)]
    servers[f"arbiter --refork-after {FOOTPRINT_REFORK}"] = [*servers["arbiter"], *refork]
    return servers


def await_mold(server, workers: int, seconds: float = 60.0) -> bool:
    """Reforking: wait until a worker has become the mold (the warm-up promotes one) and every
    other worker has been replaced by a fork of it and has left: master, mold and `workers`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        log = server.log_text()
        if (MOLD_READY in log and log.count(REPLACED_BY_MOLD) >= workers - 1
                and len(tree(server.pid)) == workers + 2):
            return True
        time.sleep(0.1)
    return False


def footprint(args) -> int:
    """Total PSS of each server's process tree, FastAPI hello app, after a warm-up."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BENCH / "apps"), str(ROOT)]),
           "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    sock = listening_socket()
    names = list(footprint_contenders(args.workers, sock.fileno()))
    totals: dict[str, list[dict]] = {n: [] for n in names}
    status = 0
    print(f"footprint: apps/fastapi_hello.py, {args.workers} workers, warm-up {args.warmup} GET / on "
          f"{args.connections} keep-alive connections, {args.rounds} rounds; load {os.getloadavg()[0]:.2f}", flush=True)
    try:
        for rnd in range(args.rounds):
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            for name in order:
                server = launch(name, footprint_contenders(args.workers, sock.fileno())[name],
                                sock, env, str(BENCH / "apps"))
                try:
                    took, pids = wait_pids_serving(server, args.workers, 60)
                    if took is None:
                        print(f"  ! {name}: only {len(pids)} workers answered\n{server.log_tail()}", flush=True)
                        status = 1
                        continue
                    ok, errors, _ = warm_up(server.port, args.warmup, args.connections)
                    if "--refork-after" in name:
                        # Promotion, then each worker replaced by a fork of the mold: wait for the
                        # mold, let the replacements finish, and warm the new workers up the same.
                        if not await_mold(server, args.workers):
                            print(f"  ! {name}: no mold, or workers not all forked by it\n{server.log_tail()}",
                                  flush=True)
                            status = 1
                        more_ok, more_errors, _ = warm_up(server.port, args.warmup, args.connections)
                        ok, errors = ok + more_ok, errors + more_errors
                    time.sleep(args.settle)
                    procs = tree(server.pid)
                    sizes = {pid: pss_kb(pid) for pid in procs}
                finally:
                    server.stop()
                row = {"total": sum(sizes.values()), "master": sizes[server.pid], "procs": len(procs),
                       "workers": sorted(v for pid, v in sizes.items() if pid != server.pid), "errors": errors}
                totals[name].append(row)
                print(f"  round {rnd + 1} {name:<28} total {row['total'] / 1024:6.1f} MB in {row['procs']} processes "
                      f"(master {row['master'] / 1024:.1f}, others {' '.join(f'{w / 1024:.1f}' for w in row['workers'])})"
                      f"; warm-up {ok} ok, {errors} errors", flush=True)
    finally:
        stop_all()
        sock.close()
    med = {n: statistics.median(r["total"] for r in rows) for n, rows in totals.items() if rows}
    print(f"\ntotal PSS, master + workers (+ helpers), after warm-up (MB, median of rounds); load now "
          f"{os.getloadavg()[0]:.2f}")
    print(f"{'server':<28} {'total':>7} {'master':>7} {'procs':>5}  rounds")
    for name, rows in totals.items():
        if rows:
            master = statistics.median(r["master"] for r in rows)
            print(f"{name:<28} {med[name] / 1024:7.1f} {master / 1024:7.1f} {rows[0]['procs']:>5}  "
                  + " ".join(f"{r['total'] / 1024:.1f}" for r in rows))
    for a, b in FOOTPRINT_PAIRS:
        if a in med and b in med:
            ratio = med[a] / med[b]
            print(f"{a} / {b}: {ratio:.2f}x (target <= {FOOTPRINT_TARGET}x: "
                  f"{'met' if ratio <= FOOTPRINT_TARGET else 'MISSED'})")
    print(flush=True)
    return status


def mb(kb: float) -> str:
    return f"{kb / 1024:7.1f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="footprint,big-preload", help="comma-separated: footprint, big-preload")
    parser.add_argument("--rounds", type=int, default=3, help="footprint: rounds per server")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--records", type=int, default=130_000, help="records built at import (~80 MB)")
    parser.add_argument("--warmup", type=int, default=8000, help="GET / requests before measuring")
    parser.add_argument("--connections", type=int, default=8, help="keep-alive connections during warm-up")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds between warm-up and measuring")
    parser.add_argument("--cap", type=float, default=20.0, help="longest wait for the SIGTTIN worker")
    parser.add_argument("--max-seconds", type=int, default=900, help="hard bound on the whole run")
    parser.add_argument("--refork", action="store_true", help="also the reforking rows (issue 14)")
    parser.add_argument("--refork-only", action="store_true", help="only the reforking rows")
    parser.add_argument("--refork-workers", type=int, default=8)
    parser.add_argument("--refork-after", type=int, default=200)
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="leave PYTHONDONTWRITEBYTECODE as it is (a source checkout then recompiles Arbiter at every start)")
    args = parser.parse_args()
    bytecode = "" if args.no_bytecode_cache else use_bytecode_cache()
    if bytecode:
        print(bytecode)

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGALRM, on_signal)
    signal.alarm(args.max_seconds)
    if args.refork_only:
        try:
            return refork_report(args)
        except KeyboardInterrupt as exc:
            print(f"interrupted ({exc})", file=sys.stderr)
            return 130
        finally:
            signal.alarm(0)

    status = 0
    if "footprint" in args.only.split(","):
        try:
            status = footprint(args)
        except KeyboardInterrupt as exc:
            print(f"interrupted ({exc})", file=sys.stderr)
            return 130
    if "big-preload" not in args.only.split(","):
        return status
    w = str(args.workers)
    big = {
        "arbiter": [PY, "-m", "arbiter", "fastapi_big:app", "--preload", "-w", w, "-k", "uvicorn",
                    "-b", "127.0.0.1:0"],
        "gunicorn": [PY, "-m", "gunicorn", "fastapi_big:app", "--preload", "-w", w, "-k", gunicorn_uvicorn_worker(),
                     "-b", "127.0.0.1:0"],
    }
    print(f"memory_bench: reload_apps/fastapi_big.py ({args.records} records), --preload, {w} workers each; "
          f"warm-up {args.warmup} GET / on {args.connections} keep-alive connections; "
          f"loadavg {os.getloadavg()[0]:.2f}", flush=True)
    results = {}
    try:
        for name, cmd in big.items():
            print(f"  {name}: {' '.join(Path(c).name if c == PY else c for c in cmd)}", flush=True)
            try:
                results[name] = measure(name, cmd, args)
            except ServerError as exc:
                print(f"  ! {exc}", flush=True)
                status = 1
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc})", file=sys.stderr)
        return 130
    finally:
        signal.alarm(0)
        stop_all()

    for name, res in results.items():
        ok, errors, secs = res["warm"]
        print(f"{name}: warm-up {ok} ok, {errors} errors in {secs:.1f} s; "
              f"worker pids {res['pids']}")
    print(f"\n{'MB':<9} {'stage':<13} {'master PSS':>10} {'worker PSS':>30} {'median':>7} {'sum':>7} "
          f"{'USS median':>10} {'RSS median':>10}")
    stages = [("idle", "before load"), ("mem", "after warm-up"), ("after_gc", "+ gc.collect")]
    for name, res in results.items():
        for key, label in stages:
            workers = res[key]["workers"] if key == "mem" else res[key]
            if workers is None:
                print(f"{name:<9} {label:<13} (not every worker answered /gc)")
                continue
            pss = [m["Pss"] for m in workers]
            master = mb(res["mem"]["master"]["Pss"]) if key == "mem" else ""
            print(f"{name:<9} {label:<13} {master:>10} {' '.join(mb(p).strip() for p in pss):>30} "
                  f"{mb(statistics.median(pss))} {mb(sum(pss))} "
                  f"{mb(statistics.median(m['Private'] for m in workers)):>10} "
                  f"{mb(statistics.median(m['Rss'] for m in workers)):>10}")
    if "arbiter" in results and "gunicorn" in results:
        a, g = results["arbiter"], results["gunicorn"]
        med = {n: statistics.median(m["Pss"] for m in r["mem"]["workers"]) for n, r in results.items()}
        tot = {n: sum(m["Pss"] for m in r["mem"]["workers"]) + r["mem"]["master"]["Pss"] for n, r in results.items()}
        ratio = med["arbiter"] / med["gunicorn"]
        print(f"\nworker PSS median after warm-up, Arbiter/Gunicorn: {ratio:.2f}x (target <= {TARGET}x: "
              f"{'met' if ratio <= TARGET else 'MISSED'}); master + workers: "
              f"{tot['arbiter'] / 1024:.1f} MB vs {tot['gunicorn'] / 1024:.1f} MB "
              f"({tot['arbiter'] / tot['gunicorn']:.2f}x)")
        if a["after_gc"] and g["after_gc"]:
            gc_ratio = statistics.median(m["Pss"] for m in a["after_gc"]) / statistics.median(
                m["Pss"] for m in g["after_gc"])
            print(f"worker PSS median after one full gc.collect() per worker, Arbiter/Gunicorn: {gc_ratio:.2f}x")
    print()
    for name, res in results.items():
        if res["answered"] is None:
            print(f"{name}: boot time with preload: no answer from a new worker within {args.cap:.0f} s")
            continue
        new = res["new_mem"]
        print(f"{name}: boot time with preload (SIGTTIN -> new worker answers): {res['answered'] * 1000:.0f} ms "
              f"(forked after {res['forked'] * 1000:.0f} ms); new worker PSS {new['Pss'] / 1024:.1f} MB; "
              f"server start to all workers serving: {res['startup']:.1f} s")
    if args.refork:
        status |= refork_report(args)
    return status


# -- reforking (issue 14): separate functions, so other additions to this file merge cleanly -------

def refork_contenders(workers: int, refork_after: int) -> dict[str, tuple[str, list[str]]]:
    """name -> (app, command): each app under Arbiter --preload, Arbiter --preload --refork-after,
    and Gunicorn --preload, `workers` workers each."""
    w, every = str(workers), str(refork_after)
    out: dict[str, tuple[str, list[str]]] = {}
    for app, kind, gkind in (("lazy_state_app:app", "sync", "sync"),
                             ("fastapi_big:app", "uvicorn", gunicorn_uvicorn_worker())):
        label = app.split(":")[0]
        base = [PY, "-m", "arbiter", app, "--preload", "-w", w, "-k", kind, "-b", "127.0.0.1:0",
                "--control-socket", "none"]
        out[f"{label} arbiter --preload"] = (app, base)
        out[f"{label} arbiter --refork-after {every}"] = (app, [*base, "--refork-after", every])
        out[f"{label} gunicorn --preload"] = (app, [PY, "-m", "gunicorn", app, "--preload", "-w", w, "-k", gkind,
                                                    "-b", "127.0.0.1:0"])
    return out


def _titled(pid: int, prefix: str) -> list[int]:
    found = []
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(pid).children():
            with contextlib.suppress(psutil.Error):
                title = child.cmdline()[:1]
                if child.status() != psutil.STATUS_ZOMBIE and title and title[0].startswith(prefix):
                    found.append(child.pid)
    return found


def wait_reforked(server, workers: int, timeout: float) -> list[int] | None:
    """The mold and its `workers` workers once every serving worker was forked by that mold (as
    the master's log says)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        molds = _titled(server.pid, "arbiter: mold")
        serving = _titled(server.pid, "arbiter: worker")
        if len(molds) == 1 and len(serving) == workers:
            born = re.findall(rf"Booting worker with pid: (\d+) \(forked by the mold, pid {molds[0]}\)",
                              server.log_text())
            if set(serving) <= {int(p) for p in born}:
                return [molds[0], *serving]
        time.sleep(0.1)
    return None


def measure_refork(name: str, app: str, cmd: list[str], args) -> dict:
    """Warm up, (for reforking: wait until every worker comes from the mold, warm up again), then
    read PSS and USS of every process below the master."""
    env = {"PYTHONPATH": os.pathsep.join([str(APPS), str(ROOT)]), "PYTHONWARNINGS": "ignore::DeprecationWarning",
           "BIG_APP_RECORDS": str(args.records)}
    server = start_server(name, cmd, env=env, cwd=str(APPS), timeout=90)
    try:
        deadline = time.monotonic() + 30
        while len(worker_pids(server.pid)) < args.workers and time.monotonic() < deadline:
            time.sleep(0.05)
        wait_serving(server.port, set(worker_pids(server.pid)), 30)
        warm = warm_up(server.port, args.warmup, args.connections)
        if "--refork-after" in cmd:
            procs = wait_reforked(server, args.workers, 60)
            if procs is None:
                raise ServerError(f"{name}: the workers were not all forked by a mold within 60 s")
            wait_serving(server.port, set(procs[1:]), 30)
            warm = warm_up(server.port, args.warmup, args.connections)
        time.sleep(args.settle)
        procs = worker_pids(server.pid)
        return {"app": app, "warm": warm, "master": smaps(server.pid), "procs": [smaps(p) for p in procs]}
    finally:
        server.stop()


def refork_report(args) -> int:
    """Run the reforking rows and print total PSS and per-process USS, with ratios."""
    contenders = refork_contenders(args.refork_workers, args.refork_after)
    saved = args.workers
    args.workers = args.refork_workers
    print(f"\nreforking: {args.refork_workers} workers; warm-up {args.warmup} GET / before measuring "
          f"(and again once reforked); loadavg {os.getloadavg()[0]:.2f}", flush=True)
    results, status = {}, 0
    try:
        for name, (app, cmd) in contenders.items():
            try:
                results[name] = measure_refork(name, app, cmd, args)
            except ServerError as exc:
                print(f"  ! {exc}", flush=True)
                status = 1
    finally:
        args.workers = saved
        stop_all()
    print(f"\n{'server':<44} {'procs':>5} {'total PSS MB':>12} {'USS median MB':>13} {'master PSS':>10} {'errors':>6}")
    for name, res in results.items():
        pss = sum(m["Pss"] for m in res["procs"])
        uss = statistics.median(m["Private"] for m in res["procs"])
        print(f"{name:<44} {len(res['procs']):>5} {mb(pss):>12} {mb(uss):>13} {mb(res['master']['Pss']):>10} "
              f"{res['warm'][1]:>6}")
    for label in ("lazy_state_app", "fastapi_big"):
        rows = {n.split(" ", 1)[1]: r for n, r in results.items() if n.startswith(label + " ")}
        refork = rows.get(f"arbiter --refork-after {args.refork_after}")
        if refork is None:
            continue
        total = sum(m["Pss"] for m in refork["procs"])
        for other in ("arbiter --preload", "gunicorn --preload"):
            if other in rows:
                base = sum(m["Pss"] for m in rows[other]["procs"])
                print(f"{label}: total PSS with reforking (mold included) / {other}: {total / base:.2f}x")
    return status


if __name__ == "__main__":
    sys.exit(main())
