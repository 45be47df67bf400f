"""What moving a flood from a pipe into a log file costs the reader at the least, and where.

    python3 benchmarks/capture_floor.py                  # 5 rounds, 500 MiB, ~30 s
    python3 benchmarks/capture_floor.py --rounds 9 --mib 200

No master here: a writer process does what `programs_apps/chatty.py chunks` does (64 KiB writes of
64-byte lines into a 512 KiB pipe, as the master makes them), and this process reads the pipe in
the tightest loop Python allows (epoll, then system calls until EAGAIN, nothing else) into a fresh
file in a temp dir, in one of two ways:

  splice      splice(2) pipe -> file: the kernel's copy into the page cache, nothing more
              (Arbiter's bulk path, without its checks)
  read+write  64 KiB reads into one buffer, each written with write(2) (what supervisord does,
              without its Python)

and with the writer on the reader's CPU (`same`), on the other one (`apart`), or where the
scheduler puts it (`free`, as the masters in programs_bench.py run). The figure is the reader's
on-CPU time from /proc/self/schedstat (nanoseconds, not 10 ms ticks). A master can only add to
these figures; programs_bench.py's masters are measured the same way ("on-CPU" row). See
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import select
import statistics
import sys
import tempfile
import time

MiB = 1 << 20
PIPE_SIZE = 512 << 10  # what arbiter.programs.process.make_pipe asks for
WRITE = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-\n" * 1024  # chatty's 64 KiB
METHODS = ("splice", "read+write")
PLACEMENTS = ("same", "apart", "free")


def on_cpu() -> float:
    """Seconds this (single-threaded) process has run, to the nanosecond."""
    with open("/proc/self/schedstat") as f:
        return int(f.read().split()[0]) / 1e9


def one_flood(method: str, placement: str, total: int, folder: str) -> tuple[float, int]:
    """(the reader's on-CPU seconds, its system calls that moved data) for one flood."""
    cpus = sorted(os.sched_getaffinity(0))
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    go_read, go_write = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the writer
        try:
            os.close(read_end)
            if placement != "free":
                os.sched_setaffinity(0, {cpus[0] if placement == "same" else cpus[1]})
            os.read(go_read, 1)
            for _ in range(total // len(WRITE)):
                view = memoryview(WRITE)
                while view:
                    view = view[os.write(write_end, view):]
        finally:
            os._exit(0)
    os.close(write_end)
    before = os.sched_getaffinity(0)
    if placement != "free":
        os.sched_setaffinity(0, {cpus[0]})
    path = os.path.join(folder, "floor.log")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_APPEND if method == "read+write" else 0)
    fd = os.open(path, flags, 0o600)
    os.set_blocking(read_end, False)
    poller = select.epoll()
    poller.register(read_end, select.EPOLLIN)
    buffer = bytearray(64 << 10)
    view = memoryview(buffer)
    calls = offset = 0
    start = on_cpu()
    os.write(go_write, b"x")
    done = False
    while not done:
        poller.poll()
        while True:
            try:
                if method == "splice":
                    moved = os.splice(read_end, fd, 1 << 20, offset_dst=offset, flags=os.SPLICE_F_NONBLOCK)
                    offset += moved
                else:
                    moved = os.readv(read_end, [buffer])
                    if moved:
                        os.write(fd, view[:moved])
            except BlockingIOError:
                break
            calls += 1
            if moved == 0:
                done = True
                break
    used = on_cpu() - start
    os.waitpid(pid, 0)
    size = os.fstat(fd).st_size
    for each in (fd, read_end, go_read, go_write):
        os.close(each)
    poller.close()
    os.unlink(path)
    os.sched_setaffinity(0, before)
    if size != total:
        raise RuntimeError(f"{method}: {size} bytes in the file, not {total}")
    return used, calls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--mib", type=int, default=500)
    parser.add_argument("--dir", default=None, help="where the file goes (default: the temp dir)")
    args = parser.parse_args()
    if not hasattr(os, "splice") or len(os.sched_getaffinity(0)) < 2:
        print("needs Linux (splice, schedstat) and at least 2 CPUs", file=sys.stderr)
        return 1
    total = args.mib * MiB
    print(f"{args.mib} MiB in 64 KiB writes into a {PIPE_SIZE >> 10} KiB pipe, {args.rounds} rounds, "
          f"load {os.getloadavg()[0]:.2f}")
    results: dict[tuple[str, str], list[tuple[float, int]]] = {}
    with tempfile.TemporaryDirectory(prefix="capture-floor-", dir=args.dir) as folder:
        for _ in range(args.rounds):
            for placement in PLACEMENTS:
                for method in METHODS:
                    results.setdefault((method, placement), []).append(one_flood(method, placement, total, folder))
                    time.sleep(0.05)
    print(f"\n{'reader':<11} {'writer':<6} {'on-CPU (s), median':>19} {'KiB per call':>13}  every round")
    for (method, placement), runs in results.items():
        cpu = statistics.median(r[0] for r in runs)
        per_call = total / 1024 / statistics.median(r[1] for r in runs)
        print(f"{method:<11} {placement:<6} {cpu:>19.3f} {per_call:>13.0f}  {' '.join(f'{r[0]:.3f}' for r in runs)}")
    print(f"\nload now {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
