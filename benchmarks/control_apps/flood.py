"""A program that floods its stdout on the benchmark's word, for benchmarks/control_bench.py.

    python3 flood.py

It starts idle and never exits. Signals switch what it does, so the master sees one program,
always RUNNING, through every condition of the benchmark:

  SIGUSR1   write 64 KiB chunks to fd 1 flat out (1,024 lines of 64 bytes per write(2))
  SIGUSR2   write one 64-byte line per write(2), flat out
  SIGWINCH  stop writing (idle)

Raw `os.write` on prebuilt buffers, no Python I/O layer (as programs_apps/chatty.py). A blocking
pipe write interrupted by a signal is retried by Python after the handler ran (PEP 475).
"""

import os
import signal
import time

LINE = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-\n"  # 64 bytes
CHUNK = LINE * 1024  # 64 KiB
MODES = {signal.SIGUSR1: "chunks", signal.SIGUSR2: "lines", signal.SIGWINCH: "idle"}
mode = "idle"


def switch(signum, frame):
    global mode
    mode = MODES[signum]


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def main() -> None:
    for signum in MODES:
        signal.signal(signum, switch)
    w, line = os.write, LINE
    while True:
        if mode == "chunks":
            for _ in range(64):
                write_all(1, CHUNK)
        elif mode == "lines":
            for _ in range(128):  # a blocking pipe write of <= PIPE_BUF bytes is never partial
                w(1, line); w(1, line); w(1, line); w(1, line)  # noqa: E702
                w(1, line); w(1, line); w(1, line); w(1, line)  # noqa: E702
        else:
            time.sleep(0.02)


if __name__ == "__main__":
    main()
