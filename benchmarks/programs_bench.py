"""Arbiter against supervisord, side by side in one run, supervising the very same programs.

    python3 benchmarks/programs_bench.py                 # 3 rounds, 500 MiB floods (~2-3 minutes)
    python3 benchmarks/programs_bench.py --quick         # 1 round, 100 MiB floods
    python3 benchmarks/programs_bench.py --only spawn-100 --json results.json

For each run the script writes ONE supervisord.conf in a fresh temp dir and starts either
`supervisord -n -c CONF` or `python3 -m arbiter -c CONF` on it. Scenarios:

  flood-chunks  programs_apps/chatty.py writes 500 MiB of 64-byte lines to its captured stdout in
                64 KiB writes, then exits. Log file 50MB x 10 backups (Supervisor's defaults).
  flood-lines   the same bytes, one 64-byte line per write(2) (8.2 M writes).
  spawn-100     one program, numprocs=100, `sleep 600`, startsecs=1.

Floods are timed from "go" (chatty waits on a FIFO until the master has spawned it, so neither
interpreter's start-up counts) until the master has logged `exited:` and the log files hold
their final byte count. Master CPU is the master process's alone, from "go" until just before it
is stopped: its on-CPU time from /proc/PID/task/*/schedstat (ns; the figure the targets judge)
and user+sys from psutil (10 ms ticks). The masters run this checkout's arbiter (PYTHONPATH).
spawn-100 is timed from Popen of the master, by tailing its log file (`spawned:`, `success:`
lines) every 5 ms, the same way for both: nothing polls the masters.
See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import platform
import signal
import statistics
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent  # this checkout: its arbiter is the one measured
APPS = ROOT / "benchmarks" / "programs_apps"
sys.path.insert(0, str(APPS))
from chatty import LINE as CHATTY_LINE  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import use_bytecode_cache, LIVE_MASTERS, BenchError, Interrupted, MasterProcess  # noqa: E402
PY = sys.executable
MiB = 1 << 20
LINE_LEN = len(CHATTY_LINE)  # 64
LOG_BACKUPS = 10
STARTSECS = 1
NUMPROCS = 100
PEERS = ("arbiter", "supervisord")

CONF_HEAD = """\
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
loglevel=info
"""

# startsecs=0 for the floods: a program that exits before startsecs is a failed start to
# Supervisor (BACKOFF, and it would be started again with another 500 MiB), whatever autorestart.
FLOOD_PROGRAM = """
[program:chatty]
command={py} {apps}/chatty.py {mode} {total} {tmp}/go.fifo
redirect_stderr=true
stdout_logfile={tmp}/chatty.log
stdout_logfile_maxbytes=50MB
stdout_logfile_backups={backups}
startsecs=0
autorestart=false
"""

SPAWN_PROGRAM = """
[program:sleeper]
command=sleep 600
process_name=%(program_name)s_%(process_num)02d
numprocs={numprocs}
startsecs={startsecs}
redirect_stderr=true
stdout_logfile={tmp}/%(program_name)s_%(process_num)02d.log
autorestart=false
"""


class Master(MasterProcess):
    """One supervisord or arbiter master on `conf`, its log followed as it grows."""

    def __init__(self, peer: str, conf: Path, tmp: Path) -> None:
        cmd = ([PY, "-m", "supervisor.supervisord", "-n", "-c", str(conf)] if peer == "supervisord"
               else [PY, "-m", "arbiter", "-c", str(conf)])
        super().__init__(cmd, tmp)
        self.log = LogTail(tmp / "master.log")

    def cpu(self) -> tuple[float, float, float, float]:
        """(user, system, on-CPU, reaped children's user+system) seconds: psutil's in 10 ms
        ticks, the kernel's own to the ns."""
        times = self.ps.cpu_times()
        return times.user, times.system, on_cpu(self.ps.pid), times.children_user + times.children_system


def on_cpu(pid: int) -> float:
    """Seconds the process's threads have run (/proc/PID/task/*/schedstat, in ns): at ~0.15 s
    a flood's figure in 10 ms ticks (/proc/PID/stat, psutil) is off by up to 7%."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/schedstat") as f:
            total += int(f.read().split()[0])
    return total / 1e9


class LogTail:
    """Counts Supervisor's event lines in a growing log file, reading only what is new."""

    def __init__(self, path: Path) -> None:
        self.path, self.pos, self.rest = path, 0, b""
        self.counts = {b"spawned: ": 0, b"success: ": 0, b"exited: ": 0}

    def poll(self) -> dict[bytes, int]:
        with contextlib.suppress(FileNotFoundError), open(self.path, "rb") as f:
            f.seek(self.pos)
            data = f.read()
            self.pos += len(data)
            whole, _, self.rest = (self.rest + data).rpartition(b"\n")  # count whole lines only
            for word in self.counts:
                self.counts[word] += whole.count(word)
        return self.counts


def write_conf(tmp: Path, program: str, **fields: object) -> Path:
    conf = tmp / "supervisord.conf"
    conf.write_text(CONF_HEAD.format(tmp=tmp) + program.format(tmp=tmp, **fields))
    return conf


def log_files(tmp: Path) -> list[Path]:
    """chatty.log and its rotated copies, oldest first (the order the bytes were written)."""
    files = [tmp / f"chatty.log.{n}" for n in range(LOG_BACKUPS, 0, -1)] + [tmp / "chatty.log"]
    return [f for f in files if f.exists()]


def logged_bytes(tmp: Path) -> int:
    """Their total size; while the master rotates them, a file may vanish between looks."""
    total = 0
    for path in log_files(tmp):
        with contextlib.suppress(FileNotFoundError):
            total += path.stat().st_size
    return total


def intact(tmp: Path, total: int) -> bool:
    """The log files, oldest first, are exactly chatty.py's stream: every byte, in line order."""
    pattern = CHATTY_LINE * (MiB // LINE_LEN + 1)
    offset = 0
    for path in log_files(tmp):
        with open(path, "rb") as f:
            while block := f.read(MiB):
                start = offset % LINE_LEN
                if block != pattern[start:start + len(block)]:
                    return False
                offset += len(block)
    return offset == total


def say_go(fifo: Path, master: Master, timeout: float) -> None:
    """Open the FIFO for writing once chatty waits on it: that unblocks chatty's open()."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            return
        except OSError as exc:  # ENXIO: no reader yet
            if exc.errno != errno.ENXIO:
                raise
        master.check_alive()
        if time.monotonic() > deadline:
            raise BenchError("chatty never opened its go FIFO")
        time.sleep(0.002)


def run_flood(peer: str, tmp: Path, mode: str, total: int) -> dict:
    os.mkfifo(tmp / "go.fifo")
    conf = write_conf(tmp, FLOOD_PROGRAM, py=PY, apps=APPS, mode=mode, total=total, backups=LOG_BACKUPS)
    timeout = 60 + total / MiB * 0.5  # far more than either needs: 2 MiB/s
    master = Master(peer, conf, tmp)
    try:
        say_go(tmp / "go.fifo", master, timeout=30)
        cpu0, reads0, t0 = master.cpu(), master.ps.io_counters().read_count, time.monotonic()
        t_exit = t_bytes = None
        last_size, changed_at = -1, t0
        while True:
            time.sleep(0.02)  # light polling: the writer and the master have a core each
            now = time.monotonic()
            if t_exit is None and master.log.poll()[b"exited: "]:
                t_exit = now
            size = logged_bytes(tmp)
            if size != last_size:
                last_size, changed_at = size, now
                t_bytes = now
            # Done once the exit is seen and the bytes are all there (or stopped coming for 2 s).
            if t_exit is not None and (size == total or now - changed_at > 2.0):
                break
            master.check_alive()
            if now - t0 > timeout:
                raise BenchError(f"flood not done after {timeout:.0f} s ({size} bytes logged, exit "
                                 f"{'seen' if t_exit else 'not seen'})")
        (user, system, oncpu, reaped), (user0, system0, oncpu0, reaped0) = master.cpu(), cpu0
        reads = master.ps.io_counters().read_count - reads0  # read(2)/readv(2) calls: wakeups, roughly
    finally:
        master.stop()
    wall = max(t_exit, t_bytes) - t0
    final = logged_bytes(tmp)  # counted again with the master stopped: nothing moves now
    return {"wall_s": wall, "exit_seen_s": t_exit - t0, "bytes": final, "intact": intact(tmp, total),
            "master_cpu_s": user - user0 + system - system0, "master_sys_s": system - system0,
            "master_oncpu_s": oncpu - oncpu0, "writer_cpu_s": reaped - reaped0,
            "mib_per_s": final / MiB / wall, "kib_per_read": final / 1024 / max(reads, 1)}


def run_spawn(peer: str, tmp: Path) -> dict:
    conf = write_conf(tmp, SPAWN_PROGRAM, numprocs=NUMPROCS, startsecs=STARTSECS)
    master = Master(peer, conf, tmp)
    try:
        t_first = t_spawned = t_running = None
        while t_running is None:
            time.sleep(0.005)
            now = time.monotonic() - master.started
            counts = master.log.poll()
            if t_first is None and counts[b"spawned: "]:
                t_first = now
            if t_spawned is None and counts[b"spawned: "] >= NUMPROCS:
                t_spawned = now
            if counts[b"success: "] >= NUMPROCS:
                t_running = now
            master.check_alive()
            if now > 30:
                raise BenchError(f"after 30 s: {counts[b'spawned: ']} spawned, {counts[b'success: ']} RUNNING")
        rss = master.ps.memory_info().rss
        master.remember_children()
        running = sum(1 for c in master.children.values() if _is_sleep(c))
        if running != NUMPROCS:
            raise BenchError(f"{running} sleep processes found, not {NUMPROCS}")
    finally:
        master.stop()
    return {"first_spawned_s": t_first, "spawned_s": t_spawned, "spawning_s": t_spawned - t_first,
            "running_s": t_running, "running_after_spawned_s": t_running - t_spawned, "master_rss_mib": rss / MiB}


def _is_sleep(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.name() == "sleep"
    except psutil.Error:
        return False


# ---- the table ----------------------------------------------------------------------------------

# (scenario, metric key, label, how to show, target: (kind, value) or None)
#   kind "ratio": arbiter/supervisord median at most value; "max": arbiter's median at most value;
#   "exact": every round of both peers equals value.
def rows(total: int) -> list[tuple]:
    out = []
    for flood, target in (("flood-chunks", 0.5), ("flood-lines", 1 / 3)):
        out += [(flood, "wall_s", "wall, go -> exit seen & all bytes (s)", "{:.2f}", None),
                (flood, "mib_per_s", "throughput (MiB/s)", "{:.0f}", None),
                (flood, "bytes", "bytes in log files (min)", "{:.0f}", ("exact", total)),
                (flood, "intact", "stream intact (rounds)", None, None),
                (flood, "master_oncpu_s", "master on-CPU, schedstat (s)", "{:.3f}", ("ratio", target)),
                (flood, "master_cpu_s", "master CPU user+sys, psutil (s)", "{:.2f}", None),
                (flood, "master_sys_s", "  of which sys (s)", "{:.2f}", None),
                (flood, "writer_cpu_s", "chatty's own CPU, once reaped (s)", "{:.2f}", None),
                (flood, "kib_per_read", "KiB per master read(2) (avg)", "{:.1f}", None)]
    out += [("spawn-100", "first_spawned_s", "start -> first spawned (s)", "{:.3f}", None),
            ("spawn-100", "spawned_s", f"start -> all {NUMPROCS} spawned (s)", "{:.3f}", ("ratio", 1 / 3)),
            ("spawn-100", "spawning_s", "first -> last spawned (s)", "{:.3f}", None),
            ("spawn-100", "running_s", f"start -> all {NUMPROCS} RUNNING (s)", "{:.3f}", ("max", STARTSECS + 0.3)),
            ("spawn-100", "master_rss_mib", "master RSS, all RUNNING (MiB)", "{:.1f}", None)]
    return out


def print_table(results: dict, total: int, scenarios: list[str]) -> list[str]:
    """Print medians, ratio and target verdicts; return the targets missed (or not judged)."""
    missed = []
    head = f"{'scenario':<13} {'metric':<38} {'arbiter':>10} {'supervisord':>12} {'ratio':>7}  target"
    print(head + "\n" + "-" * (len(head) + 14))
    for scenario, key, label, fmt, target in rows(total):
        if scenario not in scenarios:
            continue
        runs = {p: [r[key] for r in results.get(scenario, {}).get(p, [])] for p in PEERS}
        if not all(runs.values()):
            missed += [f"{scenario} {label}: not judged, a peer has no result"] if target else []
            continue
        if key == "intact":
            cells = [f"{sum(v)}/{len(v)}" for v in runs.values()]
            ok = all(all(v) for v in runs.values())
            verdict = "all intact: ok" if ok else "CORRUPTED OR LOST"
            print(f"{scenario:<13} {label:<38} {cells[0]:>10} {cells[1]:>12} {'':>7}  {verdict}")
            missed += [] if ok else [f"{scenario}: log stream not intact"]
            continue
        agg = min if key == "bytes" else statistics.median
        a, s = agg(runs["arbiter"]), agg(runs["supervisord"])
        ratio = f"{a / s:.2f}" if s else "-"
        verdict = ""
        if target:
            kind, value = target
            ok = {"ratio": s and a / s <= value, "max": a <= value,
                  "exact": all(x == value for v in runs.values() for x in v)}[kind]
            want = {"ratio": f"<= {value:.2f}x", "max": f"<= {value:.2f} s", "exact": f"== {value}"}[kind]
            verdict = f"{want}: {'ok' if ok else 'MISSED'}"
            missed += [] if ok else [f"{scenario} {label}: arbiter {a:g}, supervisord {s:g} (want {want})"]
        print(f"{scenario:<13} {label:<38} {fmt.format(a):>10} {fmt.format(s):>12} {ratio:>7}  {verdict}")
    return missed


def print_rounds(results: dict) -> None:
    print("\nevery round (arbiter | supervisord):")
    for scenario, key in (("flood-chunks", "master_oncpu_s"), ("flood-chunks", "wall_s"),
                          ("flood-lines", "master_oncpu_s"), ("flood-lines", "wall_s"),
                          ("spawn-100", "spawned_s"), ("spawn-100", "running_s")):
        if scenario in results:
            fmt = "{:.3f}" if key == "master_oncpu_s" else "{:.2f}"
            cells = [" ".join(fmt.format(r[key]) for r in results[scenario].get(p, [])) for p in PEERS]
            print(f"  {scenario:<13} {key:<14} {cells[0]:<28} | {cells[1]}")


# ---- main ---------------------------------------------------------------------------------------

def one_run(scenario: str, peer: str, total: int) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"programs-bench-{peer}-") as tmpdir:
        tmp = Path(tmpdir)
        if scenario == "spawn-100":
            return run_spawn(peer, tmp)
        return run_flood(peer, tmp, scenario.split("-")[1], total)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=None, help="rounds per peer (default 3; 1 with --quick)")
    parser.add_argument("--mib", type=int, default=None, help="MiB per flood (default 500; 100 with --quick)")
    parser.add_argument("--quick", action="store_true", help="1 round, 100 MiB floods")
    parser.add_argument("--only", default="flood-chunks,flood-lines,spawn-100", help="comma-separated scenarios")
    parser.add_argument("--json", metavar="FILE", help="also write every round's numbers here")
    parser.add_argument("--no-bytecode-cache", action="store_true",
                        help="leave PYTHONDONTWRITEBYTECODE as it is (a source checkout then recompiles Arbiter at every start)")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    total = (args.mib or (100 if args.quick else 500)) * MiB
    scenarios = [s for s in args.only.split(",") if s]
    if unknown := set(scenarios) - {"flood-chunks", "flood-lines", "spawn-100"}:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")

    def interrupt(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGALRM, interrupt)
    signal.alarm(int(120 + rounds * len(scenarios) * 2 * (60 + total / MiB * 0.5)))  # the whole run's limit

    # The masters run this checkout's arbiter, not whichever one is installed (a worktree's own).
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    bytecode = "" if args.no_bytecode_cache else use_bytecode_cache()
    versions = {"arbiter": metadata.version("arbiter"), "supervisor": metadata.version("supervisor"),
                "python": platform.python_version()}
    print(f"arbiter {versions['arbiter']} vs supervisord {versions['supervisor']}, Python {versions['python']}, "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}; {rounds} round(s), floods of {total // MiB} MiB; "
          f"{bytecode or 'PYTHONDONTWRITEBYTECODE left as is'}")
    results: dict[str, dict[str, list[dict]]] = {}
    status = 0
    try:
        for rnd in range(rounds):
            order = PEERS if rnd % 2 == 0 else PEERS[::-1]  # who goes first alternates
            for scenario in scenarios:
                for peer in order:
                    print(f"  round {rnd + 1}/{rounds} {scenario:<13} {peer:<12}", end="", flush=True)
                    try:
                        result = one_run(scenario, peer, total)
                    except BenchError as exc:
                        print(f"FAILED: {exc}")
                        status = 1
                        continue
                    results.setdefault(scenario, {}).setdefault(peer, []).append(result)
                    print("  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))
    except (KeyboardInterrupt, Interrupted) as exc:
        print(f"\ninterrupted ({str(exc) or 'Ctrl-C'}); results so far:")
        status = 130
    finally:
        signal.alarm(0)
        for master in list(LIVE_MASTERS):  # only if something unexpected skipped a run's own finally
            master.stop()
    print(f"\nmedians over rounds, load now {os.getloadavg()[0]:.2f}\n")
    missed = print_table(results, total, scenarios)
    print_rounds(results)
    print("\ntargets missed:\n  " + "\n  ".join(missed) if missed else "\nevery target met")
    if args.json:
        Path(args.json).write_text(json.dumps({"versions": versions, "rounds": rounds, "flood_bytes": total,
                                               "results": results, "targets_missed": missed}, indent=1))
    return status


if __name__ == "__main__":
    sys.exit(main())
